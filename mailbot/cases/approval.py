"""Approvals from the audit log: build the PKI's `Approval` for a case, and confirm one.

The authority for an end-entity signature is the audit_log row that moved the case to
``approved`` (actor = the staff member, time = when). The log is SM3-chained and append-only,
so no second approvals table can drift from it.

Who confirms what:

* `approval_for_case(session, case_ref, request_public_key)` picks the case's latest staff
  approval and puts the fingerprint of the request key into the `Approval`. Which request
  that is, is the caller's to say: mailbot.app.issuance.issue_for_case re-reads and re-checks
  the case's CSR (check_csr) at issuing time and passes its key here, and the signer then
  signs ``sign.cer`` only for the key with that fingerprint.
* `CaseApprovalCheck(session).confirm(approval)` is what the signer calls before every
  end-entity signature. In the caller's (signing) transaction it re-reads the audit row
  `approval.audit_id` and the case, and refuses unless the row belongs to the case
  `approval.case_ref`, moved it to ``approved``, was made by a staff member who is
  `approval.staff` at `approval.at`, still hashes to its recorded hash, no later row of the
  case has moved it elsewhere, and the case is a ``new`` application whose state is
  ``approved`` now.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.cases.audit import entry_digest
from mailbot.cases.models import AuditEntry, Case
from mailbot.cases.workflow import is_staff
from mailbot.pki.approval import Approval, check_approval, key_fingerprint
from mailbot.pki.errors import ApprovalRequired

APPROVED = "approved"


def _case_row(session: Session, case_ref: str,
              lock: bool = False) -> tuple[int, str, str] | None:
    # columns, not the ORM object: the values as the database has them in this transaction
    q = select(Case.id, Case.state, Case.kind).where(Case.ref == case_ref)
    if lock:
        # PostgreSQL: a staff action on the case waits until the signing transaction ends
        # (SQLite's writers take turns for the whole file anyway).
        q = q.with_for_update()
    row = session.execute(q).first()
    return None if row is None else (row.id, row.state, row.kind)


def _latest_state_change(session: Session, case_id: int) -> int | None:
    return session.scalars(select(AuditEntry.id).where(
        AuditEntry.case_id == case_id, AuditEntry.to_state.is_not(None))
        .order_by(AuditEntry.id.desc()).limit(1)).first()


def approval_for_case(session: Session, case_ref: str, request_public_key: bytes) -> Approval:
    """The case's standing staff approval, for the request with this key; ApprovalRequired."""
    found = _case_row(session, case_ref)
    if found is None:
        raise ApprovalRequired(f"no case {case_ref}: nothing to issue under")
    case_id, state, kind = found
    row = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.case_id == case_id, AuditEntry.to_state == APPROVED)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    if row is None:
        raise ApprovalRequired(f"case {case_ref} has no approval in its audit log")
    if not is_staff(row.actor):
        raise ApprovalRequired(f"case {case_ref} was moved to approved by {row.actor!r}, "
                               "which is not a staff member")
    if state != APPROVED:
        raise ApprovalRequired(f"case {case_ref} is {state}, not approved: "
                               "an earlier approval does not count")
    if kind != "new":
        raise ApprovalRequired(f"case {case_ref} is a {kind} application: it issues nothing")
    return Approval(case_ref=case_ref, staff=row.actor, at=row.at, audit_id=row.id,
                    key_fingerprint=key_fingerprint(request_public_key))


class CaseApprovalCheck:
    """The cases' ApprovalCheck, bound to the session the signing transaction runs in."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def confirm(self, approval: Approval) -> None:
        approval = check_approval(approval)
        ref = approval.case_ref

        def refuse(why: str) -> ApprovalRequired:
            return ApprovalRequired(f"approval {approval.audit_id} of {ref} not confirmed: {why}")

        self.session.flush()  # what this transaction changed counts
        found = _case_row(self.session, ref, lock=True)
        if found is None:
            raise refuse("no such case")
        case_id, state, kind = found
        row = self.session.execute(select(AuditEntry).where(AuditEntry.id == approval.audit_id)
                                   .execution_options(populate_existing=True)).scalars().first()
        if row is None:
            raise refuse("no such audit row")
        if row.case_id != case_id:
            raise refuse("the audit row belongs to another case")
        if row.to_state != APPROVED:
            raise refuse(f"the audit row moved the case to {row.to_state!r}, not approved")
        if not is_staff(row.actor):
            raise refuse(f"the audit row was made by {row.actor!r}, not a staff member")
        if row.actor != approval.staff:
            raise refuse(f"the case was approved by {row.actor!r}, not {approval.staff!r}")
        if row.at != approval.at:
            raise refuse("the approval time does not match the audit row")
        if entry_digest(row) != row.hash:
            raise refuse("the audit row does not match its hash (run `mailbot audit verify`)")
        latest = _latest_state_change(self.session, case_id)
        if latest != row.id:
            raise refuse(f"a later audit row ({latest}) moved the case on")
        if state != APPROVED:
            raise refuse(f"the case is {state} now, not approved")
        if kind != "new":
            raise refuse(f"the case is a {kind} application: it issues nothing")

