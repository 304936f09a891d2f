"""Send the queued mail: render once, send, record; and the bookkeeping of the Sent copies.

`send_due` takes the `queued` rows due now, oldest first, RENDER_BATCH at a time:
1. renders every row of the batch that has no `raw` yet with `prepare`, and commits the bytes
   of the whole batch at once, before the first attempt, so every retry sends the identical
   message (same Message-ID, same MIME boundaries). A row's bytes are written only where none
   are yet (a second sender rendering the same row loses, and both send the stored bytes). A
   `prepare` that raises fails that row (a template bug must not block the queue) and is
   reported; one that raises `Suppress` suppresses it; a row whose recipient loop safety
   refuses is suppressed;
2. sends the rendered rows one at a time. Each is claimed first: an UPDATE moves its next
   attempt a lease ahead (CLAIM_SECONDS), so a second sender running at the same time (`run
   --once` beside the daemon) skips it, and a sender killed in mid-send leaves it due again
   only when the lease ends. The claim is committed with the outcome of the row before it
   (one commit a row), and the row's bytes are read in that transaction, so none is held
   over SMTP;
3. records each outcome at once: accepted -> `sent` (never sent again); temporary failure ->
   attempts + 1 and a retry after an exponential backoff counted on the clock it is given
   (nothing sleeps), `failed` after max_attempts; permanent -> `failed`. When the server
   cannot be reached at all the batch stops there (the other rows would fare no better) and
   the report says so.

A transport whose delivery is idempotent (`file:`: the same Message-ID replaces the same file)
skips the claims of step 2: the batch's rows are read, handed over together (`send_many`) and
their outcomes committed at once. A crash before that commit leaves them queued and due, and
the next run writes the same files again: nothing is lost and nobody gets a second mail. Two
senders at once may both write a file; the first to record it as sent counts it.

The one window no SMTP client can close: the server has taken the message (it answered, or
was about to answer, 250 to the final dot) and the process dies, or the database is lost,
before the `sent` commit; or the connection drops after the final dot before the 250
arrives. The row is still `queued`, so after its lease it is sent again: at most one
duplicate, with the same bytes and Message-ID (clients that keep Message-IDs show it once),
and only there. Every other crash point loses nothing and repeats nothing; a kill after a
claim leaves that one row waiting for its lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, defer, sessionmaker

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
# Rows rendered per commit: the bytes of a batch are committed together before any is sent.
RENDER_BATCH = 25


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
    policy = _Policy(max_attempts, backoff_seconds, backoff_max_seconds, copy_wanted,
                     claim_seconds)
    try:
        for start in range(0, len(due), RENDER_BATCH):  # a snapshot: later rows wait
            if should_stop is not None and should_stop():
                report.stopped = True
                break
            with sessions() as session:
                ready = _render_batch(session, due[start:start + RENDER_BATCH], prepare,
                                      report)
            with sessions() as session:
                if transport.idempotent:
                    _send_batch_at_once(session, ready, transport, now, report, policy)
                else:
                    _send_batch(session, ready, transport, now, report, policy, should_stop)
            if report.unreachable is not None or report.stopped:
                break
    finally:
        transport.close()
    return report


@dataclass(frozen=True)
class _Policy:
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    copy_wanted: bool
    claim_seconds: float


@dataclass(frozen=True)
class _Claimed:
    """What sending a claimed row needs, read in the transaction that claimed it."""

    id: int
    message_id: str
    raw: bytes
    from_addr: str
    to_addrs: list[str]
    attempts: int

    @classmethod
    def read(cls, row_id: int, row: Any) -> _Claimed:
        """From a result row of _READ's columns."""
        return cls(row_id, row.message_id, bytes(row.raw), row.from_addr,
                   list(row.to_addrs or []), row.attempts)


def _render_batch(session: Session, row_ids: list[int],
                  prepare: Callable[[Session, OutboxMessage], bytes],
                  report: SendReport) -> list[int]:
    """Render the rows without bytes, suppress or fail those that cannot go, commit once;
    the ids still to send, in order."""
    # Without the bytes themselves (a retry's may hold certificates and the notice PDF).
    rows = {r.id: (r, unrendered) for r, unrendered in session.execute(
        select(OutboxMessage, OutboxMessage.raw.is_(None)).options(defer(OutboxMessage.raw))
        .where(OutboxMessage.id.in_(row_ids), OutboxMessage.state == QUEUED))}
    ready: list[int] = []
    rendered: list[dict[str, object]] = []
    for row_id in row_ids:
        if row_id not in rows:  # sent, failed or suppressed by another sender meanwhile
            continue
        row, unrendered = rows[row_id]
        problem = next(filter(None, (address_problem(normalise_address(a))
                                     for a in row.to_addrs or [""])), None)
        if problem:  # rows written by hand, or before a rule changed: loop safety still holds
            _suppress(row, problem, report)
            continue
        if unrendered:
            try:
                raw = prepare(session, row)
                if not isinstance(raw, bytes | bytearray):
                    raise TypeError(f"prepare returned {type(raw).__name__}, not bytes")
            except Suppress as exc:
                _suppress(row, str(exc) or "suppressed", report)
                continue
            except Exception as exc:  # a template bug fails this row only; the queue goes on
                log.exception("outbox %d %s: could not be rendered", row_id, row.message_id)
                _fail(row, f"could not be rendered: {type(exc).__name__}: {exc}", report)
                continue
            rendered.append({"b_id": row_id, "b_raw": bytes(raw)})
        ready.append(row_id)
    session.flush()  # the suppressed and failed rows
    if rendered:  # only where no bytes are yet: another sender's stored bytes win
        session.connection().execute(_STORE_RAW, rendered)
    session.commit()
    crash_point("send_after_render")
    return ready


def _send_batch(session: Session, row_ids: list[int], transport: Transport,
                now: Callable[[], datetime], report: SendReport, policy: _Policy,
                should_stop: Callable[[], bool] | None) -> None:
    """Claim, send and record each row; each outcome is committed with the next row's claim."""
    if not row_ids:
        return
    claimed = _claim(session, row_ids[0], now(), policy)
    session.commit()
    for i in range(len(row_ids)):
        following = row_ids[i + 1] if i + 1 < len(row_ids) else None
        outcome = None  # None: another sender has the row, or it changed since the snapshot
        if claimed is not None:
            crash_point("send_after_claim")
            outcome = _deliver(session, claimed, transport, now, report, policy)
            if outcome == UNREACHABLE:
                following = None
        if following is not None and should_stop is not None and should_stop():
            report.stopped = True
            following = None
        current = claimed
        claimed = _claim(session, following, now(), policy) if following is not None else None
        try:
            session.commit()
        except Exception:
            if outcome == SENT and current is not None:
                log.error("outbox %d %s was accepted by %s but could not be recorded as sent:"
                          " it may be sent once more", current.id, current.message_id,
                          transport.name)
            raise
        if outcome == SENT and current is not None:
            crash_point("send_after_sent_commit")
            _count_sent(report, current)
        if following is None:
            break


def _send_batch_at_once(session: Session, row_ids: list[int], transport: Transport,
                        now: Callable[[], datetime], report: SendReport,
                        policy: _Policy) -> None:
    """For an idempotent transport: read the rows still queued and due, hand them over
    together, record every outcome and commit once."""
    if not row_ids:
        return
    found = {r.id: r for r in session.connection().execute(
        _READ_DUE, {"b_ids": row_ids, "b_at": now()})}
    rows = [_Claimed.read(i, found[i]) for i in row_ids if i in found]
    session.rollback()  # no transaction is held while the transport works
    outcomes = transport.send_many([(r.raw, r.from_addr, r.to_addrs) for r in rows])
    sent = [row for row, outcome in zip(rows, outcomes, strict=True)
            if _record_outcome(session, row, outcome, transport, now, report, policy) == SENT]
    session.commit()
    for row in sent:
        _count_sent(report, row)


def _count_sent(report: SendReport, row: _Claimed) -> None:
    """After the commit that recorded the row as sent."""
    report.sent += 1
    log.info("outbox %d %s sent to %s", row.id, row.message_id, ", ".join(row.to_addrs))


UNREACHABLE = "unreachable"  # an outcome of _deliver besides the row states


_TABLE = OutboxMessage.__table__
# Core statements, compiled once (the ORM's update machinery costs more than the SQL here).
# A row that may be sent now: queued, due at b_at, rendered.
_DUE = (_TABLE.c.state == QUEUED, _TABLE.c.next_attempt_at <= bindparam("b_at"),
        _TABLE.c.raw.is_not(None))
_CLAIM = (update(_TABLE).where(_TABLE.c.id == bindparam("b_id"), *_DUE)
          .values(next_attempt_at=bindparam("b_until")))
_READ = select(_TABLE.c.message_id, _TABLE.c.raw, _TABLE.c.from_addr, _TABLE.c.to_addrs,
               _TABLE.c.attempts).where(_TABLE.c.id == bindparam("b_id"))
_CLAIM_READ = _CLAIM.returning(*_READ.selected_columns)
_READ_DUE = (select(_TABLE.c.id, *_READ.selected_columns)
             .where(_TABLE.c.id.in_(bindparam("b_ids", expanding=True)), *_DUE))
# Outcomes touch only a row still queued: another sender may have recorded it meanwhile.
_SENT = (update(_TABLE).where(_TABLE.c.id == bindparam("b_id"), _TABLE.c.state == QUEUED)
         .values(state=SENT, sent_at=bindparam("b_at"), attempts=_TABLE.c.attempts + 1,
                 last_error=None, copy_state=bindparam("b_copy")))
_STORE_RAW = (update(_TABLE).where(_TABLE.c.id == bindparam("b_id"), _TABLE.c.raw.is_(None))
              .values(raw=bindparam("b_raw")))


def _claim(session: Session, row_id: int, at: datetime, policy: _Policy) -> _Claimed | None:
    """Lease the row (uncommitted: the caller commits it with the previous outcome) and read
    what sending it needs; None when it is not due and queued any more."""
    conn = session.connection()
    params = {"b_id": row_id, "b_at": at,
              "b_until": at + timedelta(seconds=policy.claim_seconds)}
    if conn.dialect.update_returning:  # SQLite >= 3.35, PostgreSQL: one statement
        row = conn.execute(_CLAIM_READ, params).first()
        if row is None:
            return None
    else:
        if conn.execute(_CLAIM, params).rowcount != 1:
            return None
        row = conn.execute(_READ, {"b_id": row_id}).one()
    return _Claimed.read(row_id, row)


def _deliver(session: Session, row: _Claimed, transport: Transport,
             now: Callable[[], datetime], report: SendReport, policy: _Policy) -> str:
    """Hand the row to the transport; write (not commit) its outcome; the outcome."""
    try:
        transport.send(row.raw, row.from_addr, row.to_addrs)
    except Exception as exc:
        return _record_outcome(session, row, exc, transport, now, report, policy)
    crash_point("send_after_accept")
    return _record_outcome(session, row, None, transport, now, report, policy)


def _record_outcome(session: Session, row: _Claimed, outcome: Exception | None,
                    transport: Transport, now: Callable[[], datetime], report: SendReport,
                    policy: _Policy) -> str:
    """Write (not commit) what the transport made of the row: SENT, FAILED, QUEUED (to be
    retried), UNREACHABLE (retried; the server could not be reached at all), or "" when the
    row was no longer queued (another sender recorded it)."""
    if outcome is None:
        done = session.connection().execute(_SENT, {
            "b_id": row.id, "b_at": now(),
            "b_copy": COPY_PENDING if policy.copy_wanted else COPY_NONE}).rowcount
        return SENT if done == 1 else ""
    if isinstance(outcome, PermanentFailure):
        _record_failure(session, row, str(outcome), report)
        return FAILED
    # TemporaryFailure, or a transport bug: the outcome is unknown
    if not isinstance(outcome, TemporaryFailure):
        log.error("outbox %d: the transport failed unexpectedly", row.id, exc_info=outcome)
    error = (str(outcome) if isinstance(outcome, TemporaryFailure)
             else f"{type(outcome).__name__}: {outcome}")
    state = _record_retry(session, row, error, now(), report, policy)
    if isinstance(outcome, ServerUnreachable):
        report.unreachable = str(outcome)
        return UNREACHABLE
    return state


def _set(session: Session, row_id: int, **values: object) -> None:
    session.connection().execute(update(_TABLE).where(
        _TABLE.c.id == row_id, _TABLE.c.state == QUEUED).values(**values))


def _record_failure(session: Session, row: _Claimed, error: str, report: SendReport) -> None:
    _set(session, row.id, state=FAILED, attempts=row.attempts + 1, last_error=error)
    _report_failure(report, row.id, row.message_id, row.to_addrs, error)


def _record_retry(session: Session, row: _Claimed, error: str, at: datetime,
                  report: SendReport, policy: _Policy) -> str:
    attempts = row.attempts + 1
    if attempts >= policy.max_attempts:
        error = f"gave up after {attempts} attempts: {error}"
        _set(session, row.id, state=FAILED, attempts=attempts, last_error=error)
        _report_failure(report, row.id, row.message_id, row.to_addrs, error)
        return FAILED
    next_at = at + backoff(attempts, policy.backoff_seconds, policy.backoff_max_seconds)
    _set(session, row.id, attempts=attempts, last_error=error, next_attempt_at=next_at)
    report.retried += 1
    log.info("outbox %d %s: attempt %d failed (%s); next at %s", row.id, row.message_id,
             attempts, error, next_at.isoformat())
    return QUEUED


def _report_failure(report: SendReport, row_id: int, message_id: str, to_addrs: list[str],
                    error: str) -> None:
    report.failed += 1
    report.errors.append(f"outbox {row_id} {message_id} to {', '.join(to_addrs)}: {error}")
    log.warning("outbox %d %s failed: %s", row_id, message_id, error)


def _suppress(row: OutboxMessage, reason: str, report: SendReport) -> None:
    row.state = SUPPRESSED
    row.last_error = f"suppressed: {reason}"
    report.suppressed += 1
    log.warning("outbox %d %s suppressed: %s", row.id, row.message_id, reason)


def _fail(row: OutboxMessage, error: str, report: SendReport) -> None:
    row.state = FAILED
    row.last_error = error
    _report_failure(report, row.id, row.message_id, list(row.to_addrs or []), error)


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
