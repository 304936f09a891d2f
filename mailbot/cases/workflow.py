"""The case workflow: the only writer of a case's state.

One table, `TRANSITIONS`, says which state may follow which, for which kind of case, who may
take the step (anyone, or only a staff member) and what it asks to be sent (a `Notice`: a
template and a kind of recipient). `transition` refuses anything else (`TransitionRefused`),
writes the audit row (who, when, from, to, why, via) and records the notice in
`case_notices` for the outbox. The staff actions (confirm, approve, reject, close, edit,
override, called, the key-loss mark) and the system's (reassess after a reply, expire) are
built on it.

`assess` is the one place that decides between ``incomplete`` and
``awaiting_confirmation`` from a case's findings and materials. An edit or an override runs
the rules again on the whole case first (mailbot.cases.verdict.reevaluate), as a reply does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailbot.cases import verdict
from mailbot.cases.audit import KEY_LOST, VIA, append_audit, key_lost_mark
from mailbot.cases.models import (
    CASE_STATES,
    Attachment,
    AuditEntry,
    Case,
    CaseField,
    CaseFinding,
    CaseNotice,
)
from mailbot.clock import now
from mailbot.intake.facts import FORM_KEYS
from mailbot.intake.models import Message
from mailbot.rules.materials import REQUIRED_MATERIALS, missing_material, missing_of

# States in which the case can still change by a reply, an edit or an override.
OPEN_STATES = ("received", "incomplete", "awaiting_confirmation")
# States before anything was issued or revoked: staff can still act on the case's outcome.
PENDING_STATES = (*OPEN_STATES, "approved")
# Findings that make a pending case urgent for staff (须知四: revoke at once, keyCompromise).
URGENT_CODES = ("key_compromise",)
BLOCKING = ("reject", "missing")  # finding severities that block approval
SYSTEM = "system"


class TransitionRefused(Exception):
    """The case's state (or who asks) does not allow this step; one readable line."""


@dataclass(frozen=True)
class Notice:
    """What should be sent: a template, to the applicant's address (`sender`, Reply-To
    first) or to the form's 邮件地址 (`form_address`)."""

    template: str
    recipients: str  # sender | form_address


ACKNOWLEDGEMENT = Notice("acknowledgement", "sender")
INCOMPLETE = Notice("incomplete", "sender")
REJECTED = Notice("rejected", "sender")
EXPIRED = Notice("expired", "sender")
ISSUED = Notice("issued", "form_address")
REVOKED = Notice("revoked", "form_address")


@dataclass(frozen=True)
class Edge:
    notice: Notice | None = None
    staff: bool = False  # only a staff member (a name, not `system` or a message) may take it
    kinds: tuple[str, ...] = ("new", "revoke")


_STAFF = Edge(staff=True)
_REJECT = Edge(REJECTED, staff=True)
TRANSITIONS: dict[tuple[str, str], Edge] = {
    ("received", "incomplete"): Edge(INCOMPLETE),
    ("received", "awaiting_confirmation"): Edge(ACKNOWLEDGEMENT),
    ("received", "rejected"): _REJECT,
    ("received", "closed"): _STAFF,
    ("incomplete", "awaiting_confirmation"): Edge(ACKNOWLEDGEMENT),
    ("incomplete", "expired"): Edge(EXPIRED),
    ("incomplete", "rejected"): _REJECT,
    ("incomplete", "closed"): _STAFF,
    ("awaiting_confirmation", "incomplete"): Edge(INCOMPLETE),
    ("awaiting_confirmation", "approved"): _STAFF,
    ("awaiting_confirmation", "rejected"): _REJECT,
    ("awaiting_confirmation", "closed"): _STAFF,
    ("approved", "issued"): Edge(ISSUED, kinds=("new",)),
    ("approved", "revoked"): Edge(REVOKED, kinds=("revoke",)),
    ("approved", "rejected"): _REJECT,  # before issuance anyone's rejection still ends it
    ("approved", "closed"): _STAFF,
    ("issued", "delivered"): Edge(),
    ("issued", "closed"): _STAFF,
    ("revoked", "delivered"): Edge(),
    ("revoked", "closed"): _STAFF,
}
# What a verdict of `assess` tells the person whose message asked for it.
_REASON = {"incomplete": "materials or request need fixing",
           "awaiting_confirmation": "materials complete; waiting for the phone confirmation"}


@dataclass(frozen=True)
class Policy:
    """The [cases] settings the workflow needs."""

    approvals_required: int = 1
    incomplete_expiry_days: int = 30
    mailbox_actor: str = "mailbox"
    reject_reason: str = "退回：申请材料不符合要求"

    @classmethod
    def from_config(cls, cases: Any) -> Policy:
        return cls(approvals_required=cases.approvals_required,
                   incomplete_expiry_days=cases.incomplete_expiry_days,
                   mailbox_actor=cases.mailbox_actor, reject_reason=cases.reject_reason)


def is_staff(actor: str) -> bool:
    """Staff give a name (--by NAME); the automatic actors are `system` and `message:<id>`."""
    actor = (actor or "").strip()
    return bool(actor) and actor != SYSTEM and not actor.startswith("message:")


def refusal(case: Case, target: str, actor: str) -> str | None:
    """Why `actor` may not move `case` to `target` now; None when allowed."""
    if target not in CASE_STATES:
        return f"unknown state {target!r}"
    edge = TRANSITIONS.get((case.state, target))
    if edge is None:
        return f"case {case.ref} is {case.state}: it cannot become {target}"
    if case.kind not in edge.kinds:
        return f"case {case.ref} is a {case.kind} application: it cannot become {target}"
    if edge.staff and not is_staff(actor):
        return f"only a staff member may make case {case.ref} {target}, not {actor!r}"
    return None


def _via(via: str) -> str:
    if via not in VIA:
        raise ValueError(f"unknown channel {via!r}: one of {', '.join(VIA)}")
    return via


def _set_state(case: Case, target: str) -> None:
    case.state = target
    case.state_changed_at = now()


def record_notice(session: Session, case: Case, notice: Notice, *,
                  audit_hash: str | None = None, message_row_id: int | None = None) -> None:
    session.add(CaseNotice(case_id=case.id, template=notice.template,
                           recipients=notice.recipients, audit_hash=audit_hash,
                           message_row_id=message_row_id))


def transition(session: Session, case: Case, target: str, *, actor: str, via: str,
               reason: str | None = None, action: str | None = None,
               message_row_id: int | None = None) -> Notice | None:
    """Move `case` to `target` (TransitionRefused unless the table allows it), with its audit
    row and the notice it asks for (recorded, and returned). Flushed by the caller's work."""
    why = refusal(case, target, actor)
    if why:
        raise TransitionRefused(why)
    edge = TRANSITIONS[(case.state, target)]
    entry = append_audit(session, actor=actor.strip(), action=action or target, case=case,
                         from_state=case.state, to_state=target, reason=reason, via=_via(via))
    _set_state(case, target)
    if edge.notice is not None:
        record_notice(session, case, edge.notice, audit_hash=entry.hash,
                      message_row_id=message_row_id)
    return edge.notice


# -- intake's first verdict, written in bulk by CaseStore.record_many -----------------------
def initial_state(severities: Iterable[str]) -> str:
    """A new case's state from its first findings: incomplete while any of them blocks."""
    return "incomplete" if any(s in BLOCKING for s in severities) else "awaiting_confirmation"


def opening_rows(case: Case, message_id: int) -> tuple[list[dict[str, object]], Notice | None]:
    """The audit rows of a case opened by mail (received, then the intake check's verdict
    `case.state`) and the notice the verdict asks for; for writing in bulk."""
    edge = TRANSITIONS.get(("received", case.state))
    if edge is None or edge.staff:
        raise TransitionRefused(f"a new case cannot open as {case.state}")
    rows: list[dict[str, object]] = [
        {"case_id": case.id, "actor": f"message:{message_id}", "action": "open",
         "to_state": "received", "reason": f"{case.kind} application by mail", "via": SYSTEM},
        {"case_id": case.id, "actor": SYSTEM, "action": "intake_check",
         "from_state": "received", "to_state": case.state, "reason": _REASON[case.state],
         "via": SYSTEM},
    ]
    return rows, edge.notice


# -- the verdict ----------------------------------------------------------------------------
def open_findings(case: Case) -> list[CaseFinding]:
    return [f for f in case.findings if f.resolved_at is None and f.overridden_by is None]


def blocking_findings(case: Case) -> list[CaseFinding]:
    return [f for f in open_findings(case) if f.severity in BLOCKING]


def is_urgent(case: Case) -> bool:
    """A pending case with an open finding of URGENT_CODES (a lost, leaked or damaged key)."""
    return case.state in PENDING_STATES and any(f.code in URGENT_CODES
                                                for f in open_findings(case))


def urgent_case_ids(session: Session) -> set[int]:
    """The ids of every urgent case (is_urgent), in one query."""
    return set(session.scalars(
        select(CaseFinding.case_id).join(Case, Case.id == CaseFinding.case_id)
        .where(CaseFinding.code.in_(URGENT_CODES), CaseFinding.resolved_at.is_(None),
               CaseFinding.overridden_by.is_(None), Case.state.in_(PENDING_STATES))))


def materials_present(session: Session, case: Case) -> set[str]:
    rows = session.scalars(
        select(Attachment.materials).join(Message).where(Message.case_id == case.id))
    return {m for materials in rows for m in (materials or [])}


def assess(session: Session, case: Case,
           required: Mapping[str, Sequence[str]] | None = None) -> str:
    """The state a case's findings call for: ``incomplete`` or ``awaiting_confirmation``.

    Brings the missing-material findings in line with every file of the case first (one per
    absent material; resolved once it came; one staff overrode stays overridden).
    """
    session.flush()  # files just recorded count too
    req = {k: tuple(v) for k, v in (required or REQUIRED_MATERIALS).items()}
    missing = missing_of(case.kind, materials_present(session, case), req)
    unresolved = {f.facts.get("material"): f for f in case.findings
                  if f.code == "missing_material" and f.resolved_at is None}
    for material, f in unresolved.items():
        if material not in missing:
            f.resolved_at = now()
    for material in missing:
        if material not in unresolved:
            m = missing_material(material)
            case.findings.append(CaseFinding(code=m.code, severity=m.severity, detail=m.detail,
                                             facts=dict(m.facts)))
    return "incomplete" if blocking_findings(case) else "awaiting_confirmation"


def reassess(session: Session, case: Case, *, actor: str, via: str,
             required: Mapping[str, Sequence[str]] | None = None,
             message_row_id: int | None = None, why: str | None = None) -> Notice | None:
    """Assess again (after a reply, an edit, an override) and move the case if it must.

    A message is answered once whatever happens: its notice is the transition's, or, when
    the state stays, the acknowledgement or incomplete notice again.
    """
    if case.state not in OPEN_STATES:
        return None
    target = assess(session, case, required)
    if target != case.state and (case.state, target) in TRANSITIONS:
        reason = _REASON[target] + (f" ({why})" if why else "")
        notice = transition(session, case, target, actor=actor, via=via, reason=reason,
                            action="intake_check" if not is_staff(actor) else "reassess",
                            message_row_id=message_row_id)
        if notice is not None or message_row_id is None:
            return notice
    if message_row_id is None:
        return None
    notice = INCOMPLETE if case.state == "incomplete" else ACKNOWLEDGEMENT
    record_notice(session, case, notice, message_row_id=message_row_id)
    return notice


# -- staff actions --------------------------------------------------------------------------
def _staff(by: str) -> str:
    name = (by or "").strip()
    if not is_staff(name):
        raise TransitionRefused(f"{by!r} is not a staff member's name")
    return name


def _need_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise TransitionRefused("a reason is required")
    return text


def _need_open(case: Case, what: str) -> None:
    if case.state not in OPEN_STATES:
        raise TransitionRefused(f"case {case.ref} is {case.state}: cannot {what} it now")


def confirm(session: Session, case: Case, *, by: str, via: str = "cli") -> None:
    """The phone confirmation is done (recorded on the case and in the log)."""
    name = _staff(by)
    _need_open(case, "confirm")
    if case.confirmed_at is not None:
        raise TransitionRefused(f"case {case.ref} was confirmed by {case.confirmed_by} "
                                f"at {case.confirmed_at:%Y-%m-%d %H:%M}")
    append_audit(session, actor=name, action="confirm", case=case,
                 reason="phone confirmation done", via=_via(via))
    case.confirmed_at, case.confirmed_by = now(), name


def approvals_so_far(session: Session, case: Case) -> list[str]:
    """Who approved since the case last changed state (an earlier round does not count)."""
    session.flush()
    last = session.scalar(select(func.max(AuditEntry.id)).where(
        AuditEntry.case_id == case.id, AuditEntry.to_state.is_not(None)))
    q = select(AuditEntry.actor).where(AuditEntry.case_id == case.id,
                                       AuditEntry.action == "approve",
                                       AuditEntry.to_state.is_(None))
    if last is not None:
        q = q.where(AuditEntry.id > last)
    return list(session.scalars(q.order_by(AuditEntry.id)))


CHECKLIST = {"stamps_ok": "stamps on form and licence", "signature_ok": "signature under 承诺声明",
             "server_device": "a server cipher device", "eport_access": "entitled to E-Port access"}


def approve(session: Session, case: Case, *, by: str, via: str = "cli",
            policy: Policy = Policy(), checklist: Iterable[str] = ()) -> Notice | None:
    """One staff approval ("confirmed by phone and approved"). With approvals_required = 2
    the first is recorded and the second, by someone else, moves the case to approved.
    Refused while a blocking finding is open and not overridden."""
    name = _staff(by)
    if case.state == "approved":
        raise TransitionRefused(f"case {case.ref} is already approved")
    why = refusal(case, "approved", name)
    if why:
        raise TransitionRefused(why)
    blocking = blocking_findings(case)
    if blocking:
        codes = ", ".join(sorted({f.code for f in blocking}))
        raise TransitionRefused(f"case {case.ref} has open blocking findings ({codes}): fix or "
                                "override them first")
    checks = [c for c in checklist]
    unknown = [c for c in checks if c not in CHECKLIST]
    if unknown:
        raise ValueError(f"unknown checklist item(s): {', '.join(unknown)}")
    before = approvals_so_far(session, case)
    if name in before:
        raise TransitionRefused(f"{name} has already approved case {case.ref}: another staff "
                                "member must approve it")
    count = len(before) + 1
    needed = max(1, policy.approvals_required)
    reason = "confirmed by phone and approved"
    if needed > 1:
        reason += f" ({count} of {needed})"
    if checks:
        reason += "; checked: " + ", ".join(checks)
    if case.confirmed_at is None:
        case.confirmed_at, case.confirmed_by = now(), name
    if count < needed:
        append_audit(session, actor=name, action="approve", case=case, reason=reason,
                     via=_via(via))
        return None
    return transition(session, case, "approved", actor=name, via=via, reason=reason,
                      action="approve")


def reject(session: Session, case: Case, *, by: str, reason: str | None,
           via: str = "cli") -> Notice | None:
    return transition(session, case, "rejected", actor=_staff(by), via=via,
                      reason=_need_reason(reason), action="reject")


def close(session: Session, case: Case, *, by: str, reason: str | None,
          via: str = "cli") -> Notice | None:
    return transition(session, case, "closed", actor=_staff(by), via=via,
                      reason=_need_reason(reason), action="close")


def _rules_again(session: Session, case: Case, why: str, settings: Any,
                 ca_public_keys: Iterable[bytes], only: Iterable[str] | None = None) -> str:
    """Run the rules (or those named in `only`) again on the case (its open findings follow
    them; overridden ones stay); `why` with what changed, for the reassessment's audit row."""
    _result, resolved, added = verdict.reevaluate(session, case, settings=settings,
                                                  ca_public_keys=ca_public_keys, only=only)
    changed = verdict.summary(resolved, added)
    return f"{why}; {changed}" if changed else why


def edit(session: Session, case: Case, values: Mapping[str, str], *, by: str, via: str = "cli",
         required: Mapping[str, Sequence[str]] | None = None, settings: Any = None,
         ca_public_keys: Iterable[bytes] = ()) -> Notice | None:
    """Staff type in form fields (they win over later forms); then the rules run again on
    the case (`settings`: the rules' settings, None for the shipped ones; `ca_public_keys`
    the CA's key(s)) and it is assessed again."""
    name = _staff(by)
    _need_open(case, "edit")
    unknown = [k for k in values if k not in FORM_KEYS]
    if unknown:
        raise ValueError(f"unknown form key(s): {', '.join(unknown)} (one of "
                         f"{', '.join(FORM_KEYS)})")
    current = {f.key: f for f in case.fields}
    changes = []
    for key, value in values.items():
        value = value.strip()
        field = current.get(key)
        old = field.value if field is not None else None
        if field is None:
            field = CaseField(key=key, value=value)
            case.fields.append(field)
        field.value, field.source, field.set_by, field.set_at = value, "staff", name, now()
        field.message_row_id = None
        if key == "applicant_org" and value:
            case.company = value
        changes.append(f"{key}: {old!r} -> {value!r}")
    append_audit(session, actor=name, action="edit", case=case, reason="; ".join(changes),
                 via=_via(via))
    why = _rules_again(session, case, "edited", settings, ca_public_keys)
    return reassess(session, case, actor=name, via=via, required=required, why=why)


def override(session: Session, case: Case, code: str, *, by: str, reason: str | None,
             via: str = "cli", required: Mapping[str, Sequence[str]] | None = None,
             settings: Any = None, ca_public_keys: Iterable[bytes] = ()) -> Notice | None:
    """Mark the open findings of `code` overridden (with the reason); then the rules run
    again (an overridden finding is never reopened nor raised again) and the case is
    assessed again."""
    name = _staff(by)
    text = _need_reason(reason)
    _need_open(case, "override findings of")
    hits = [f for f in open_findings(case) if f.code == code]
    if not hits:
        raise TransitionRefused(f"case {case.ref} has no open finding {code!r}")
    for f in hits:
        f.overridden_by, f.override_reason = name, text
    append_audit(session, actor=name, action="override", case=case,
                 reason=f"{code} ({len(hits)}): {text}", via=_via(via))
    why = _rules_again(session, case, f"{code} overridden", settings, ca_public_keys)
    return reassess(session, case, actor=name, via=via, required=required, why=why)


def mark_key_lost(session: Session, case: Case, *, by: str, reason: str | None = None,
                  via: str = "cli", required: Mapping[str, Sequence[str]] | None = None,
                  settings: Any = None, ca_public_keys: Iterable[bytes] = ()) -> Notice | None:
    """Staff mark a revocation's key lost, leaked or damaged (须知四, told by phone or seen on
    the form): the audit row `key_lost` is the mark, read by the case view; then the rules run
    again, so `key_compromise` is found (urgent; the revocation takes reason keyCompromise).
    Once per case, and only before the revocation is done; an approved case's verdict is
    settled, so there only key_compromise runs."""
    name = _staff(by)
    if case.kind != "revoke":
        raise TransitionRefused(f"case {case.ref} is a {case.kind} application: only a "
                                "revocation (注销) can be marked key lost")
    if case.state not in PENDING_STATES:
        raise TransitionRefused(f"case {case.ref} is {case.state}: too late to mark the key "
                                "lost")
    mark = key_lost_mark(session, case)
    if mark is not None:
        raise TransitionRefused(f"case {case.ref} was marked key lost by {mark.actor} "
                                f"at {mark.at:%Y-%m-%d %H:%M}")
    text = (reason or "").strip() or "key lost, leaked or damaged (须知四)"
    append_audit(session, actor=name, action=KEY_LOST, case=case, reason=text, via=_via(via))
    only = None if case.state in OPEN_STATES else ("key_compromise",)
    why = _rules_again(session, case, "key marked lost", settings, ca_public_keys, only)
    return reassess(session, case, actor=name, via=via, required=required, why=why)


def called(session: Session, case: Case, *, by: str, via: str = "cli") -> None:
    """The handler was called after delivery: the case leaves the to-call list."""
    name = _staff(by)
    if case.state != "delivered":
        raise TransitionRefused(f"case {case.ref} is {case.state}: only a delivered case "
                                "waits for the call")
    if case.called_at is not None:
        raise TransitionRefused(f"case {case.ref} was called by {case.called_by} "
                                f"at {case.called_at:%Y-%m-%d %H:%M}")
    append_audit(session, actor=name, action="called", case=case,
                 reason="handler called after delivery", via=_via(via))
    case.called_at, case.called_by = now(), name


def expire_incomplete(session: Session, policy: Policy = Policy()) -> list[Case]:
    """Cases incomplete for longer than incomplete_expiry_days become expired (0: never)."""
    days = policy.incomplete_expiry_days
    if days <= 0:
        return []
    cutoff = now() - timedelta(days=days)
    since = func.coalesce(Case.state_changed_at, Case.updated_at)
    due = list(session.scalars(select(Case).where(Case.state == "incomplete", since <= cutoff)
                               .order_by(Case.id)))
    for case in due:
        transition(session, case, "expired", actor=SYSTEM, via=SYSTEM, action="expire",
                   reason=f"incomplete for more than {days} days")
    return due


def to_call(session: Session) -> list[Case]:
    """Delivered cases whose handler has not been called yet."""
    return list(session.scalars(select(Case).where(Case.state == "delivered",
                                                   Case.called_at.is_(None)).order_by(Case.id)))


def case_for_update(session: Session, ref: str) -> Case | None:
    """The case, its row locked until commit (PostgreSQL; SQLite writers take turns)."""
    return session.scalars(select(Case).where(Case.ref == ref.strip().upper())
                           .with_for_update()).first()
