"""`mailbot run [--once]`, `reprocess` and `status`, end to end (Maildir default and Dovecot)."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailbot.cases.models import Case
from mailbot.cli import main
from mailbot.db import make_engine, session_factory
from mailbot.intake import archive
from mailbot.intake.models import MESSAGE_PARKED, MESSAGE_PROCESSED, Message
from tests.support.intake import make_config, make_mail, write_config
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def _count(db_url: str, model, *where) -> int:
    eng = make_engine(db_url)
    try:
        with session_factory(eng)() as s:
            return int(s.scalar(select(func.count()).select_from(model).where(*where)))
    finally:
        eng.dispose()


def _config_args(tmp_path: Path, db_url: str) -> tuple[list[str], str]:
    """The embedded defaults (no config at all) on SQLite; only the database URL otherwise."""
    if db_url.startswith("sqlite"):
        return [], f"sqlite:///{tmp_path / 'var' / 'mailbot.sqlite3'}"
    cfg = tmp_path / "mailbot.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n', encoding="utf-8")
    return ["--config", str(cfg)], db_url


def test_run_once_on_the_embedded_maildir_default(tmp_path, db_url, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    args, url = _config_args(tmp_path, db_url)
    assert main([*args, "init"]) == 0
    md = mailbox.Maildir(str(tmp_path / "var" / "mail"), create=False)
    for i in range(3):
        md.add(make_mail(subject=f"厦门默认配置{i}有限公司+数字证书申办"))
    md.add(make_mail(subject="Automatic reply: 休假", extra_headers="Auto-Submitted: auto-replied\r\n"))
    assert main([*args, "run", "--once"]) == 0
    out = capsys.readouterr().out
    assert "new 4" in out and "cases opened 3" in out
    assert _count(url, Case) == 3
    assert _count(url, Message, Message.status == MESSAGE_PROCESSED) == 4
    assert list(md.keys()) == [] and len(md.get_folder("已处理").keys()) == 4
    assert main([*args, "run", "--once"]) == 0  # nothing new: nothing changes
    assert _count(url, Case) == 3

    assert main([*args, "status"]) == 0
    text = capsys.readouterr().out
    for heading in ("Messages / 邮件", "Cases / 案件", "Mailboxes / 邮箱", "Parked messages / 搁置"):
        assert heading in text
    assert main([*args, "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["messages"] == {"processed": 4}
    assert sum(st["cases"].values()) == 3 and st["parked"] == []
    assert st["mailboxes"][0]["source"].startswith("maildir:")
    assert st["mailboxes"][0]["last_poll"] is not None


def test_run_once_with_imap(tmp_path, db_url, dovecot_user, capsys) -> None:
    cfg = make_config(tmp_path, db_url, dovecot_user.url)
    config = write_config(tmp_path / "mailbot.toml", cfg)
    for i in range(2):
        dovecot_user.append(make_mail(subject=f"厦门IMAP{i}有限公司+数字证书申办"))
    assert main(["--config", str(config), "run", "--once"]) == 0
    assert "cases opened 2" in capsys.readouterr().out
    assert dovecot_user.uids("INBOX") == [] and len(dovecot_user.uids("已处理")) == 2
    assert _count(db_url, Case) == 2


def test_run_once_fails_when_the_mailbox_cannot_be_read(tmp_path, db_url, dovecot_user) -> None:
    cfg = make_config(tmp_path, db_url, dovecot_user.url.replace("%3F@", "wrong@"))
    config = write_config(tmp_path / "mailbot.toml", cfg)
    assert main(["--config", str(config), "run", "--once"]) == 1


def test_parked_message_status_and_reprocess(tmp_path, db_url, engine, capsys) -> None:
    (tmp_path / "var").mkdir()
    md = mailbox.Maildir(str(tmp_path / "var" / "mail"), create=True)
    cfg = make_config(tmp_path, db_url, "maildir:mail", max_attempts=2)
    config = write_config(tmp_path / "mailbot.toml", cfg)
    base = ["--config", str(config)]
    assert main([*base, "reprocess"]) == 2  # nothing named
    md.add(make_mail(message_id="<broken@example.cn>", subject="厦门损坏有限公司+数字证书申办"))
    md.add(make_mail(subject="厦门完好有限公司+数字证书申办"))
    # Archive intake only, then damage the archived copy before processing reads it.
    from mailbot.app.daemon import Daemon
    from mailbot.intake.ingest import ingest

    d = Daemon(cfg)
    d.source.open()
    ingest(cfg, d.sessions, d.source)
    d.close()
    d.engine.dispose()
    with session_factory(make_engine(db_url))() as s:
        bad = s.scalars(select(Message).where(Message.message_id == "<broken@example.cn>")).one()
    path = archive.archive_path(cfg.archive_dir, bad.sha256)
    good = path.read_bytes()
    path.write_bytes(b"garbage")
    assert main([*base, "run", "--once"]) == 0  # a parked message is no failure of the run
    assert main([*base, "run", "--once"]) == 0
    assert _count(db_url, Message, Message.status == MESSAGE_PARKED) == 1
    assert _count(db_url, Case) == 1
    capsys.readouterr()
    assert main([*base, "status"]) == 0
    text = capsys.readouterr().out
    assert f"#{bad.id} <broken@example.cn>" in text and "corrupt" in text
    assert len(md.get_folder(cfg.intake.failed_folder).keys()) == 1

    assert main([*base, "reprocess", "<nobody@example.cn>"]) == 1
    path.write_bytes(good)
    assert main([*base, "reprocess", "--all-parked"]) == 0
    assert "processed 1" in capsys.readouterr().out
    assert _count(db_url, Message, Message.status == MESSAGE_PARKED) == 0
    assert _count(db_url, Case) == 2


def test_start_up_heap_is_kept_out_of_collections_until_close(tmp_path, db_url) -> None:
    """run_once freezes what start-up built (no full collection walks it during the run) and
    gives it back to the collector when the daemon closes."""
    import gc

    from mailbot.app.daemon import Daemon

    (tmp_path / "var").mkdir()
    cfg = make_config(tmp_path, db_url, "maildir:mail")
    frozen_during: list[int] = []
    d = Daemon(cfg)
    d.cycle = lambda **_kw: frozen_during.append(gc.get_freeze_count())  # type: ignore[method-assign]
    d.run_once()
    assert frozen_during and frozen_during[0] > 0
    assert gc.get_freeze_count() == 0


_wait_for = wait_for


@pytest.mark.timeout(180)
def test_daemon_picks_up_mail_by_idle_and_stops_on_sigterm(tmp_path, db_url, engine,
                                                           dovecot_user) -> None:
    cfg = make_config(tmp_path, db_url, dovecot_user.url, sweep_seconds=3600)
    config = write_config(tmp_path / "mailbot.toml", cfg)
    dovecot_user.append(make_mail(subject="厦门守护一有限公司+数字证书申办"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "mailbot.cli", "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert _wait_for(lambda: _count(db_url, Case) == 1), proc.stderr
        # Now waiting in IDLE: a new message is noticed without a poll interval.
        dovecot_user.append(make_mail(subject="厦门守护二有限公司+数字证书申办"))
        assert _wait_for(lambda: _count(db_url, Case) == 2)
        # The server drops the connection: the daemon reconnects and carries on.
        dovecot_user.kick()
        dovecot_user.append(make_mail(subject="厦门守护三有限公司+数字证书申办"))
        assert _wait_for(lambda: _count(db_url, Case) == 3)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err
    assert dovecot_user.uids("INBOX") == [] and len(dovecot_user.uids("已处理")) == 3


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connections are refused


@pytest.mark.timeout(60)
def test_ctrl_c_while_the_server_is_unreachable_stops_at_once(tmp_path, db_url) -> None:
    """Reconnect backoff is a wait like IDLE: SIGINT ends it within a second, no traceback."""
    cfg = make_config(tmp_path, db_url, f"imap://u:p@127.0.0.1:{_closed_port()}/INBOX")
    config = write_config(tmp_path / "mailbot.toml", cfg)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "mailbot.cli", "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        err_lines: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until it is retrying the connection
            err_lines.append(line)
            if "connect failed" in line:
                break
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped cleanly" in err
    assert took < 5  # behaviour, not speed: the 1, 2, 4 … s backoff was not slept through


@pytest.mark.timeout(60)
def test_run_once_against_an_unreachable_server_is_one_line_and_exit_1(tmp_path, db_url) -> None:
    cfg = make_config(tmp_path, db_url, f"imap://u:p@127.0.0.1:{_closed_port()}/INBOX")
    config = write_config(tmp_path / "mailbot.toml", cfg)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "--config", str(config),
                           "--log-level", "ERROR", "run", "--once"],
                          capture_output=True, env=env, text=True, timeout=50)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no connection after" in proc.stderr
