"""What `mailbot status` reports: message and case counts, mailboxes, parked and oversize mail,
and whether the CA key is encrypted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import defer

from mailbot.app.mailbox_staff import open_refusals
from mailbot.cases.models import Case
from mailbot.cases.workflow import urgent_case_ids
from mailbot.config import Config
from mailbot.db import make_engine, session_factory
from mailbot.intake.models import MESSAGE_OVERSIZE, MESSAGE_PARKED, MailboxState, Message
from mailbot.mailbox.url import source_from_config
from mailbot.outbox.models import COPY_FAILED, COPY_PENDING, FAILED, QUEUED, OutboxMessage
from mailbot.pki.ca import key_status


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def collect_status(cfg: Config) -> dict[str, Any]:
    """Counts and lists for `mailbot status`; `not_moved` is of the mailbox configured now."""
    source = source_from_config(cfg).identity  # builds no connection
    engine = make_engine(cfg.database_url, read_only=True)
    try:
        with session_factory(engine)() as s:
            messages = dict(s.execute(select(Message.status, func.count())
                                      .group_by(Message.status)).all())
            cases = dict(s.execute(select(Case.state, func.count())
                                   .group_by(Case.state)).all())
            mailboxes = [{"source": m.source, "uidvalidity": m.uidvalidity,
                          "last_uid": m.last_uid,
                          "last_poll": _iso(m.updated_at), "last_sweep": _iso(m.last_sweep_at),
                          "move_error": m.move_error,
                          "move_failing_since": _iso(m.move_failing_since)}
                         for m in s.scalars(select(MailboxState).order_by(MailboxState.source))]

            def rows(status: str) -> list[dict[str, Any]]:
                return [{"id": m.id, "message_id": m.message_id, "subject": m.subject,
                         "from": m.from_addr, "size": m.size, "attempts": m.attempts,
                         "error": m.last_error, "source": m.source, "uid": m.uid,
                         "key": m.source_key}
                        for m in s.scalars(select(Message).where(Message.status == status)
                                           .order_by(Message.id))]

            # Recorded (and processed) but still in the inbox: the mailbox refused the move.
            # A crash between a move and its record shows here only until the next run.
            count, oldest = s.execute(
                select(func.count(), func.min(Message.fetched_at))
                .where(Message.moved_at.is_(None), Message.status != MESSAGE_OVERSIZE,
                       Message.source == source)).one()
            not_moved = {"count": int(count or 0), "since": _iso(oldest)}
            return {"messages": messages, "cases": cases, "mailboxes": mailboxes,
                    "parked": rows(MESSAGE_PARKED), "oversize": rows(MESSAGE_OVERSIZE),
                    "not_moved": not_moved,
                    # staff's mailbox marks the workflow refused, nothing done on the case since
                    "mailbox_refusals": open_refusals(s),
                    # how the CA key is kept (read without opening it); a warning when the
                    # soft key is in clear
                    "ca": key_status(cfg).as_dict(),
                    "outbox": _outbox(s),
                    "waiting": _waiting(s)}
    finally:
        engine.dispose()


def _outbox(s: Any) -> dict[str, Any]:
    """Outgoing mail: counts by state, the queue's oldest, failed mail and failed Sent copies."""
    states = dict(s.execute(select(OutboxMessage.state, func.count())
                            .group_by(OutboxMessage.state)).all())
    oldest = s.scalar(select(func.min(OutboxMessage.created_at))
                      .where(OutboxMessage.state == QUEUED))
    copies = dict(s.execute(select(OutboxMessage.copy_state, func.count())
                            .group_by(OutboxMessage.copy_state)).all())

    def rows(*where: Any) -> list[dict[str, Any]]:
        return [{"id": r.id, "ref": r.case_ref, "template": r.template, "to": list(r.to_addrs),
                 "attempts": r.attempts, "error": r.last_error, "copy_error": r.copy_error,
                 "created_at": _iso(r.created_at)}
                for r in s.scalars(select(OutboxMessage).options(defer(OutboxMessage.raw))
                                   .where(*where).order_by(OutboxMessage.id))]

    return {"states": states, "queued_since": _iso(oldest),
            "copies_pending": int(copies.get(COPY_PENDING, 0)),
            "failed": rows(OutboxMessage.state == FAILED),
            "copy_failed": rows(OutboxMessage.copy_state == COPY_FAILED)}


def _waiting(s: Any) -> dict[str, Any]:
    """What waits for staff: the phone call before approval, issuance held back, and the call
    to the handler after delivery; key-loss revocations first, marked urgent."""
    urgent = urgent_case_ids(s)

    def rows(*where: Any) -> list[dict[str, Any]]:
        cases = list(s.scalars(select(Case).where(*where).order_by(Case.id)))
        out = [{"ref": c.ref, "kind": c.kind, "company": c.company, "state": c.state,
                "since": _iso(c.state_changed_at), "urgent": c.id in urgent} for c in cases]
        return sorted(out, key=lambda r: not r["urgent"])

    return {"confirmation": rows(Case.state == "awaiting_confirmation"),
            "issuance": rows(Case.state == "approved"),
            "call": rows(Case.state == "delivered", Case.called_at.is_(None))}
