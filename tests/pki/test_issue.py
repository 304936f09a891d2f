"""Certificate pair issuance: GM/T 0015 profile, OpenSSL 3 interop both ways, approvals, serials.

The PKI alone: each pair is issued under its own stub approval, confirmed by a StubCheck
(tests/support/pki_issue.py). Issuing for a case (issue_for_case, the cases' approval and its
refusals) is tested in tests/app/test_issuance.py and tests/cases/test_issue_approval.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem, x509
from sqlalchemy.exc import IntegrityError

from mailbot.pki import ca as ca_mod
from mailbot.pki import issue, sm2
from mailbot.pki.ca import CaState, self_signed_root
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.signer import Approval, ApprovalRequired, SignerError
from mailbot.pki.signer.soft import SoftSigner
from tests.support.pki_issue import (
    StubCheck,
    independent_verify,
    issue_csr_stubbed,
    issue_stubbed,
    openssl,
    stub_approval,
)

pytest_plugins = ["tests.support.pki_issue_fixtures"]  # session-scoped CA, applicant CSR, software SDF lib

SIG_ALG_ABSENT = bytes.fromhex("300a06082a811ccf55018375")
CRL_URL = "http://xmport.example.cn/crl/ca.crl"


def _write(path: Path, der: bytes) -> Path:
    path.write_bytes(pem.armor("CERTIFICATE", der))
    return path


@pytest.fixture
def pair(session, ca_state: CaState, user_csr) -> issue.IssuedPair:
    out = issue_csr_stubbed(session, ca_state, "XM-2026-0001", user_csr[1].read_bytes(),
                            company="Xiamen Test Trading", org_code="91350200MA31ABCD1X",
                            crl_url=CRL_URL)
    session.commit()
    return out


@pytest.mark.timeout(120)
def test_openssl_csr_to_pair_verified_by_openssl(pair, ca_pem, tmp_path):
    sign = _write(tmp_path / "sign.pem", pair.sign_cert)
    enc = _write(tmp_path / "enc.pem", pair.enc_cert)
    for cert in (sign, enc):
        ok = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", str(ca_pem),
                     str(cert))
        assert ok.stdout.decode().strip().endswith(": OK")
        # the documented quirk: OpenSSL 3.0 defaults to the EMPTY SM2 ID, so this fails
        bad = openssl("verify", "-CAfile", str(ca_pem), str(cert), check=False)
        assert bad.returncode != 0
        assert b"certificate signature failure" in bad.stdout + bad.stderr


@pytest.mark.timeout(60)
def test_profile_as_openssl_shows_it(pair, tmp_path, user_csr):
    sign = _write(tmp_path / "sign.pem", pair.sign_cert)
    enc = _write(tmp_path / "enc.pem", pair.enc_cert)
    st = openssl("x509", "-in", str(sign), "-noout", "-text").stdout.decode()
    et = openssl("x509", "-in", str(enc), "-noout", "-text").stdout.decode()
    for text in (st, et):
        assert "Version: 3 (0x2)" in text
        assert "Signature Algorithm: SM2-with-SM3" in text
        assert "X509v3 Basic Constraints: critical\n                CA:FALSE" in text
        assert "X509v3 Key Usage: critical" in text
        assert "X509v3 Subject Key Identifier" in text
        assert "X509v3 Authority Key Identifier" in text
        assert f"URI:{CRL_URL}" in text
        # the vetted names only: the request's OU=IT and CN=alice are not copied
        assert ("Subject: C = CN, O = Xiamen Test Trading, CN = Xiamen Test Trading, "
                "serialNumber = 91350200MA31ABCD1X") in text
    assert "Digital Signature, Non Repudiation\n" in st
    assert "Key Encipherment, Data Encipherment, Key Agreement" in et
    # the signing certificate carries the applicant's key, the encryption one another key
    user_pub = openssl("pkey", "-in", str(user_csr[0]), "-pubout").stdout
    assert openssl("x509", "-in", str(sign), "-noout", "-pubkey").stdout == user_pub
    assert openssl("x509", "-in", str(enc), "-noout", "-pubkey").stdout != user_pub


def test_profile_details_in_der(pair, ca_state):
    for der in (pair.sign_cert, pair.enc_cert):
        cert = x509.Certificate.load(der)
        # SM3withSM2 with parameters absent, in both places
        assert der.count(SIG_ALG_ABSENT) == 2
        serial_der = cert["tbs_certificate"]["serial_number"].contents
        assert len(serial_der) == 20 and serial_der[0] < 0x80 and cert.serial_number > 0
        pub = bytes(cert.public_key["public_key"].contents)[1:]  # without the unused-bits octet
        assert cert.key_identifier == hashlib.sha1(pub).digest()
        assert cert.authority_key_identifier == ca_state.key_id
        sig = cert["signature_value"].native
        tbs = cert["tbs_certificate"].dump()
        assert independent_verify(ca_state.public_key, tbs, sig)
        assert not independent_verify(ca_state.public_key, tbs, sig, uid=b"")
    assert pair.sign_serial != pair.enc_serial
    assert pair.not_after.year == pair.not_before.year + 10


def test_cn_defaults_to_organisation(session, ca_state):
    d = sm2.generate_private_key()
    out = issue_stubbed(session, ca_state, "XM-2026-0002", sm2.public_key_of(d),
                        {"C": "CN"}, company="厦门某某报关有限公司")
    cert = x509.Certificate.load(out.sign_cert)
    assert cert.subject.native["common_name"] == "厦门某某报关有限公司"
    assert cert.subject.native["organization_name"] == "厦门某某报关有限公司"
    # UTF8String for Chinese text, PrintableString for C
    kinds = {atv["type"].native: atv["value"].name for rdn in cert.subject.chosen for atv in rdn}
    assert kinds["country_name"] == "printable_string"
    assert kinds["common_name"] == "utf8_string"


def test_subject_holds_only_the_vetted_names(session, ca_state):
    """C, O, CN, serialNumber in that order; nothing else can get in."""
    pub = sm2.public_key_of(sm2.generate_private_key())
    out = issue_stubbed(session, ca_state, "XM-2026-0012", pub,
                        issue.CertificateSubject("厦门某某报关有限公司", "报关服务器",
                                                 "91350200MA31ABCD1X"))
    cert = x509.Certificate.load(out.sign_cert)
    order = [(atv["type"].native, atv["value"].name, atv["value"].native)
             for rdn in cert.subject.chosen for atv in rdn]
    assert order == [("country_name", "printable_string", "CN"),
                     ("organization_name", "utf8_string", "厦门某某报关有限公司"),
                     ("common_name", "utf8_string", "报关服务器"),
                     ("serial_number", "printable_string", "91350200MA31ABCD1X")]
    assert x509.Certificate.load(out.enc_cert).subject.dump() == cert.subject.dump()
    with pytest.raises(issue.IssueError, match="only C, O, CN and serialNumber, not OU"):
        issue.subject_fields({"CN": "alice", "OU": "IT"})
    with pytest.raises(issue.IssueError, match="PrintableString"):
        issue.subject_fields(issue.CertificateSubject("X", org_code="统一代码"))
    with pytest.raises(issue.IssueError, match="no common name and no organisation"):
        issue.subject_fields({"C": "CN"})


def test_validity_never_beyond_ca_and_time_types(session, ca_state, tmp_path):
    d = sm2.generate_private_key()
    out = issue_stubbed(session, ca_state, "XM-2026-0003", sm2.public_key_of(d),
                        {"CN": "bob"}, validity_years=40)
    assert out.not_after == ca_state.not_after
    assert ca_mod.x509_time(datetime(2049, 12, 31, tzinfo=UTC)).name == "utc_time"
    assert ca_mod.x509_time(datetime(2050, 1, 1, tzinfo=UTC)).name == "general_time"


@pytest.mark.timeout(60)
def test_generalized_time_after_2049_accepted_by_openssl(session, tmp_path):
    signer = SoftSigner(sm2.generate_private_key())
    root = self_signed_root(signer, {"C": "CN", "CN": "long CA"}, years=40)
    state = CaState(signer=signer, cert=root, chain=[root])
    out = issue_stubbed(session, state, "XM-2026-0004",
                        sm2.public_key_of(sm2.generate_private_key()), {"CN": "carol"},
                        validity_years=30)
    assert out.not_after.year >= 2050
    cert = x509.Certificate.load(out.sign_cert)
    assert cert["tbs_certificate"]["validity"]["not_after"].name == "general_time"
    ca = tmp_path / "ca.pem"
    ca.write_text(state.chain_pem())
    ok = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", str(ca),
                 str(_write(tmp_path / "c.pem", out.sign_cert)))
    assert b": OK" in ok.stdout


def test_refuses_without_approval(session, ca_state):
    """A check that does not confirm the approval: no signature, no certificate row.

    The cases' refusals (no such case, no approval, not staff, moved on) are in
    tests/cases/test_issue_approval.py.
    """
    pub = sm2.public_key_of(sm2.generate_private_key())
    approval = stub_approval(pub, ref="XM-2026-0005", audit_id=5)
    check = StubCheck()  # knows no approval
    with pytest.raises(ApprovalRequired, match="not an approval it knows"):
        issue.issue_pair(session, ca_state, approval, check, pub, {"CN": "x"})
    assert check.calls == 1
    other = stub_approval(pub, ref="XM-2026-0005", audit_id=6)
    with pytest.raises(ApprovalRequired):
        issue.issue_pair(session, ca_state, approval, StubCheck(other), pub, {"CN": "x"})
    assert session.query(IssuedCertificate).count() == 0  # refused: no row, not even reserved
    assert issue.issue_pair(session, ca_state, approval, StubCheck(approval), pub,
                            {"CN": "x"}).sign_cert
    assert session.query(IssuedCertificate).count() == 2



def test_rollback_after_issuing_leaves_no_row(session, ca_state):
    """Issuing first in a transaction, then rolling back: nothing of the pair stays.

    On SQLite the savepoint that reserves the sign row must sit inside the caller's
    transaction (mailbot.db.begin_write): pysqlite would otherwise make the savepoint the
    outermost transaction, and its RELEASE would commit the row.
    """
    pub = sm2.public_key_of(sm2.generate_private_key())
    approval = stub_approval(pub, ref="XM-2026-0012", audit_id=12)
    assert issue.issue_pair(session, ca_state, approval, StubCheck(approval), pub,
                            {"CN": "x"}).sign_cert
    session.rollback()
    assert session.query(IssuedCertificate).count() == 0


def test_signer_refuses_without_record_or_check(ca_state):
    # the signer itself refuses to begin without a record, or without a check
    with pytest.raises(ApprovalRequired):
        ca_state.signer.begin_issuance(None, StubCheck())  # type: ignore[arg-type]
    incomplete = Approval("XM-2026-0005", "", datetime.now(UTC), 1, "00" * 32)
    with pytest.raises(ApprovalRequired, match="incomplete"):
        ca_state.signer.begin_issuance(incomplete, StubCheck(incomplete))
    complete = Approval("XM-2026-0005", "张三", datetime.now(UTC), 1, "00" * 32)
    with pytest.raises(ApprovalRequired, match="no approval check"):
        ca_state.signer.begin_issuance(complete, None)  # type: ignore[arg-type]


def test_ca_operation_path_cannot_sign_end_entity(ca_state):
    d = sm2.generate_private_key()
    start, end = issue.validity(ca_state, 1)
    tbs = issue.build_tbs(ca_state, kind="sign", subject=ca_mod.build_name({"CN": "eve"}),
                          public_key=sm2.public_key_of(d), serial=ca_mod.random_serial(),
                          not_before=start, not_after=end, crl_url="")
    with pytest.raises(SignerError, match="not a self-signed CA certificate"):
        ca_state.signer.sign_ca_operation(tbs.dump(), "self_signed_root")
    with pytest.raises(SignerError):
        ca_state.signer.sign_ca_operation(tbs.dump(), "crl")
    with pytest.raises(SignerError, match="unknown CA operation"):
        ca_state.signer.sign_ca_operation(tbs.dump(), "anything")  # type: ignore[arg-type]


def test_serial_unique_per_issuer_in_database(session, ca_state, monkeypatch):
    pub = sm2.public_key_of(sm2.generate_private_key())
    first = issue_stubbed(session, ca_state, "XM-2026-0007", pub, {"CN": "dave"})
    session.commit()
    row = session.query(IssuedCertificate).filter_by(serial=first.sign_serial).one()
    dup = IssuedCertificate(issuer_key_id=row.issuer_key_id, issuer=row.issuer,
                            serial=row.serial, kind="sign", subject="x", not_before=row.not_before,
                            not_after=row.not_after, der=b"", public_key="00")
    session.add(dup)
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    # a colliding random serial is retried, decided by the constraint
    used = int(first.sign_serial, 16)
    fresh = iter([used, used, ca_mod.random_serial(), ca_mod.random_serial()])
    monkeypatch.setattr(issue, "random_serial", lambda: next(fresh))
    second = issue_stubbed(session, ca_state, "XM-2026-0008", pub, {"CN": "dave"})
    session.commit()
    assert used not in (int(second.sign_serial, 16), int(second.enc_serial, 16))
    assert session.query(IssuedCertificate).count() == 4
    assert issue.key_already_certified(session)(pub)
    assert not issue.key_already_certified(session)(sm2.public_key_of(2))


def test_invalid_csr_refused(session, ca_state, tmp_path):
    """check_csr again at issuing time: an invalid request is not signed."""
    openssl("genpkey", "-algorithm", "SM2", "-out", "k.pem", cwd=tmp_path)
    # OpenSSL's default (empty) SM2 ID: not a valid request here
    openssl("req", "-new", "-key", "k.pem", "-sm3", "-subj", "/CN=x", "-out", "r.csr",
            cwd=tmp_path)
    with pytest.raises(issue.IssueError, match="csr_wrong_sm2_id"):
        issue_csr_stubbed(session, ca_state, "XM-2026-0009", (tmp_path / "r.csr").read_bytes(),
                          company="X")
    assert session.query(IssuedCertificate).count() == 0
