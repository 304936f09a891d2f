"""The daily staff digest: what waits for staff, in one mail to [outbox] staff_addresses.

Sent once a day, at the first run after [outbox] digest_hour (Beijing time); with no staff
address configured there is no digest mail. It lists the cases waiting for the phone call and
for staff, delivered cases whose handler is still to be called, parked messages, mailbox
failures, and outgoing mail that failed (each failed mail is reported once).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer, sessionmaker

from mailbot import clock
from mailbot.app.issuance import case_fields
from mailbot.app.notices import base_context, our_addresses
from mailbot.cases.models import Case
from mailbot.cases.workflow import to_call, urgent_case_ids
from mailbot.config import Config
from mailbot.faults import crash_point
from mailbot.intake.models import MESSAGE_PARKED, MailboxState, Message
from mailbot.outbox import context as ctx
from mailbot.outbox.models import COPY_FAILED, FAILED, OutboxMessage
from mailbot.outbox.queue import Outgoing, enqueue, sent_today
from mailbot.refs import make_plain_message_id

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)

WAITING_STATES = ("awaiting_confirmation", "approved")  # the call, or staff's next step


def digest_job(daemon: Daemon) -> str | None:
    if not run_digest(daemon.cfg, daemon.sessions):
        return None
    log.info("staff digest queued for %s", ", ".join(daemon.cfg.outbox.staff_addresses))
    return "queued for " + ", ".join(daemon.cfg.outbox.staff_addresses)


def digest_due(cfg: Config, at: datetime) -> bool:
    return bool(cfg.outbox.staff_addresses) and clock.local(at).hour >= cfg.outbox.digest_hour


def run_digest(cfg: Config, sessions: sessionmaker[Session], *,
               at: datetime | None = None) -> bool:
    """Queue today's digest if it is due and not queued yet; True when it was queued."""
    at = at or clock.now()
    if not digest_due(cfg, at):
        return False
    staff = [a.strip() for a in cfg.outbox.staff_addresses]
    with sessions() as s:
        if sent_today(s, ctx.DIGEST, staff[0], at):
            return False
        context = digest_context(s, cfg, at)
        enqueue(s, Outgoing(
            template=ctx.DIGEST, from_addr=cfg.smtp.from_address, to_addrs=staff,
            message_id=make_plain_message_id(cfg.smtp.message_id_domain), in_reply_to=None,
            references=[], context=context, case_id=None, case_ref=None,
            message_row_id=None, notice_id=None, cap_exempt=True, attachments=[]),
            our_addresses=our_addresses(cfg), daily_cap=cfg.outbox.daily_cap, now=at)
        s.commit()
    crash_point("digest_after_commit")
    return True


def digest_context(session: Session, cfg: Config, at: datetime) -> dict[str, Any]:
    """The digest's context (outbox/context.py); failed mail listed here counts as told."""
    context = base_context(cfg, case=None, message=None)
    context["date"] = clock.local(at).strftime("%Y-%m-%d")
    context["to_call"] = [_to_call_row(c) for c in to_call(session)]
    context["awaiting"] = _awaiting(session)
    context["parked"] = [{"id": m.id, "subject": m.subject or "", "from_addr": m.from_addr or "",
                          "error": m.last_error or ""}
                         for m in session.scalars(select(Message).where(
                             Message.status == MESSAGE_PARKED).order_by(Message.id))]
    context["failures"] = [{"kind": "move", "where": m.source,
                            "since": _local(m.move_failing_since), "error": m.move_error or ""}
                           for m in session.scalars(select(MailboxState).where(
                               MailboxState.move_error.is_not(None)))]
    failed = list(session.scalars(select(OutboxMessage).options(defer(OutboxMessage.raw)).where(
        OutboxMessage.state == FAILED, OutboxMessage.failure_reported_at.is_(None))
        .order_by(OutboxMessage.id)))
    context["outbox_failed"] = [{"ref": r.case_ref or "", "to": ", ".join(r.to_addrs),
                                 "template": r.template, "error": r.last_error or ""}
                                for r in failed]
    for row in failed:
        row.failure_reported_at = at
    copies = session.scalars(select(OutboxMessage).options(defer(OutboxMessage.raw)).where(
        OutboxMessage.copy_state == COPY_FAILED,
        OutboxMessage.copy_next_attempt_at >= at - timedelta(days=1)))
    context["failures"].extend({"kind": "sent_copy", "where": r.case_ref or r.message_id,
                                "since": _local(r.sent_at), "error": r.copy_error or ""}
                               for r in copies)
    context["bounces"] = _bounces(session, at)
    return context


def _bounces(session: Session, at: datetime) -> list[dict[str, Any]]:
    """Our mail that bounced since the previous digest (the day before): the case it joined."""
    rows = session.execute(select(Message, Case.ref).outerjoin(Case, Case.id == Message.case_id)
                           .where(Message.kind == "bounce",
                                  Message.fetched_at >= at - timedelta(days=1))
                           .order_by(Message.id)).all()
    return [{"ref": ref, "at": _local(m.fetched_at), "from_addr": m.from_addr or "",
             "subject": m.subject or ""} for m, ref in rows if ref is not None]


def _to_call_row(case: Case) -> dict[str, Any]:
    fields = case_fields(case)
    return {"ref": case.ref, "company": fields.get("applicant_org") or case.company or "",
            "handler_name": fields.get("handler_name", ""),
            "handler_phone": fields.get("handler_phone", ""),
            "delivered_at": _local(case.state_changed_at)}


def _awaiting(session: Session) -> list[dict[str, Any]]:
    cases = list(session.scalars(select(Case).where(Case.state.in_(WAITING_STATES))
                                 .order_by(Case.id)))
    urgent = urgent_case_ids(session)
    rows = []
    for case in cases:
        fields = case_fields(case)
        rows.append({"ref": case.ref, "company": fields.get("applicant_org") or case.company or "",
                     "state": case.state, "since": _local(case.state_changed_at),
                     "urgent": case.id in urgent})
    rows.sort(key=lambda r: not r["urgent"])  # urgent (key lost) first
    return rows


def _local(when: datetime | None) -> str:
    return clock.local(when).strftime("%Y-%m-%d %H:%M") if when is not None else ""
