"""From what the cases decided to what the outbox sends, in the same transaction.

The workflow records each notice a transition asks for in `case_notices` (cases know no
outbox). Every session the app hands out (`app_sessions`) turns those rows into outbox rows
just before it commits, so the outgoing mail is written in the transaction of the case change
that caused it: a crash loses both or neither. The same hook gives unrelated mail from a person
its one short notice per sender per day.

Who gets what (CONTRACTS.md "Mail and mailbox"): answers to a message go to its sender (its
Reply-To if present), never to automatic mail, a bounce or a null sender; the certificates, the
notice and the revocation result go to the form's 邮件地址 only.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, or_, select, update
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from mailbot import clock
from mailbot.cases.models import AuditEntry, Case, CaseField, CaseFinding, CaseNotice
from mailbot.config import Config
from mailbot.db import session_factory
from mailbot.intake.models import (
    MESSAGE_PROCESSED,
    NO_REPLY_AUTOMATIC,
    NO_REPLY_BOUNCE,
    NO_REPLY_NULL_SENDER,
    Message,
)
from mailbot.outbox import context as ctx
from mailbot.outbox.queue import Outgoing, enqueue, enqueue_many, sent_today
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.sm2 import sm3
from mailbot.refs import make_message_id, make_plain_message_id

log = logging.getLogger(__name__)

# What stops an answer to a message's sender (lists and spam stop only the unrelated notice:
# an application is answered even when a filter doubted it).
NEVER_ANSWER = frozenset({NO_REPLY_AUTOMATIC, NO_REPLY_BOUNCE, NO_REPLY_NULL_SENDER})
NOTICES = "mailbot.notices_written"  # session.info key: this session wrote case notices
PAYLOADS = "mailbot.notice_payloads"  # session.info key: what a transition hands its notice
UNRELATED = "mailbot.unrelated_messages"  # session.info key: unrelated mail seen in a flush
NOTICE_FIELDS = ("applicant_org", "org_code", "email")  # the form fields a notice reads
CERT_FILENAMES = {"sign": "sign.cer", "enc": "env.cer"}
CERT_TYPE = "application/pkix-cert"
ENVELOPE_FILENAME = "envprivatekey"
ENVELOPE_TYPE = "application/octet-stream"


@dataclass
class NoticePayload:
    """What only the transaction that issued or revoked knows: the pair and the envelope."""

    certificates: list[IssuedCertificate] = field(default_factory=list)
    envelope: bytes | None = None  # SM2EnvelopedKey DER, encrypted to the applicant's key


def hand_payload(session: Session, case: Case, payload: NoticePayload) -> None:
    """Give the notice of `case`'s transition (committed with this session) its payload."""
    session.info.setdefault(PAYLOADS, {})[case.id] = payload


def app_sessions(cfg: Config, engine: Any) -> sessionmaker[Session]:
    """Sessions whose commits queue the mail their case changes asked for."""
    sessions = session_factory(engine)
    install_outbox_hook(sessions, cfg)
    return sessions


def install_outbox_hook(sessions: sessionmaker[Session], cfg: Config) -> None:
    @event.listens_for(sessions, "after_flush")
    def _note_flushed(session: Session, _flush_context: object) -> None:
        for obj in list(session.new) + list(session.dirty):
            if isinstance(obj, CaseNotice):
                session.info[NOTICES] = True
            elif isinstance(obj, Message) and obj.kind == "unrelated" \
                    and obj.status == MESSAGE_PROCESSED and obj.no_reply_reason is None:
                session.info.setdefault(UNRELATED, set()).add(obj.id)

    @event.listens_for(sessions, "do_orm_execute")
    def _note_bulk(state: ORMExecuteState) -> None:
        table = getattr(state.statement, "table", None)
        if state.is_insert and getattr(table, "name", None) == CaseNotice.__tablename__:
            state.session.info[NOTICES] = True  # the recorder writes its notices in bulk

    @event.listens_for(sessions, "before_commit")
    def _queue(session: Session) -> None:
        if any(isinstance(obj, CaseNotice) for obj in session.new):  # not flushed yet
            session.info[NOTICES] = True
        queue_pending(session, cfg, force=False)

    @event.listens_for(sessions, "after_rollback")
    def _forget(session: Session) -> None:
        for key in (PAYLOADS, UNRELATED, NOTICES):
            session.info.pop(key, None)


NOTICE_COLUMNS = (CaseNotice.id, CaseNotice.case_id, CaseNotice.template, CaseNotice.recipients,
                  CaseNotice.message_row_id, CaseNotice.audit_hash, CaseNotice.created_at)


def queue_pending(session: Session, cfg: Config, *, force: bool = True) -> int:
    """Outbox rows for every notice not yet queued (and the unrelated mail this session saw);
    in the caller's transaction. Returns how many rows were written. Without `force`, only
    when this session wrote a notice (a commit that changed no case costs no query)."""
    payloads: dict[int, NoticePayload] = session.info.pop(PAYLOADS, {})
    unrelated: set[int] = session.info.pop(UNRELATED, set())
    wrote_notices = session.info.pop(NOTICES, False)
    notices = []
    if force or wrote_notices:
        notices = session.execute(select(*NOTICE_COLUMNS).where(CaseNotice.queued_at.is_(None))
                                  .order_by(CaseNotice.id)).all()
    written = 0
    at = clock.now()
    if notices:
        known = Prefetched.load(session, notices)
        batch = [outgoing_for_notice(session, cfg, known.cases[n.case_id], n,
                                     payloads.get(n.case_id), known)
                 for n in notices if n.case_id in known.cases]
        enqueue_many(session, batch, our_addresses=our_addresses(cfg),
                     daily_cap=cfg.outbox.daily_cap, now=at)
        session.execute(update(CaseNotice).where(CaseNotice.id.in_([n.id for n in notices]))
                        .values(queued_at=at))
        written += len(batch)
    for message_id in sorted(unrelated):
        message = session.get(Message, message_id)
        if message is not None and _unrelated_notice(session, cfg, message, at):
            written += 1
    if written:
        session.flush()
    return written


def our_addresses(cfg: Config) -> set[str]:
    return {a.strip().lower() for a in (cfg.mailbox.our_address, cfg.smtp.from_address) if a}


@dataclass(frozen=True)
class Answered:
    """What a notice reads of the message it answers (not the whole row: its facts are big)."""

    id: int
    case_id: int | None
    message_id: str | None
    subject: str | None
    fetched_at: datetime | None
    reply_address: str | None
    no_reply_reason: str | None


ANSWERED_COLUMNS = (Message.id, Message.case_id, Message.message_id, Message.subject,
                    Message.fetched_at, Message.reply_address, Message.no_reply_reason)


@dataclass
class Prefetched:
    """What a batch of notices reads, in a few queries instead of a few per notice (the
    recorder queues one notice per application, in the intake's hot path)."""

    cases: dict[int, Case]
    messages: dict[int, Answered]
    findings: dict[int, list[dict[str, Any]]]  # case id -> open findings, as in the context
    fields: dict[int, dict[str, str]]

    @classmethod
    def load(cls, session: Session, notices: Sequence[Any]) -> Prefetched:
        case_ids = {n.case_id for n in notices}
        cases = {c.id: c for c in session.scalars(select(Case).where(Case.id.in_(case_ids)))}
        fields: dict[int, dict[str, str]] = {}
        for case_id, key, value in session.execute(
                select(CaseField.case_id, CaseField.key, CaseField.value).where(
                    CaseField.case_id.in_(case_ids), CaseField.key.in_(NOTICE_FIELDS))):
            fields.setdefault(case_id, {})[key] = (value or "").strip()
        message_ids = {n.message_row_id for n in notices if n.message_row_id}
        # Notices without a message answer the case's first one (expiry, staff actions).
        firsts = select(func.min(Message.id)).where(
            Message.case_id.in_({n.case_id for n in notices if not n.message_row_id}))\
            .group_by(Message.case_id)
        messages = {row.id: Answered(*row) for row in session.execute(
            select(*ANSWERED_COLUMNS).where(
                or_(Message.id.in_(message_ids), Message.id.in_(firsts))))}
        wanting = {n.case_id for n in notices if n.template in (ctx.INCOMPLETE, ctx.EXPIRED)}
        findings: dict[int, list[dict[str, Any]]] = {}
        if wanting:  # plain rows: no ORM objects for the hundreds of findings of a batch
            for case_id, code, severity, detail, facts in session.execute(select(
                    CaseFinding.case_id, CaseFinding.code, CaseFinding.severity,
                    CaseFinding.detail, CaseFinding.facts).where(
                    CaseFinding.case_id.in_(wanting), CaseFinding.resolved_at.is_(None),
                    CaseFinding.overridden_by.is_(None)).order_by(CaseFinding.id)):
                findings.setdefault(case_id, []).append(
                    {"code": code, "severity": severity, "detail": detail,
                     "facts": dict(facts or {})})
        return cls(cases, messages, findings, fields)

    def first_message(self, case: Case) -> Answered | None:
        return min((m for m in self.messages.values() if m.case_id == case.id),
                   key=lambda m: m.id, default=None)


# -- one notice -----------------------------------------------------------------------------
def outgoing_for_notice(session: Session, cfg: Config, case: Case, notice: Any,
                        payload: NoticePayload | None, known: Prefetched) -> Outgoing:
    """The outgoing mail a case notice (a case_notices row) asks for: recipients, threading,
    context, files."""
    message = known.messages.get(notice.message_row_id) if notice.message_row_id else None
    answered = message or known.first_message(case)
    fields = known.fields.get(case.id, {})
    context = base_context(cfg, case=case, message=answered, fields=fields)
    attachments: list[tuple[str, str, bytes]] = []
    cap_exempt = notice.template in ctx.CAP_EXEMPT
    blocked: str | None = None
    if notice.recipients == "form_address":
        to = fields.get("email") or ""
        if not to:
            blocked = "the form names no 邮件地址"
    else:
        to = (message.reply_address if message else None) or case.applicant_address or ""
        reason = message.no_reply_reason if message else None
        if reason in NEVER_ANSWER:
            blocked = f"never answered: {reason}"
    if notice.template in (ctx.INCOMPLETE, ctx.EXPIRED):
        context["findings"] = known.findings.get(case.id, [])
    if notice.template == ctx.EXPIRED:
        since = case.created_at
        context["days"] = max(0, (clock.now() - since).days) if since else 0
    if notice.template == ctx.REJECTED:
        context["reason"] = _audit_reason(session, notice) or ""
    if notice.template in (ctx.ISSUED, ctx.REVOKED):
        certs = _certificates(session, case, notice.template, payload)
        context.update(org_code=fields.get("org_code", ""),
                       certificates=[certificate_context(c) for c in certs],
                       root_chain_path=ctx.ROOT_CHAIN_PATH,
                       notice_filename=ctx.NOTICE_FILENAME)
        when = clock.local(notice.created_at or clock.now()).strftime("%Y-%m-%d %H:%M")
        if notice.template == ctx.ISSUED:
            context["issued_at"] = when
            attachments = _issued_files(cfg, certs, payload)
            if not any(name == ENVELOPE_FILENAME for name, _t, _d in attachments):
                blocked = "the envelope (envprivatekey) of this pair is not available"
        else:
            context["revoked_at"] = when
            context["reason"] = (certs[0].revocation_reason if certs else None) or "unspecified"
    return Outgoing(
        template=notice.template, from_addr=cfg.smtp.from_address, to_addrs=[to] if to else [],
        message_id=make_message_id(case.ref, cfg.smtp.message_id_domain),
        in_reply_to=answered.message_id if answered else None,
        references=[answered.message_id] if answered and answered.message_id else [],
        context=context, case_id=case.id, case_ref=case.ref,
        message_row_id=answered.id if answered else None, notice_id=notice.id,
        cap_exempt=cap_exempt, attachments=attachments, blocked=blocked)


def base_context(cfg: Config, *, case: Case | None, message: Message | Answered | None,
                 fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The keys every template gets (outbox/context.py)."""
    fields = fields or {}
    received = message.fetched_at if message is not None else None
    return {
        "ref": case.ref if case else None,
        "kind": case.kind if case else None,
        "company": fields.get("applicant_org") or (case.company if case else None),
        "received_at": clock.local(received).strftime("%Y-%m-%d %H:%M") if received else None,
        "original_subject": message.subject if message is not None else None,
        "mailbox": cfg.mailbox.our_address,
        "hotline": cfg.outbox.hotline,
        "office_hours": cfg.outbox.office_hours,
        "hall_address": cfg.outbox.hall_address,
    }


def certificate_context(cert: IssuedCertificate) -> dict[str, Any]:
    fingerprint = sm3(cert.der).hex().upper()
    return {
        "role": cert.kind,
        "filename": CERT_FILENAMES.get(cert.kind, f"{cert.kind}.cer"),
        "serial": cert.serial.upper(),
        "subject": cert.subject,
        "not_before": clock.local(cert.not_before).strftime("%Y-%m-%d %H:%M:%S"),
        "not_after": clock.local(cert.not_after).strftime("%Y-%m-%d %H:%M:%S"),
        "sm3_fingerprint": ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)),
    }


def _certificates(session: Session, case: Case, template: str,
                  payload: NoticePayload | None) -> list[IssuedCertificate]:
    """The pair the notice is about: from the transaction's payload, else (a notice queued
    late) the case's newest pair, or the certificates its revocation revoked."""
    if payload is not None and payload.certificates:
        certs = list(payload.certificates)
    else:
        query = select(IssuedCertificate).where(IssuedCertificate.case_ref == case.ref,
                                                IssuedCertificate.kind.in_(("sign", "enc")))
        if template == ctx.REVOKED:
            query = query.where(IssuedCertificate.revoked_at.is_not(None))
        newest: dict[str, IssuedCertificate] = {}
        for row in session.scalars(query.order_by(IssuedCertificate.id)):
            newest[row.kind] = row
        certs = list(newest.values())
    return sorted(certs, key=lambda c: (c.kind != "sign", c.id))


def _issued_files(cfg: Config, certs: Iterable[IssuedCertificate],
                  payload: NoticePayload | None) -> list[tuple[str, str, bytes]]:
    files = [(CERT_FILENAMES[c.kind], CERT_TYPE, encode(c.der, cfg.outbox.cert_encoding))
             for c in certs if c.kind in CERT_FILENAMES]
    if payload is not None and payload.envelope:
        files.append((ENVELOPE_FILENAME, ENVELOPE_TYPE,
                      encode(payload.envelope, cfg.outbox.envelope_encoding)))
    return files


def encode(der: bytes, encoding: str) -> bytes:
    """DER as it is, or its Base64 (64-character lines, as PEM bodies are written)."""
    if encoding != "base64":
        return der
    text = base64.b64encode(der).decode()
    return "".join(text[i:i + 64] + "\r\n" for i in range(0, len(text), 64)).encode()


def _audit_reason(session: Session, notice: Any) -> str | None:
    if not notice.audit_hash:
        return None
    entry = session.scalars(select(AuditEntry).where(AuditEntry.hash == notice.audit_hash)).first()
    return entry.reason if entry is not None else None


# -- unrelated mail -------------------------------------------------------------------------
def _unrelated_notice(session: Session, cfg: Config, message: Message, at: datetime) -> bool:
    """One short notice per sender per day for mail from a person that opens no case."""
    to = (message.reply_address or "").strip()
    if not to or message.no_reply_reason is not None:
        return False
    if sent_today(session, ctx.UNRELATED, to, at):
        return False
    domain = cfg.smtp.message_id_domain
    enqueue(session, Outgoing(
        template=ctx.UNRELATED, from_addr=cfg.smtp.from_address, to_addrs=[to],
        message_id=make_plain_message_id(domain),
        in_reply_to=message.message_id,
        references=[message.message_id] if message.message_id else [],
        context=base_context(cfg, case=None, message=message), case_id=None, case_ref=None,
        message_row_id=message.id, notice_id=None, cap_exempt=False, attachments=[]),
        our_addresses=our_addresses(cfg), daily_cap=cfg.outbox.daily_cap, now=at)
    return True
