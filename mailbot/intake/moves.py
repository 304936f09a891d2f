"""Intake's only changes to the mailbox: processed mail out of the inbox, parked mail aside.

Moving is a convenience for staff, never a condition for processing: a message archived and
committed is processed whether or not it could be moved. A failed move is retried on later
cycles (the message is still listed in the inbox) and a lasting failure is logged once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailbot.clock import now
from mailbot.config import Config
from mailbot.intake.models import MESSAGE_PARKED, Message
from mailbot.mailbox.base import INBOX, ConnectionLost, MailboxError, MailSource, MessageRef

log = logging.getLogger(__name__)

# Server timings some servers append to an answer, e.g. Dovecot's "(0.001 + 0.000 secs)".
_TIMING = re.compile(r"\s*\([^()]*\bsecs?\)")


class MoveFailures:
    """The mailbox's current move failure, kept across cycles so it is logged once."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.since: datetime | None = None
        self._key: str | None = None

    def failed(self, what: str, exc: BaseException) -> None:
        text = f"{what}: {type(exc).__name__}: {exc}"[:1000]
        # The same failure again, whatever counts or server timings its text carries.
        key = re.sub(r"[\d.]+", "", _TIMING.sub("", text))
        if key != self._key:
            log.warning("%s; the messages are processed all the same and the move is tried"
                        " again on later cycles / 移动邮件失败, 邮件照常处理", text)
            self._key, self.since = key, now()
        self.error = text

    def succeeded(self) -> None:
        if self.error is not None:
            log.info("moving mail works again (failing since %s)", self.since)
        self.error = self.since = self._key = None


def move_processed(cfg: Config, source: MailSource, refs: Sequence[MessageRef],
                   failures: MoveFailures) -> bool:
    """Processed mail to the processed folder (or the processed keyword where the server
    cannot move); False when the mailbox refused, True when done. A lost connection is
    raised: the cycle cannot go on without the server."""
    try:
        if source.supports_move():
            source.move(refs, cfg.intake.processed_folder)
        else:
            source.add_keyword(refs, cfg.intake.processed_keyword)
    except ConnectionLost:
        raise
    except MailboxError as exc:  # a refused CREATE, a full quota, a NO answer
        failures.failed(f"moving mail to {cfg.intake.processed_folder}", exc)
        return False
    failures.succeeded()
    return True


def park_in_mailbox(cfg: Config, sessions: sessionmaker[Session], source: MailSource,
                    row_ids: Iterable[int],
                    failures: MoveFailures | None = None) -> tuple[int, list[int]]:
    """Move parked messages to the failed folder, from wherever intake left them.

    Not yet moved: still in the inbox under its UID (or Maildir key). Moved to the processed
    folder: a Maildir message keeps its key; an IMAP message got a new UID there, so it is
    found again by its Message-ID (and size). One without a Message-ID stays where it is:
    the database row is what counts. Returns (how many moved, rows to try again later: the
    mailbox refused them this time; a lasting refusal is logged once through `failures`).
    A lost connection is raised: the rows are offered again next cycle.
    """
    failures = failures or MoveFailures()
    moved, again = 0, []
    if not source.supports_move():
        return 0, []  # keyword mode: nothing can be moved; the row is parked all the same
    with sessions() as s:
        rows = list(s.scalars(select(Message).where(Message.id.in_(list(row_ids)),
                                                    Message.status == MESSAGE_PARKED,
                                                    Message.source == source.identity)))
        for row in rows:
            try:
                refs = _where_is(cfg, source, row)
                if not refs:
                    log.warning("parked row %s: not found in the mailbox; left where it is",
                                row.id)
                    continue
                source.move(refs, cfg.intake.failed_folder)
            except ConnectionLost:
                s.commit()  # the ones moved so far
                raise
            except MailboxError as exc:  # the mailbox copy is a convenience for staff
                failures.failed(f"moving parked mail to {cfg.intake.failed_folder}", exc)
                again.append(row.id)
                continue
            row.moved_at = now()  # out of the inbox: intake must not move it again
            moved += 1
            failures.succeeded()
        s.commit()
    return moved, again


def _where_is(cfg: Config, source: MailSource, row: Message) -> list[MessageRef]:
    if row.moved_at is None:
        return [MessageRef(uid=row.uid or 0, key=row.source_key or str(row.uid or ""),
                           size=row.size, folder=INBOX)]
    if not source.keyed_by_uid:  # a Maildir message keeps its key when moved
        return [MessageRef(uid=0, key=row.source_key or "", size=row.size,
                           folder=cfg.intake.processed_folder)]
    if row.message_id:
        return [r for r in source.find_message_id(cfg.intake.processed_folder, row.message_id)
                if r.size == row.size]
    return []
