"""Case-backed helpers for the issuance tests: approvals through the cases' audit log.

`approved_case` makes a ``new`` case approved by a staff member (an audit row to
``approved``); `issue_approved` issues a pair under that case's approval, built by
`approval_for_case` and confirmed by `CaseApprovalCheck`, as mailbot.app wires them.

The PKI's own tests do not use these: they approve with `StubCheck` + `stub_approval`
(tests/support/pki_issue.py), so the PKI is tested without cases or app.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from mailbot.cases.approval import CaseApprovalCheck, approval_for_case
from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case
from mailbot.intake.facts import AttachmentFact
from mailbot.intake.models import Message
from mailbot.pki import issue
from mailbot.pki.ca import CaState


def approved_case(session: Session, ref: str, company: str = "厦门测试贸易有限公司",
                  staff: str = "张三") -> Case:
    case = Case(ref=ref, kind="new", state="awaiting_confirmation", company=company)
    session.add(case)
    session.flush()
    append_audit(session, actor=staff, action="approve", case=case,
                 from_state="awaiting_confirmation", to_state="approved")
    case.state = "approved"
    session.flush()
    return case


def issue_approved(session: Session, ca: CaState, ref: str, public_key: bytes,
                   subject: dict[str, str], **kwargs: object) -> issue.IssuedPair:
    """Issue under the case's approval from its audit log, checked by CaseApprovalCheck."""
    approval = approval_for_case(session, ref, public_key)
    return issue.issue_pair(session, ca, approval, CaseApprovalCheck(session), public_key,
                            subject, **kwargs)  # type: ignore[arg-type]


def recorded_message(session: Session, n: int) -> Message:
    """An archived message row (Maildir key k<n>), flushed, for the case store to record."""
    m = Message(source="maildir:/x", source_key=f"k{n}", size=100, message_id=f"<m{n}@x>")
    session.add(m)
    session.flush()
    return m


def attachment(name: str, *materials: str) -> AttachmentFact:
    """An attachment fact counting for `materials`."""
    return AttachmentFact(filename=name, content_type="application/pdf", size=10,
                          materials=list(materials), sha256="0" * 64)
