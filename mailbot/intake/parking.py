"""Failed processing attempts: each one counted, and after `max_attempts` the message parked.

A parked message waits for `mailbot reprocess`; it never holds up the messages behind it.
"""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from mailbot.intake.models import MESSAGE_ARCHIVED, MESSAGE_PARKED, Message, ProcessingFailure

log = logging.getLogger(__name__)


def claim(s: Session, row_ids: list[int]) -> list[int]:
    """Of these rows, the ones still `archived`, locked for this transaction.

    An UPDATE, not a SELECT: on PostgreSQL it waits for a concurrent pass (the daemon and
    `mailbot reprocess` at the same moment) and then sees its outcome; on SQLite it takes
    the write lock first, so the check reads the latest commit. No row is recorded twice.
    """
    if not row_ids:
        return []
    return list(s.scalars(
        update(Message).where(Message.id.in_(row_ids), Message.status == MESSAGE_ARCHIVED)
        .values(attempts=Message.attempts).returning(Message.id)
        .execution_options(synchronize_session=False)))


def charge_failure(sessions: sessionmaker[Session], row_id: int, exc: BaseException,
                   max_attempts: int) -> bool | None:
    """Count one failed attempt against a row still `archived`; park it after the last.

    Returns True when the row is now parked, False when it waits for another try, None
    when another pass recorded it meanwhile (nothing charged).
    """
    text = f"{type(exc).__name__}: {exc}"[:4000]
    log.warning("processing message row %s failed: %s", row_id, text)
    with sessions() as s:
        if not claim(s, [row_id]):
            return None
        row = s.get(Message, row_id)
        assert row is not None
        row.attempts = (row.attempts or 0) + 1
        row.last_error = text
        s.add(ProcessingFailure(message_row_id=row_id, error=text))
        parked = row.attempts >= max_attempts
        if parked:
            row.status = MESSAGE_PARKED
        attempts = row.attempts
        s.commit()
    if parked:
        log.error("message row %s parked after %d attempts / 邮件处理失败已搁置"
                  " (mailbot reprocess %s)", row_id, attempts, row_id)
    return parked
