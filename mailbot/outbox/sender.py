"""Send the queued mail: render once, send, record; and the bookkeeping of the Sent copies.

For each due `queued` row, oldest first, `send_due`:
1. claims it: one committed UPDATE moves its next attempt a lease ahead (CLAIM_SECONDS), so
   a second sender running at the same time (`run --once` beside the daemon) skips it, and a
   sender killed in mid-send leaves it due again only when the lease ends;
2. renders it, if it has no `raw` yet, with `prepare` and commits the bytes before the first
   attempt, so every retry sends the identical message (same Message-ID, same MIME
   boundaries). A `prepare` that raises fails that row (a template bug must not block the
   queue) and is reported; one that raises `Suppress` suppresses it;
3. sends it and commits the outcome at once: accepted -> `sent` (never sent again);
   temporary failure -> attempts + 1 and a retry after an exponential backoff counted on the
   clock it is given (nothing sleeps), `failed` after max_attempts; permanent -> `failed`.
   When the server cannot be reached at all the batch stops there (the other rows would
   fare no better) and the report says so.

The one window no SMTP client can close: the server has taken the message (it answered, or
was about to answer, 250 to the final dot) and the process dies, or the database is lost,
before the `sent` commit; or the connection drops after the final dot before the 250
arrives. The row is still `queued`, so after its lease it is sent again: at most one
duplicate, with the same bytes and Message-ID (clients that keep Message-IDs show it once),
and only there. Every other crash point loses nothing and repeats nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailbot.faults import crash_point
from mailbot.outbox.models import (
    COPY_DONE,
    COPY_FAILED,
    COPY_NONE,
    COPY_PENDING,
    FAILED,
    QUEUED,
    SENT,
    SUPPRESSED,
    OutboxMessage,
)
from mailbot.outbox.queue import address_problem, normalise_address
from mailbot.outbox.transport import (
    PermanentFailure,
    ServerUnreachable,
    TemporaryFailure,
    Transport,
)

log = logging.getLogger(__name__)

# How long a claimed row is left alone: longer than any one SMTP conversation can take.
CLAIM_SECONDS = 600


class Suppress(Exception):
    """Raised by `prepare` when the row must not be sent after all; the message is the reason."""


@dataclass
class SendReport:
    sent: int = 0
    retried: int = 0  # temporary failures that will be tried again
    failed: int = 0  # failed for good in this run (permanent, too many attempts, prepare)
    suppressed: int = 0
    errors: list[str] = field(default_factory=list)  # one line per failed row
    unreachable: str | None = None  # the server could not be reached: the batch stopped
    stopped: bool = False  # should_stop asked to stop before the queue was done

    @property
    def attempted(self) -> int:
        return self.sent + self.retried + self.failed


def backoff(attempts: int, base_seconds: float, max_seconds: float) -> timedelta:
    """The wait after the `attempts`-th failure: base, doubled each time, capped."""
    return timedelta(seconds=min(base_seconds * 2 ** min(max(attempts - 1, 0), 32), max_seconds))


def send_due(sessions: sessionmaker[Session], transport: Transport, *,
             prepare: Callable[[Session, OutboxMessage], bytes], now: Callable[[], datetime],
             max_attempts: int, backoff_seconds: float, backoff_max_seconds: float,
             copy_wanted: bool, should_stop: Callable[[], bool] | None = None,
             claim_seconds: float = CLAIM_SECONDS) -> SendReport:
    """Send every row due now (see the module docstring); closes the transport's batch.

    Database errors propagate (the caller reports the job as failed); delivery errors never do.
    """
    report = SendReport()
    with sessions() as session:
        due = list(session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.state == QUEUED, OutboxMessage.next_attempt_at <= now())
            .order_by(OutboxMessage.created_at, OutboxMessage.id)))
    try:
        for row_id in due:  # a snapshot: rows queued meanwhile wait for the next run
            if should_stop is not None and should_stop():
                report.stopped = True
                break
            with sessions() as session:
                _send_one(session, row_id, transport, prepare, now, report,
                          max_attempts=max_attempts, backoff_seconds=backoff_seconds,
                          backoff_max_seconds=backoff_max_seconds, copy_wanted=copy_wanted,
                          claim_seconds=claim_seconds)
            if report.unreachable is not None:
                break
    finally:
        transport.close()
    return report


def _send_one(session: Session, row_id: int, transport: Transport,
              prepare: Callable[[Session, OutboxMessage], bytes], now: Callable[[], datetime],
              report: SendReport, *, max_attempts: int, backoff_seconds: float,
              backoff_max_seconds: float, copy_wanted: bool, claim_seconds: float) -> None:
    at = now()
    claimed = session.execute(update(OutboxMessage).where(
        OutboxMessage.id == row_id, OutboxMessage.state == QUEUED,
        OutboxMessage.next_attempt_at <= at)
        .values(next_attempt_at=at + timedelta(seconds=claim_seconds))
        .execution_options(synchronize_session=False))
    session.commit()
    if claimed.rowcount != 1:  # another sender has it, or it changed since the snapshot
        return
    crash_point("send_after_claim")
    row = session.get(OutboxMessage, row_id, populate_existing=True)
    assert row is not None
    problem = next(filter(None, (address_problem(normalise_address(a))
                                 for a in row.to_addrs or [""])), None)
    if problem:  # rows written by hand, or before a rule changed: loop safety still holds
        _suppress(session, row, problem, report)
        return
    # Read now: with expire_on_commit a later read would open a transaction held over the send.
    raw, from_addr, to_addrs = row.raw, row.from_addr, list(row.to_addrs)
    if raw is None:
        try:
            raw = prepare(session, row)
            if not isinstance(raw, bytes | bytearray):
                raise TypeError(f"prepare returned {type(raw).__name__}, not bytes")
        except Suppress as exc:
            session.rollback()
            _suppress(session, _reload(session, row_id), str(exc) or "suppressed", report)
            return
        except Exception as exc:  # a template bug fails this row only; the queue goes on
            log.exception("outbox %d %s: could not be rendered", row_id, row.message_id)
            session.rollback()
            row = _reload(session, row_id)
            _fail(session, row, f"could not be rendered: {type(exc).__name__}: {exc}", report)
            return
        raw = row.raw = bytes(raw)
    session.commit()  # the bytes every attempt sends; and no transaction is held over SMTP
    crash_point("send_after_render")
    try:
        transport.send(raw, from_addr, to_addrs)
    except PermanentFailure as exc:
        row.attempts += 1
        _fail(session, row, str(exc), report)
        return
    except Exception as exc:  # TemporaryFailure, or a transport bug: the outcome is unknown
        if not isinstance(exc, TemporaryFailure):
            log.exception("outbox %d: the transport failed unexpectedly", row_id)
        error = str(exc) if isinstance(exc, TemporaryFailure) else f"{type(exc).__name__}: {exc}"
        _retry(session, row, error, now(), report, max_attempts=max_attempts,
               backoff_seconds=backoff_seconds, backoff_max_seconds=backoff_max_seconds)
        if isinstance(exc, ServerUnreachable):
            report.unreachable = str(exc)
        return
    crash_point("send_after_accept")
    row.state = SENT
    row.sent_at = now()
    row.attempts += 1
    row.last_error = None
    row.copy_state = COPY_PENDING if copy_wanted else COPY_NONE
    try:
        session.commit()
    except Exception:
        log.error("outbox %d %s was accepted by %s but could not be recorded as sent: it may "
                  "be sent once more", row_id, row.message_id, transport.name)
        raise
    crash_point("send_after_sent_commit")
    report.sent += 1
    log.info("outbox %d %s sent to %s", row_id, row.message_id, ", ".join(to_addrs))


def _reload(session: Session, row_id: int) -> OutboxMessage:
    row = session.get(OutboxMessage, row_id, populate_existing=True)
    assert row is not None
    return row


def _suppress(session: Session, row: OutboxMessage, reason: str, report: SendReport) -> None:
    row.state = SUPPRESSED
    row.last_error = f"suppressed: {reason}"
    session.commit()
    report.suppressed += 1
    log.warning("outbox %d %s suppressed: %s", row.id, row.message_id, reason)


def _fail(session: Session, row: OutboxMessage, error: str, report: SendReport) -> None:
    row.state = FAILED
    row.last_error = error
    session.commit()
    report.failed += 1
    report.errors.append(f"outbox {row.id} {row.message_id} to {', '.join(row.to_addrs)}: {error}")
    log.warning("outbox %d %s failed: %s", row.id, row.message_id, error)


def _retry(session: Session, row: OutboxMessage, error: str, at: datetime, report: SendReport,
           *, max_attempts: int, backoff_seconds: float, backoff_max_seconds: float) -> None:
    row.attempts += 1
    if row.attempts >= max_attempts:
        _fail(session, row, f"gave up after {row.attempts} attempts: {error}", report)
        return
    row.last_error = error
    row.next_attempt_at = at + backoff(row.attempts, backoff_seconds, backoff_max_seconds)
    session.commit()
    report.retried += 1
    log.info("outbox %d %s: attempt %d failed (%s); next at %s", row.id, row.message_id,
             row.attempts, error, row.next_attempt_at.isoformat())


# The Sent copy: `app` APPENDs each sent row's raw to the mailbox's Sent folder, then marks it.
# These helpers never commit: the caller's job does, after each row.

def copies_due(session: Session, now: datetime, limit: int = 50) -> list[OutboxMessage]:
    """Sent rows whose copy is still to be APPENDed and due now, oldest first."""
    return list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.state == SENT, OutboxMessage.copy_state == COPY_PENDING,
        (OutboxMessage.copy_next_attempt_at.is_(None))
        | (OutboxMessage.copy_next_attempt_at <= now))
        .order_by(OutboxMessage.sent_at, OutboxMessage.id).limit(limit)))


def mark_copy_done(session: Session, row: OutboxMessage) -> None:
    row.copy_state = COPY_DONE
    row.copy_error = None
    row.copy_next_attempt_at = None


def mark_copy_failed(session: Session, row: OutboxMessage, error: str, now: datetime,
                     max_attempts: int, backoff_seconds: float = 60,
                     backoff_max_seconds: float = 3600) -> bool:
    """Count a failed APPEND; True when this was the last try (the copy is now COPY_FAILED).

    A given-up copy keeps `copy_next_attempt_at` = when it was given up, so status and the
    digest can report it once (the mail itself went out; nothing is resent).
    """
    row.copy_attempts += 1
    row.copy_error = error
    if row.copy_attempts >= max_attempts:
        row.copy_state = COPY_FAILED
        row.copy_next_attempt_at = now
        log.warning("outbox %d %s: Sent copy given up after %d attempts: %s", row.id,
                    row.message_id, row.copy_attempts, error)
        return True
    row.copy_next_attempt_at = now + backoff(row.copy_attempts, backoff_seconds,
                                             backoff_max_seconds)
    return False


def copy_failures(session: Session) -> list[OutboxMessage]:
    """Rows whose Sent copy was given up (for status)."""
    return list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.copy_state == COPY_FAILED).order_by(OutboxMessage.id)))


def next_attempt(session: Session) -> datetime | None:
    """When the earliest queued mail is due (the daemon wakes for it); None when none is."""
    return session.scalar(select(func.min(OutboxMessage.next_attempt_at))
                          .where(OutboxMessage.state == QUEUED))
