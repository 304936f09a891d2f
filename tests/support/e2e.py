"""The whole daemon as an operator runs it: `python3 -m mailbot.cli --config FILE run [--once]`
as a subprocess, on the session's Dovecot and an aiosmtpd, configured through the URL keys.

`Desk` is one such installation in a test's folder: `mailbot.toml` beside `var/` (the
defaults), naming only `[mailbox] url`, `[smtp] url` and `[database] url` (plus whatever a
test adds with `extra`). It runs the daemon (`run_once`, or `start` for the long-running
`run`), plays staff in the mailbox with another IMAP client (`flag`), and reads the database
(`cases`, `outbox_rows`, ...) and the Sent folder (`sent_copies`).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailbot.cases.models import Case
from mailbot.db import make_engine, session_factory
from mailbot.faults import CRASH_ENV
from mailbot.intake.models import Message
from mailbot.outbox.models import OutboxMessage
from tests.support.dovecot import DovecotUser
from tests.support.smtp import SmtpServer
from tests.support.zygote import Zygote

REPO = Path(__file__).resolve().parents[2]
PROCESSED = "已处理"
SENT_FOLDER = "已发送"  # the test server's \Sent special-use folder
FLAGGED = "\\Flagged"
KILLED = -signal.SIGKILL  # the return code of a process that reached its crash point


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def child_env(crash_at: str | None = None) -> dict[str, str]:
    """The environment of a mailbot child: this checkout first on the path, no stray
    MAILBOT_CONFIG, and the fault switch only when asked for."""
    env = {k: v for k, v in os.environ.items()
           if k not in (CRASH_ENV, "MAILBOT_CONFIG") and not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if crash_at:
        env[CRASH_ENV] = crash_at
    return env


@dataclass
class Outcome:
    """One finished `mailbot run --once`."""

    code: int
    out: str
    err: str

    @property
    def crashed(self) -> bool:
        return self.code == KILLED


class Desk:
    """An installation: config, var/, the Dovecot user, the SMTP server and the database."""

    def __init__(self, folder: Path, db_url: str, user: DovecotUser, smtp: SmtpServer, *,
                 extra: str = "") -> None:
        self.folder, self.db_url, self.user, self.smtp = folder, db_url, user, smtp
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mailbot.toml"
        self.config.write_text(
            f"[mailbox]\nurl = {toml_string(user.url)}\n"
            f"[smtp]\nurl = {toml_string(smtp.url())}\n"
            f"[database]\nurl = {toml_string(db_url)}\n" + extra, encoding="utf-8")
        self.var = folder / "var"
        self._engine: Engine | None = None

    # -- the daemon ------------------------------------------------------------------------
    def env(self, crash_at: str | None = None) -> dict[str, str]:
        return child_env(crash_at)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mailbot.cli", "--config", str(self.config), *args]

    def run_once(self, crash_at: str | None = None, *, timeout: float = 120,
                 zygote: Zygote | None = None) -> Outcome:
        """`mailbot run --once` in a process of its own, with the fault switch set to
        `crash_at` if given: `python3 -m mailbot.cli`, or a child forked by `zygote` (the
        same, without the second of imports; tests/support/zygote.py)."""
        if zygote is not None:
            code, out, err = zygote.run(["--config", str(self.config), "run", "--once"],
                                        cwd=self.folder, env=self.env(crash_at))
            return Outcome(code, out, err)
        res = subprocess.run(self.command("run", "--once"), capture_output=True, text=True,
                             timeout=timeout, cwd=self.folder, env=self.env(crash_at))
        return Outcome(res.returncode, res.stdout, res.stderr)

    def run_here(self) -> Outcome:
        """`mailbot run --once` in this process (`mailbot.cli.main`, as the console script
        calls it): a restart of the daemon without a new interpreter; the tests' frozen clock,
        if set, holds."""
        from mailbot.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(self.config), "run", "--once"])
        return Outcome(code, out.getvalue(), err.getvalue())

    def cli(self, *args: str, timeout: float = 60) -> Outcome:
        res = subprocess.run(self.command(*args), capture_output=True, text=True,
                             timeout=timeout, cwd=self.folder, env=self.env())
        return Outcome(res.returncode, res.stdout, res.stderr)

    @contextlib.contextmanager
    def running(self) -> Iterator[subprocess.Popen[str]]:
        """The long-running `mailbot run`; stopped with SIGTERM at the end (exit 0 expected:
        `daemon.returncode` after the block)."""
        log = open(self.folder / "daemon.log", "w", encoding="utf-8")  # noqa: SIM115
        proc = subprocess.Popen(self.command("run"), stdout=log, stderr=subprocess.STDOUT,
                                text=True, cwd=self.folder, env=self.env())
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()

    def daemon_log(self) -> str:
        path = self.folder / "daemon.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    # -- staff in the mailbox --------------------------------------------------------------
    def flag(self, message_id: str, folder: str = PROCESSED) -> None:
        """Set the red flag on the mail with this Message-ID, as staff's client would."""
        c = self.user.client()
        try:
            c.select_folder(folder)
            uids = c.search(["HEADER", "Message-ID", message_id])
            assert uids, f"{message_id} is not in {folder}"
            c.add_flags(uids, [FLAGGED])
        finally:
            self.user._drop(c)

    def sent_copies(self) -> list[str]:
        """The Message-ID of every copy in the Sent folder (a copy APPENDed twice: twice)."""
        c = self.user.client()
        try:
            if not c.folder_exists(SENT_FOLDER):
                return []
            c.select_folder(SENT_FOLDER, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
        finally:
            self.user._drop(c)
        out = []
        for item in data.values():
            raw = next(v for k, v in item.items() if k.startswith(b"BODY"))
            out.append(raw.split(b":", 1)[1].strip().decode())
        return out

    # -- the database ----------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return self._engine

    def session(self) -> Session:
        return session_factory(self.engine)()

    def cases(self) -> dict[str, Case]:
        """Case ref -> case (detached)."""
        with self.session() as s:
            rows = list(s.scalars(select(Case).order_by(Case.id)))
            s.expunge_all()
        return {c.ref: c for c in rows}

    def case_of(self, message_id: str) -> Case | None:
        with self.session() as s:
            case_id = s.scalar(select(Message.case_id).where(Message.message_id == message_id))
            case = s.get(Case, case_id) if case_id is not None else None
            if case is not None:
                s.expunge(case)
            return case

    def messages(self) -> list[Message]:
        with self.session() as s:
            rows = list(s.scalars(select(Message).order_by(Message.id)))
            s.expunge_all()
        return rows

    def outbox_rows(self) -> list[OutboxMessage]:
        with self.session() as s:
            rows = list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
            s.expunge_all()
        return rows

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def wait_until(check: Callable[[], Any], *, timeout: float = 60, what: str = "",
               alive: subprocess.Popen[str] | None = None, log: Callable[[], str] | None = None
               ) -> Any:
    """Poll `check` until it returns something true (and return that); fail after `timeout`
    seconds, or at once when the `alive` process has ended."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the daemon ended ({alive.returncode}) waiting for {what}\n"
                                 + (log() if log else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + (log() if log else ""))
        time.sleep(0.1)
