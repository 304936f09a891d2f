"""The cases' approval check: the signer signs only under a staff approval that still stands.

Each refusal the issue names is its own test; the approval is re-read from the audit log in
the signing transaction, so a hand-made `Approval` and a case moved on are both refused.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from asn1crypto import pem
from sqlalchemy import select

from mailbot.app.issuance import ISSUE_ACTION, issue_for_case
from mailbot.app.revocation import REVOKE_ACTION, revoke_certificate
from mailbot.cases.approval import CaseApprovalCheck, approval_for_case
from mailbot.cases.audit import append_audit, verify_chain
from mailbot.cases.models import AuditEntry, Case
from mailbot.pki import issue, sm2
from mailbot.pki.approval import Approval, key_fingerprint
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.signer import ApprovalRequired, Issuance
from tests.support.cases import approved_case
from tests.support.pki_issue import openssl

pytest_plugins = ["tests.support.pki_issue_fixtures"]


def _pub() -> bytes:
    return sm2.public_key_of(sm2.generate_private_key())


def _issue(session, ca_state, approval, pub):  # type: ignore[no-untyped-def]
    return issue.issue_pair(session, ca_state, approval, CaseApprovalCheck(session), pub,
                            {"CN": "x"})


def _no_certificates(session) -> bool:  # type: ignore[no-untyped-def]
    session.rollback()
    return session.query(IssuedCertificate).count() == 0


@pytest.mark.timeout(120)
def test_legitimate_approval_issues_a_pair_openssl_accepts(session, ca_state, ca_pem, user_csr,
                                                           tmp_path):
    case = approved_case(session, "XM-2026-0501")
    pair = issue_for_case(session, ca_state, "XM-2026-0501", user_csr[1].read_bytes(),
                          crl_url="http://xmport.example.cn/crl/ca.crl")
    session.commit()
    for name, der in (("sign.pem", pair.sign_cert), ("enc.pem", pair.enc_cert)):
        (tmp_path / name).write_bytes(pem.armor("CERTIFICATE", der))
        res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", str(ca_pem),
                      name, cwd=tmp_path)
        assert res.stdout.decode().strip() == f"{name}: OK"
    assert pair.approval.staff == "张三" and pair.approval.case_ref == "XM-2026-0501"
    # the case side records which certificates the case got; the PKI rows name no audit table
    entry = session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id,
                                                     AuditEntry.action == ISSUE_ACTION)).one()
    assert pair.sign_serial in entry.reason and pair.enc_serial in entry.reason
    rows = session.query(IssuedCertificate).filter_by(case_ref="XM-2026-0501").all()
    assert {r.kind for r in rows} == {"sign", "enc"}
    assert {r.approval_audit_id for r in rows} == {pair.approval.audit_id}
    assert verify_chain(session).ok
    # the same approval issues no second pair, even from a fresh request
    with pytest.raises(ApprovalRequired, match="one approval gives one pair"):
        issue.issue_pair(session, ca_state, replace(pair.approval,
                                                    key_fingerprint=key_fingerprint(pub := _pub())),
                         CaseApprovalCheck(session), pub, {"CN": "again"})


def test_refuses_a_handmade_approval_with_a_wrong_audit_id(session, ca_state):
    pub = _pub()
    case = approved_case(session, "XM-2026-0502")
    good = approval_for_case(session, "XM-2026-0502", pub)
    note = append_audit(session, actor="张三", action="note", case=case, reason="called")
    session.flush()
    for audit_id in (good.audit_id + 10_000, note.id):
        with pytest.raises(ApprovalRequired, match="not confirmed"):
            _issue(session, ca_state, replace(good, audit_id=audit_id), pub)
    assert _no_certificates(session)


def test_refuses_a_handmade_approval_with_a_wrong_staff(session, ca_state):
    pub = _pub()
    approved_case(session, "XM-2026-0503", staff="张三")
    good = approval_for_case(session, "XM-2026-0503", pub)
    with pytest.raises(ApprovalRequired, match="not '李四'"):
        _issue(session, ca_state, replace(good, staff="李四"), pub)
    with pytest.raises(ApprovalRequired, match="approval time"):
        _issue(session, ca_state, replace(good, at=good.at.replace(year=2020)), pub)
    assert _no_certificates(session)


def test_refuses_a_handmade_approval_for_a_wrong_case(session, ca_state):
    pub = _pub()
    approved_case(session, "XM-2026-0504")
    approved_case(session, "XM-2026-0505")
    of_0504 = approval_for_case(session, "XM-2026-0504", pub)
    # case 0505 is approved too, but 0504's audit row is no approval of it
    with pytest.raises(ApprovalRequired, match="belongs to another case"):
        _issue(session, ca_state, replace(of_0504, case_ref="XM-2026-0505"), pub)
    with pytest.raises(ApprovalRequired, match="no such case"):
        _issue(session, ca_state, replace(of_0504, case_ref="XM-2026-0999"), pub)
    assert _no_certificates(session)


def test_refuses_an_approval_made_by_no_staff_member(session, ca_state):
    pub = _pub()
    case = Case(ref="XM-2026-0506", kind="new", state="approved", company="X")
    session.add(case)
    session.flush()
    row = append_audit(session, actor="system", action="approve", case=case,
                       from_state="awaiting_confirmation", to_state="approved")
    session.flush()
    with pytest.raises(ApprovalRequired, match="not a staff member"):
        approval_for_case(session, "XM-2026-0506", pub)
    handmade = Approval(case_ref="XM-2026-0506", staff="system", at=row.at, audit_id=row.id,
                        key_fingerprint=key_fingerprint(pub))
    with pytest.raises(ApprovalRequired, match="not a staff member"):
        _issue(session, ca_state, handmade, pub)
    assert _no_certificates(session)


def test_refuses_an_approval_for_a_case_no_longer_approved(session, ca_state):
    pub = _pub()
    case = approved_case(session, "XM-2026-0508")
    approval = approval_for_case(session, "XM-2026-0508", pub)
    session.commit()
    # staff take it back after the approval was read: the signing transaction sees it
    append_audit(session, actor="李四", action="reject", case=case, from_state="approved",
                 to_state="rejected", reason="wrong company")
    case.state = "rejected"
    with pytest.raises(ApprovalRequired, match="later audit row"):
        _issue(session, ca_state, approval, pub)
    assert _no_certificates(session)
    # a state changed without its audit row is refused as well
    case.state = "closed"
    session.flush()
    with pytest.raises(ApprovalRequired, match="is closed now"):
        _issue(session, ca_state, approval, pub)
    assert _no_certificates(session)
    # and building an approval for it now fails too
    case.state = "rejected"
    with pytest.raises(ApprovalRequired, match="rejected, not approved"):
        approval_for_case(session, "XM-2026-0508", pub)


def test_refuses_when_the_case_moves_on_between_the_two_signatures(session, ca_state,
                                                                   monkeypatch):
    pub = _pub()
    case = approved_case(session, "XM-2026-0509")
    approval = approval_for_case(session, "XM-2026-0509", pub)
    made = Issuance.make_encryption_key

    def reject_meanwhile(self, request_public_key):  # type: ignore[no-untyped-def]
        append_audit(session, actor="李四", action="reject", case=case,
                     from_state="approved", to_state="rejected")
        case.state = "rejected"
        return made(self, request_public_key)

    monkeypatch.setattr(Issuance, "make_encryption_key", reject_meanwhile)
    with pytest.raises(ApprovalRequired, match="later audit row"):
        _issue(session, ca_state, approval, pub)
    assert _no_certificates(session)


def test_revoke_case_issues_nothing(session, ca_state):
    pub = _pub()
    case = Case(ref="XM-2026-0510", kind="revoke", state="awaiting_confirmation", company="X")
    session.add(case)
    session.flush()
    append_audit(session, actor="张三", action="approve", case=case,
                 from_state="awaiting_confirmation", to_state="approved")
    case.state = "approved"
    with pytest.raises(ApprovalRequired, match="revoke application"):
        approval_for_case(session, "XM-2026-0510", pub)


def test_revocation_is_audited_by_the_case_side(session, ca_state):
    pub = _pub()
    case = approved_case(session, "XM-2026-0511")
    pair = _issue(session, ca_state, approval_for_case(session, "XM-2026-0511", pub), pub)
    session.commit()
    row = revoke_certificate(session, ca_state, pair.sign_serial, reason="keyCompromise",
                             by=" 王五 ")
    session.commit()
    assert row.revoked_by == "王五" and row.revocation_reason == "keyCompromise"
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == REVOKE_ACTION)).one()
    assert entry.case_id == case.id and entry.actor == "王五"
    assert pair.sign_serial in entry.reason and "keyCompromise" in entry.reason
    assert verify_chain(session).ok
