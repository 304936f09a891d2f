"""One `mailbot run` per database and mailbox (app/instance.py), and the start-up line.

Daemons run as subprocesses on the configured database (SQLite, and PostgreSQL when
MAILBOT_TEST_DATABASE_URL is set); their stderr goes to a file the test reads, so a chatty
daemon never blocks on a full pipe.
"""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from sqlalchemy import make_url, text

from mailbot.app.instance import (
    InstanceLocked,
    advisory_key,
    hold_instance_lock,
    lock_path,
    mailbox_identity,
    startup_line,
)
from mailbot.cli.errors import describe
from mailbot.config import Config
from mailbot.db import make_engine
from mailbot.mailbox.url import source_from_config
from tests.support.intake import make_config, make_mail, write_config
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
pytestmark = pytest.mark.timeout(180)


_wait_for = wait_for


def _with_password(db_url: str) -> str:
    """PostgreSQL: a password in the URL (trust auth ignores it) for the no-secrets checks."""
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql" or url.password:
        return db_url
    return url.set(password="s3cret-db-pw").render_as_string(hide_password=False)


def _config(tmp_path: Path, db_url: str, mailbox_url: str = "maildir:mail",
            name: str = "mailbot.toml") -> tuple[Config, Path]:
    cfg = make_config(tmp_path, db_url, mailbox_url)
    return cfg, write_config(tmp_path / name, cfg)


def _mailbot(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mailbot.cli", "--config", str(config), *args]


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_mailbot(config, "run", *args), capture_output=True, text=True,
                          env=ENV, timeout=120)


class Daemon:
    """A `mailbot run` subprocess whose stderr is a file."""

    def __init__(self, config: Path, err: Path) -> None:
        self.err = err
        with err.open("w") as fh:
            self.proc = subprocess.Popen(_mailbot(config, "run"), stdout=subprocess.DEVNULL,
                                         stderr=fh, env=ENV, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_serving(self) -> str:
        """The start-up line, printed once the lock is held and the daemon is made."""
        assert _wait_for(lambda: "mailbot: serving" in self.stderr()
                         or self.proc.poll() is not None), self.stderr()
        assert self.proc.poll() is None, self.stderr()
        return next(line for line in self.stderr().splitlines()
                    if line.startswith("mailbot: serving"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def _refusal(proc: subprocess.CompletedProcess[str]) -> str:
    """A refused start: exit 1 and one line, nothing made or started before it."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "serving" not in proc.stderr
    return lines[0]


# -- two daemons ----------------------------------------------------------------------------
def test_a_second_run_on_the_same_mailbox_and_database_is_refused(tmp_path, db_url,
                                                                  daemons) -> None:
    url = _with_password(db_url)
    cfg, config = _config(tmp_path, url)
    first = Daemon(config, tmp_path / "first.err")
    daemons.append(first)
    line = first.wait_serving()
    assert mailbox_identity(cfg) in line

    for once in ([], ["--once"]):  # `run --once` is refused as well
        refused = _refusal(_run(config, *once))
        assert f"another mailbot run (pid {first.pid}) already serves" in refused
        assert mailbox_identity(cfg) in refused and "database" in refused
        assert "s3cret-db-pw" not in refused
    assert first.proc.poll() is None  # the first one is not disturbed

    # A clean stop releases the lock: the next run starts at once.
    assert first.stop() == 0, first.stderr()
    assert "stopped cleanly" in first.stderr()
    again = _run(config, "--once")
    assert again.returncode == 0, again.stderr


def test_another_mailbox_on_the_same_database_may_run(tmp_path, db_url, daemons) -> None:
    _cfg, config = _config(tmp_path, db_url)
    first = Daemon(config, tmp_path / "first.err")
    daemons.append(first)
    first.wait_serving()
    other_cfg, other = _config(tmp_path, db_url, "maildir:other", name="other.toml")
    mailbox.Maildir(str(tmp_path / "var" / "other"), create=True).add(
        make_mail(subject="厦门另一邮箱有限公司+数字证书申办"))
    proc = _run(other, "--once")
    assert proc.returncode == 0, proc.stderr
    assert "cases opened 1" in proc.stdout
    assert first.proc.poll() is None
    # ... and a second daemon on that other mailbox would be refused in turn.
    second = Daemon(other, tmp_path / "second.err")
    daemons.append(second)
    second.wait_serving()
    assert mailbox_identity(other_cfg) in _refusal(_run(other, "--once"))


def test_sigkill_takes_the_workers_along_and_frees_the_mailbox(tmp_path, db_url,
                                                               daemons) -> None:
    cfg, config = _config(tmp_path, db_url)
    (tmp_path / "var").mkdir()
    inbox = mailbox.Maildir(str(tmp_path / "var" / "mail"), create=True)
    inbox.add(make_mail(subject="厦门强杀有限公司+数字证书申办"))  # so the parse workers start
    first = Daemon(config, tmp_path / "first.err")
    daemons.append(first)
    first.wait_serving()

    def processed() -> bool:
        try:
            return inbox.get_folder(cfg.intake.processed_folder).keys() != []
        except (mailbox.NoSuchMailboxError, FileNotFoundError):
            return False  # not made yet, or its cur/ and new/ are being made

    assert _wait_for(processed), first.stderr()
    daemon = psutil.Process(first.pid)
    assert _wait_for(lambda: len(daemon.children(recursive=True)) >= 2), first.stderr()
    workers = daemon.children(recursive=True)

    first.proc.kill()  # SIGKILL: no handler, no clean-up in the daemon
    first.proc.wait(timeout=30)
    _gone, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == []  # PR_SET_PDEATHSIG: the kernel took them along
    again = _run(config, "--once")
    assert again.returncode == 0, again.stderr


# A process that takes the lock and forks a child that lives on (no worker_init here, so no
# death signal): the child must not keep the lock once its parent is killed.
HOLDER = """
import multiprocessing, sys, time
from mailbot.app import instance
from mailbot.cli.main import load_config
from mailbot.db import make_engine

cfg = load_config(sys.argv[1])
lock = instance.hold_instance_lock(cfg, make_engine(cfg.database_url))
if sys.argv[2:] == ["--child-keeps-it"]:
    instance._held.clear()  # as if the fork hook were missing: the child shares the session
child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(300,))
child.start()
print(child.pid, flush=True)
time.sleep(300)
"""


def _holder(tmp_path: Path, config: Path, *args: str) -> tuple[subprocess.Popen[bytes],
                                                                psutil.Process]:
    """HOLDER running, and its child."""
    out, err = tmp_path / "holder.out", tmp_path / "holder.err"
    with out.open("w") as o, err.open("w") as e:  # files, not pipes the child would share
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(config), *args],
                                  stdout=o, stderr=e, env=ENV)
    try:
        assert _wait_for(lambda: out.read_text().endswith("\n") or holder.poll() is not None)
        assert holder.poll() is None, err.read_text()
        return holder, psutil.Process(int(out.read_text()))
    except BaseException:
        holder.kill()
        holder.wait(timeout=30)
        raise


def test_a_forked_child_never_holds_the_lock(tmp_path, db_url) -> None:
    cfg, config = _config(tmp_path, db_url)
    holder, child = _holder(tmp_path, config)
    try:
        assert f"(pid {holder.pid})" in _refusal(_run(config, "--once"))
        holder.kill()
        holder.wait(timeout=30)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE

        engine = make_engine(cfg.database_url)

        def free() -> bool:
            try:
                hold_instance_lock(cfg, engine).release()
                return True
            except InstanceLocked:
                return False  # PostgreSQL: the server ends the dead client's session at once

        try:
            assert _wait_for(free, limit=30), "the forked child kept the lock"
        finally:
            engine.dispose()
        assert child.is_running()  # it was the child's copy that was let go, not the child
    finally:
        if child.is_running():
            child.kill()
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_a_new_run_waits_for_the_server_to_end_a_killed_holders_session(
        tmp_path, db_url, monkeypatch) -> None:
    """PostgreSQL ends a killed client's session a moment later: a restart at once waits
    for that (the holder's pid is gone on this host) instead of refusing."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: the kernel drops a dead process's flock at once")
    from mailbot.app import instance

    cfg, config = _config(tmp_path, db_url)
    holder, child = _holder(tmp_path, config, "--child-keeps-it")  # the session outlives it
    engine = make_engine(cfg.database_url)
    try:
        holder.kill()
        holder.wait(timeout=30)
        monkeypatch.setattr(instance, "DEAD_HOLDER_WAIT", 0.5)
        with pytest.raises(InstanceLocked) as refused:  # the session lingers too long
            hold_instance_lock(cfg, engine)
        assert refused.value.pid == holder.pid
        monkeypatch.setattr(instance, "DEAD_HOLDER_WAIT", 60.0)
        threading.Timer(1.0, child.kill).start()  # the session ends while the new run waits
        hold_instance_lock(cfg, engine).release()
    finally:
        engine.dispose()
        if child.is_running():
            child.kill()
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


# -- the lock in-process ----------------------------------------------------------------------
def test_the_lock_refuses_a_second_holder_until_released(tmp_path, db_url) -> None:
    cfg = make_config(tmp_path, _with_password(db_url), "maildir:mail")
    engine = make_engine(cfg.database_url)
    try:
        with hold_instance_lock(cfg, engine) as held:
            assert held.still_held()
            with pytest.raises(InstanceLocked) as refused:
                hold_instance_lock(cfg, engine)
            assert refused.value.pid == os.getpid()
            code, line = describe(refused.value)
            assert code == 1 and "\n" not in line
            assert mailbox_identity(cfg) in line and "s3cret-db-pw" not in line
            # Another mailbox on the same database is another lock.
            other = make_config(tmp_path, cfg.database.url, "maildir:other")
            hold_instance_lock(other, engine).release()
        assert not held.still_held()
        again = hold_instance_lock(cfg, engine)  # released: free again
        if again.path is not None:  # SQLite: a removed lock file is a lost lock
            again.path.unlink()
            assert not again.still_held()
        again.release()
    finally:
        engine.dispose()


def test_lock_names_follow_the_mailbox_and_the_database(tmp_path) -> None:
    cfg = make_config(tmp_path, f"sqlite:///{tmp_path / 'db' / 'a.sqlite3'}", "maildir:mail")
    path = lock_path(cfg, cfg.database_url, mailbox_identity(cfg))
    assert path.parent == tmp_path / "db" and path.name.startswith("a.sqlite3.run-")
    other = make_config(tmp_path, cfg.database.url, "maildir:other")
    assert lock_path(other, other.database_url, mailbox_identity(other)) != path
    # A host name is no different in capitals; each schema is a mailbot database of its own.
    upper = make_config(tmp_path, cfg.database.url, "imap://u@IMAP.example.cn/INBOX")
    lower = make_config(tmp_path, cfg.database.url, "imap://u@imap.example.cn/INBOX")
    assert mailbox_identity(upper) == mailbox_identity(lower)
    assert advisory_key("a", "x") != advisory_key("b", "x")


def test_a_lost_postgresql_session_is_a_lost_lock(tmp_path, db_url) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a session the server ends")
    cfg = make_config(tmp_path, db_url, "maildir:mail")
    engine = make_engine(db_url)
    try:
        held = hold_instance_lock(cfg, engine)
        with engine.connect() as conn:  # the server restarted, or an admin ended the session
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE :n"), {"n": f"mailbot run pid {os.getpid()} %"})
        assert _wait_for(lambda: not held.still_held(), limit=30)
        held.release()  # no error for a session already gone
        hold_instance_lock(cfg, engine).release()
    finally:
        engine.dispose()


# -- the start-up line ------------------------------------------------------------------------
def test_the_startup_line_names_all_and_no_secret(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MAILBOT_DATABASE_PASSWORD", "env-db-secret")
    cfg = make_config(tmp_path, "postgresql+psycopg://mailbot:{password}@db/mailbot",
                      "imaps://xmport%40189.cn:imap-secret@imap.189.cn:993/INBOX")
    line = startup_line(cfg, source_from_config(cfg))
    assert line.startswith("mailbot: serving imaps://xmport%40189.cn@imap.189.cn:993/INBOX,")
    assert "database postgresql+psycopg://mailbot:***@db/mailbot," in line
    assert f"signer soft ({tmp_path / 'var' / 'ca' / 'ca.key.pem'})" in line
    assert "IDLE" in line and "polling every 60 s" in line
    for secret in ("imap-secret", "env-db-secret"):
        assert secret not in line

    cfg.database.url = "postgresql+psycopg://mailbot@db/mailbot?password=query-secret"
    cfg.ca.signer, cfg.ca.sdf_library = "sdf", "/opt/hsm/libsdf.so"
    line = startup_line(cfg, source_from_config(cfg, use_idle=False))
    assert "query-secret" not in line and "new mail by polling every 60 s" in line
    assert "signer sdf (/opt/hsm/libsdf.so, key 1)" in line

    cfg = make_config(tmp_path, f"sqlite:///{tmp_path / 'm.sqlite3'}", "maildir:mail")
    line = startup_line(cfg, source_from_config(cfg))
    assert f"serving maildir:{tmp_path / 'var' / 'mail'}, database sqlite:///" in line
    assert "new mail by watching the Maildir every" in line


def test_an_imap_daemon_says_what_it_serves_without_the_password(tmp_path, db_url, daemons,
                                                                 dovecot_user) -> None:
    cfg, config = _config(tmp_path, _with_password(db_url), dovecot_user.url)
    first = Daemon(config, tmp_path / "first.err")
    daemons.append(first)
    line = first.wait_serving()
    assert f"127.0.0.1:{dovecot_user.port}/INBOX" in line and "IDLE" in line
    refused = _refusal(_run(config, "--once"))
    assert f"127.0.0.1:{dovecot_user.port}/INBOX" in refused
    assert first.stop() == 0
    everything = first.stderr() + refused
    for secret in (dovecot_user.password, quote(dovecot_user.password, safe=""), "s3cret-db-pw"):
        assert secret not in everything
