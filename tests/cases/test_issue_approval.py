"""The cases' approval for issuing: approval_for_case refuses, CaseApprovalCheck confirms.

Moved from tests/pki/test_issue.py (test_refuses_without_approval), so the PKI's tests need no
cases: this is the case-backed half; the PKI's own refusals stay there with a StubCheck.
"""

from __future__ import annotations

import pytest

from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case
from mailbot.pki import sm2
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.signer import ApprovalRequired
from tests.support.cases import issue_approved

pytest_plugins = ["tests.support.pki_issue_fixtures"]


def test_refuses_without_approval(session, ca_state):
    pub = sm2.public_key_of(sm2.generate_private_key())
    with pytest.raises(ApprovalRequired):
        issue_approved(session, ca_state, "XM-2026-0099", pub, {"CN": "x"})  # no such case
    case = Case(ref="XM-2026-0005", kind="new", state="received", company="X")
    session.add(case)
    session.flush()
    with pytest.raises(ApprovalRequired, match="no approval"):
        issue_approved(session, ca_state, "XM-2026-0005", pub, {"CN": "x"})
    # an automatic actor is no approval
    append_audit(session, actor="system", action="approve", case=case, to_state="approved")
    with pytest.raises(ApprovalRequired, match="not a staff member"):
        issue_approved(session, ca_state, "XM-2026-0005", pub, {"CN": "x"})
    # an approval followed by a rejection no longer counts
    append_audit(session, actor="张三", action="approve", case=case, to_state="approved")
    case.state = "rejected"
    with pytest.raises(ApprovalRequired, match="rejected, not approved"):
        issue_approved(session, ca_state, "XM-2026-0005", pub, {"CN": "x"})
    case.state = "approved"
    assert issue_approved(session, ca_state, "XM-2026-0005", pub, {"CN": "x"}).sign_cert
    session.rollback()
    assert session.query(IssuedCertificate).count() == 0
