"""The outbox job: send every mail that is due, then file a copy of each sent one in the
mailbox's Sent folder so staff see what went out (CONTRACTS.md "Mail and mailbox").

The outbox layer renders and sends; this module only wires it to the configuration, the clock
and the mailbox (the Sent copy goes through the mailbox layer). A failed copy is retried with
backoff and, after the last try, shown in `status`; it never resends the mail and never fails
the run. An SMTP server that cannot be reached fails the job (`run --once` exits 1) after the
rows were given their next attempt. With `file:` delivery there is no Sent copy.

A copy APPENDed just before a kill, whose commit was lost, is APPENDed again by the next run:
a second copy in Sent, never a second mail to the applicant.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailbot import clock
from mailbot.app.notices import queue_pending
from mailbot.cases import workflow
from mailbot.cases.models import Case
from mailbot.config import Config
from mailbot.faults import crash_point
from mailbot.mailbox.base import MailboxError, MailSource
from mailbot.outbox.models import SENT, OutboxMessage
from mailbot.outbox.notice import find_font
from mailbot.outbox.prepare import Preparer
from mailbot.outbox.sender import (
    SendReport,
    copies_due,
    mark_copy_done,
    mark_copy_failed,
    send_due,
)
from mailbot.outbox.transport import Transport, transport_from_url

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)

COPY_BATCH = 50
RESULT_STATES = ("issued", "revoked")  # the case states, and the templates of their result mail
SEEN = "\\Seen"


class SmtpUnreachable(RuntimeError):
    """The SMTP server could not be reached; the mail waits for its next attempt."""


@dataclass
class OutboxRun:
    sending: SendReport = field(default_factory=SendReport)
    copies: int = 0
    copy_failures: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)


def outbox_job(daemon: Daemon) -> str:
    # No Sent copies while the mail job cannot reach the mailbox: they wait for the next run.
    source = None if daemon.mailbox_down else daemon.source
    run = run_outbox(daemon.cfg, daemon.sessions, source=source,
                     should_stop=lambda: daemon.stopping)
    if run.sending.unreachable:
        raise SmtpUnreachable(run.sending.unreachable)
    r = run.sending
    line = (f"sent {r.sent}, to retry {r.retried}, failed {r.failed}, "
            f"not sent (loop safety) {r.suppressed}")
    if run.copy_failures:
        line += f"; Sent copy failed: {run.copy_failures[0]}"
    return line


def file_delivery(cfg: Config) -> bool:
    return cfg.smtp.url.strip().lower().startswith("file:")


def make_transport(cfg: Config) -> Transport:
    return transport_from_url(cfg.smtp.url.strip(),
                              password=os.environ.get(cfg.smtp.password_env),
                              timeout=cfg.outbox.timeout_seconds, base_dir=cfg.var_dir)


def check_outbox(cfg: Config) -> None:
    """At start-up, not at the first certificate: every template compiles (TemplateError
    names the file and line) and the notice's CJK font is there (NoticeFontError says how to
    install it)."""
    make_preparer(cfg).renderer.check()  # compiled into the preparer the outbox job uses
    find_font(_notice_font(cfg))


def _notice_font(cfg: Config) -> str:
    font = cfg.outbox.notice_font.strip()
    return str(cfg.resolve(font)) if font else ""


def make_preparer(cfg: Config) -> Preparer:
    """The preparer for this configuration, made once (compiling the templates and sentences
    takes tens of ms) and made again when a file in the templates folder changed."""
    return _preparer(str(cfg.templates_dir), _notice_font(cfg), cfg.mailbox.our_address,
                     _folder_stamp(Path(cfg.templates_dir)))


@lru_cache(maxsize=4)
def _preparer(templates_dir: str, font: str, marker: str,
              _stamp: tuple[tuple[str, int], ...]) -> Preparer:
    return Preparer(templates_dir, notice_font=font, loop_marker=marker)


def _folder_stamp(folder: Path) -> tuple[tuple[str, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()
                            if p.is_file()))
    except OSError:
        return ()


def run_outbox(cfg: Config, sessions: sessionmaker[Session], *, source: MailSource | None,
               transport: Transport | None = None, preparer: Preparer | None = None,
               should_stop: object = None) -> OutboxRun:
    """Queue what is pending, send what is due, copy what was sent (module docstring)."""
    run = OutboxRun()
    with sessions() as s:
        queue_pending(s, cfg)  # notices recorded by a session without the hook, if any
        s.commit()
    copy_wanted = cfg.outbox.sent_copy and not file_delivery(cfg)
    run.sending = send_due(
        sessions, transport or make_transport(cfg), prepare=preparer or make_preparer(cfg),
        now=clock.now, max_attempts=cfg.outbox.max_attempts,
        backoff_seconds=cfg.outbox.backoff_seconds,
        backoff_max_seconds=cfg.outbox.backoff_max_seconds, copy_wanted=copy_wanted,
        should_stop=should_stop)
    run.delivered = mark_delivered(sessions)
    if copy_wanted and source is not None:
        _copy_sent(cfg, sessions, source, run)
    return run


def mark_delivered(sessions: sessionmaker[Session]) -> list[str]:
    """Issued and revoked cases whose result mail the server accepted move to delivered
    (where they wait for the call to the handler). Safe to repeat after a crash."""
    done: list[str] = []
    with sessions() as s:
        cases = s.scalars(select(Case).join(OutboxMessage, OutboxMessage.case_id == Case.id)
                          .where(Case.state.in_(RESULT_STATES),
                                 OutboxMessage.template.in_(RESULT_STATES),
                                 OutboxMessage.state == SENT).distinct()).all()
        for case in cases:
            workflow.transition(s, case, "delivered", actor=workflow.SYSTEM,
                                via=workflow.SYSTEM,
                                reason="result mail accepted by the SMTP server")
            done.append(case.ref)
            crash_point("delivered_before_commit")
        s.commit()
    for ref in done:
        crash_point("delivered_after_commit")
        log.info("case %s delivered", ref)
    return done


def _copy_sent(cfg: Config, sessions: sessionmaker[Session], source: MailSource,
               run: OutboxRun) -> None:
    folder: str | None = None
    with sessions() as s:
        for row in copies_due(s, clock.now(), COPY_BATCH):
            try:
                folder = folder or source.sent_folder()
                source.append(folder, row.raw or b"", flags=[SEEN])
            except (MailboxError, OSError) as exc:
                gave_up = mark_copy_failed(s, row, str(exc), clock.now(),
                                           max_attempts=cfg.outbox.max_attempts,
                                           backoff_seconds=cfg.outbox.backoff_seconds,
                                           backoff_max_seconds=cfg.outbox.backoff_max_seconds)
                s.commit()
                run.copy_failures.append(f"{row.message_id}: {exc}")
                if gave_up:
                    log.warning("no Sent copy of %s after %d tries: %s", row.message_id,
                                row.copy_attempts, exc)
                break  # the mailbox refuses now: the rest wait for the next run
            crash_point("copy_after_append")
            mark_copy_done(s, row)
            s.commit()
            crash_point("copy_after_commit")
            run.copies += 1
