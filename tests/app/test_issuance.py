"""Issuing for a case: mailbot.app.issuance.issue_for_case, the cases' approval handed to the PKI.

Moved from tests/pki (test_issue.py, test_envelope.py), which now test the PKI alone with stub
approvals; here the same requests go through the case, its audit log and CaseApprovalCheck.
tests/cases/test_approval.py has the refusals of the cases' check.
"""

from __future__ import annotations

import pytest
from asn1crypto import pem, x509
from sqlalchemy import select

from mailbot.app.issuance import ISSUE_ACTION, issue_for_case
from mailbot.cases.models import AuditEntry
from mailbot.pki import issue
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.signer import ApprovalRequired
from tests.support.cases import approved_case
from tests.support.pki_issue import assert_envelope_opens_with_openssl, openssl

pytest_plugins = ["tests.support.pki_issue_fixtures"]  # session-scoped CA, applicant CSR

CRL_URL = "http://xmport.example.cn/crl/ca.crl"


@pytest.mark.timeout(120)
def test_openssl_csr_to_pair_for_the_case(session, ca_state, ca_pem, user_csr, tmp_path):
    """From test_issue.py's `pair`: the case's OpenSSL request, issued under its approval."""
    case = approved_case(session, "XM-2026-0001")
    pair = issue_for_case(session, ca_state, "XM-2026-0001", user_csr[1].read_bytes(),
                          company="Xiamen Test Trading", crl_url=CRL_URL)
    session.commit()
    for name, der in (("sign.pem", pair.sign_cert), ("enc.pem", pair.enc_cert)):
        (tmp_path / name).write_bytes(pem.armor("CERTIFICATE", der))
        ok = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", str(ca_pem),
                     name, cwd=tmp_path)
        assert ok.stdout.decode().strip().endswith(": OK")
        text = openssl("x509", "-in", name, "-noout", "-text", cwd=tmp_path).stdout.decode()
        # the vetted names, not the request's OU=IT, CN=alice
        assert "Subject: C = CN, O = Xiamen Test Trading, CN = Xiamen Test Trading\n" in text
        assert f"URI:{CRL_URL}" in text
    user_pub = openssl("pkey", "-in", str(user_csr[0]), "-pubout").stdout
    assert openssl("x509", "-in", "sign.pem", "-noout", "-pubkey", cwd=tmp_path).stdout == user_pub
    assert pair.case_ref == "XM-2026-0001" and pair.approval.staff == "张三"
    rows = session.query(IssuedCertificate).filter_by(case_ref="XM-2026-0001").all()
    assert {r.kind for r in rows} == {"sign", "enc"}
    entry = session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id,
                                                     AuditEntry.action == ISSUE_ACTION)).one()
    assert pair.sign_serial in entry.reason and pair.enc_serial in entry.reason


def test_company_defaults_to_the_cases(session, ca_state, user_csr):
    approved_case(session, "XM-2026-0010", company="厦门某某报关有限公司")
    pair = issue_for_case(session, ca_state, "XM-2026-0010", user_csr[1].read_bytes())
    subject = x509.Certificate.load(pair.sign_cert).subject.native
    assert subject["organization_name"] == "厦门某某报关有限公司"
    assert subject["common_name"] == "厦门某某报关有限公司"  # not the request's CN=alice
    assert "organizational_unit_name" not in subject


@pytest.mark.timeout(120)
def test_envelope_opened_by_openssl_independently(session, ca_state, user_csr, tmp_path):
    """From test_envelope.py: the applicant's OpenSSL key opens the case's envelope."""
    key, csr = user_csr
    approved_case(session, "XM-2026-0101")
    pair = issue_for_case(session, ca_state, "XM-2026-0101", csr.read_bytes(),
                          company="Xiamen Test Trading")
    assert_envelope_opens_with_openssl(pair, key, tmp_path)


def test_invalid_csr_refused(session, ca_state, tmp_path):
    """From test_issue.py: the case's request is checked again before it is signed."""
    approved_case(session, "XM-2026-0009")
    openssl("genpkey", "-algorithm", "SM2", "-out", "k.pem", cwd=tmp_path)
    # OpenSSL's default (empty) SM2 ID: not a valid request here
    openssl("req", "-new", "-key", "k.pem", "-sm3", "-subj", "/CN=x", "-out", "r.csr",
            cwd=tmp_path)
    with pytest.raises(issue.IssueError, match="csr_wrong_sm2_id"):
        issue_for_case(session, ca_state, "XM-2026-0009", (tmp_path / "r.csr").read_bytes(),
                       company="X")


def test_no_such_case_and_case_not_approved(session, ca_state, user_csr):
    csr = user_csr[1].read_bytes()
    with pytest.raises(ApprovalRequired, match="no case XM-2026-0098"):
        issue_for_case(session, ca_state, "XM-2026-0098", csr)
    approved_case(session, "XM-2026-0011").state = "rejected"
    with pytest.raises(ApprovalRequired, match="rejected, not approved"):
        issue_for_case(session, ca_state, "XM-2026-0011", csr)
    session.rollback()
    assert session.query(IssuedCertificate).count() == 0
