"""Revocation and CRLs: OpenSSL parses them; the signature is checked by an independent verifier.

The PKI alone: pairs are issued under stub approvals. Revoking through a case (the audit row)
is tested in tests/cases/test_approval.py; `mailbot ca crl` / `ca revoke` in
tests/app/test_pki_cli.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from asn1crypto import crl, pem

from mailbot import clock
from mailbot.pki import crl as crl_mod
from mailbot.pki import issue, sm2
from mailbot.pki.models import IssuedCertificate
from tests.support.pki_issue import independent_verify, issue_stubbed, openssl

pytest_plugins = ["tests.support.pki_issue_fixtures"]


def _issue(session, ca_state, ref: str) -> issue.IssuedPair:
    out = issue_stubbed(session, ca_state, ref, sm2.public_key_of(sm2.generate_private_key()),
                        {"CN": ref}, company="Xiamen Test Trading")
    session.commit()
    return out


@pytest.mark.timeout(60)
def test_revoke_and_crl(session, ca_state, tmp_path):
    a = _issue(session, ca_state, "XM-2026-0201")
    b = _issue(session, ca_state, "XM-2026-0202")
    first = crl_mod.make_crl(session, ca_state, next_update_days=7)
    session.commit()
    crl_mod.revoke(session, ca_state, a.sign_serial, reason="keyCompromise", by="李四")
    crl_mod.revoke(session, ca_state, b.enc_serial.upper(), reason="superseded", by="李四")
    session.commit()
    der = crl_mod.make_crl(session, ca_state, next_update_days=7)
    session.commit()

    (tmp_path / "ca.crl").write_bytes(der)
    text = openssl("crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text",
                   cwd=tmp_path).stdout.decode()
    assert "Version 2 (0x1)" in text
    assert "Signature Algorithm: SM2-with-SM3" in text
    assert "X509v3 CRL Number: \n                2" in text
    assert "X509v3 Authority Key Identifier" in text
    assert a.sign_serial.upper() in text and b.enc_serial.upper() in text
    assert "Key Compromise" in text and "Superseded" in text
    assert a.enc_serial.upper() not in text

    # independent verifier (gmssl point arithmetic, hashlib SM3), standard ID
    cl = crl.CertificateList.load(der)
    tbs, sig = cl["tbs_cert_list"].dump(), cl["signature"].native
    assert independent_verify(ca_state.public_key, tbs, sig)
    assert not independent_verify(ca_state.public_key, tbs, sig, uid=b"")
    assert der.count(bytes.fromhex("300a06082a811ccf55018375")) == 2  # params absent
    # monotonic CRL number
    assert crl.CertificateList.load(first).crl_number_value.native == 1
    assert cl.crl_number_value.native == 2
    check = crl_mod.verify_crl(der, ca_state.cert)
    assert check.ok and check.number == 2 and len(check.revoked) == 2


def test_crl_quirk_openssl_cannot_verify_standard_id(session, ca_state, ca_pem, tmp_path):
    """Documents reference §7 quirk 2: OpenSSL 3.0 checks CRLs with the empty ID only."""
    pair = _issue(session, ca_state, "XM-2026-0203")
    crl_mod.revoke(session, ca_state, pair.sign_serial, reason="keyCompromise", by="x")
    (tmp_path / "ca.crl").write_bytes(pem.armor("X509 CRL", crl_mod.make_crl(session, ca_state)))
    (tmp_path / "c.pem").write_bytes(pem.armor("CERTIFICATE", pair.sign_cert))
    res = openssl("verify", "-crl_check", "-CRLfile", "ca.crl", "-vfyopt",
                  "distid:1234567812345678", "-CAfile", str(ca_pem), "c.pem", cwd=tmp_path,
                  check=False)
    assert res.returncode != 0
    assert b"CRL signature failure" in res.stdout + res.stderr


def test_verify_crl_detects_problems(session, ca_state):
    der = bytearray(crl_mod.make_crl(session, ca_state))
    i = der.find(b"Trading") if b"Trading" in der else len(der) // 3
    der[i] ^= 0x01
    check = crl_mod.verify_crl(bytes(der), ca_state.cert)
    assert not check.ok
    assert crl_mod.verify_crl(b"garbage", ca_state.cert).problems[0].startswith("not a readable")


def test_revoke_errors(session, ca_state, tmp_path):
    pair = _issue(session, ca_state, "XM-2026-0204")
    with pytest.raises(crl_mod.RevokeError, match="no certificate with serial"):
        crl_mod.revoke(session, ca_state, "abcdef", reason="keyCompromise", by="x")
    with pytest.raises(crl_mod.RevokeError, match="unknown reason"):
        crl_mod.revoke(session, ca_state, pair.sign_serial, reason="bored", by="x")
    with pytest.raises(crl_mod.RevokeError, match="not a hexadecimal"):
        crl_mod.revoke(session, ca_state, "xyz", reason="keyCompromise", by="x")
    crl_mod.revoke(session, ca_state, pair.sign_serial, reason="keyCompromise", by="x")
    with pytest.raises(crl_mod.RevokeError, match="already revoked"):
        crl_mod.revoke(session, ca_state, pair.sign_serial, reason="keyCompromise", by="x")
    # by the .cer file an applicant sends
    serial, aki = crl_mod.serial_of_cert(pem.armor("CERTIFICATE", pair.enc_cert))
    row = crl_mod.revoke(session, ca_state, serial, reason="cessationOfOperation", by="x",
                         issuer_key_id=aki)
    assert row.kind == "enc" and row.revoked_by == "x"
    with pytest.raises(crl_mod.RevokeError, match="another CA"):
        crl_mod.revoke(session, ca_state, serial, reason="keyCompromise", by="x",
                       issuer_key_id=b"\x01" * 20)
    assert session.query(IssuedCertificate).filter(
        IssuedCertificate.revoked_at.is_not(None)).count() == 2



def _number(der: bytes) -> int:
    return crl.CertificateList.load(der).crl_number_value.native


def test_current_crl_new_only_when_needed(session, ca_state, frozen_clock):
    """A new CRL after a revocation or near nextUpdate; otherwise the last one, byte for byte."""
    first = crl_mod.current_crl(session, ca_state, next_update_days=7)
    session.commit()
    assert first.made and first.number == 1 and first.why == "no CRL yet"
    frozen_clock.advance(days=3)
    again = crl_mod.current_crl(session, ca_state, next_update_days=7)
    assert not again.made and again.der == first.der and again.number == 1

    pair = _issue(session, ca_state, "XM-2026-0205")  # issuing alone changes nothing
    assert crl_mod.current_crl(session, ca_state, next_update_days=7).der == first.der
    crl_mod.revoke(session, ca_state, pair.sign_serial, reason="keyCompromise", by="x")
    session.commit()
    second = crl_mod.current_crl(session, ca_state, next_update_days=7)
    session.commit()
    assert second.made and second.number == 2 and second.why == "revocations changed"
    assert crl_mod.current_crl(session, ca_state, next_update_days=7).der == second.der

    # renewed once less than half the period is left (3.5 of 7 days)
    frozen_clock.advance(days=3, hours=12, seconds=-1)
    assert not crl_mod.current_crl(session, ca_state, next_update_days=7).made
    frozen_clock.advance(seconds=1)
    third = crl_mod.current_crl(session, ca_state, next_update_days=7)
    session.commit()
    assert third.made and third.number == 3 and "next update" in third.why
    assert crl_mod.verify_crl(third.der, ca_state.cert).revoked == \
        crl_mod.verify_crl(second.der, ca_state.cert).revoked
    # a threshold of one's own, and --force
    assert crl_mod.current_crl(session, ca_state, next_update_days=7,
                               renew_before=timedelta(days=7)).number == 4
    assert crl_mod.current_crl(session, ca_state, force=True).number == 5
    # make_crl still always makes a new one
    assert _number(crl_mod.make_crl(session, ca_state)) == 6


def test_crl_reasons_per_rfc5280(session, ca_state, tmp_path):
    """unspecified: no reasonCode extension; removeFromCRL: refused, never on a full CRL."""
    a = _issue(session, ca_state, "XM-2026-0206")
    b = _issue(session, ca_state, "XM-2026-0207")
    crl_mod.revoke(session, ca_state, a.sign_serial, reason="unspecified", by="x")
    crl_mod.revoke(session, ca_state, a.enc_serial, reason="superseded", by="x")
    with pytest.raises(crl_mod.RevokeError, match="removeFromCRL is no revocation reason"):
        crl_mod.revoke(session, ca_state, b.sign_serial, reason="removeFromCRL", by="x")
    assert "removeFromCRL" not in crl_mod.REVOKE_REASONS
    # a row written before the rule (or by hand) is listed without a reason code
    row = session.query(IssuedCertificate).filter_by(serial=b.sign_serial).one()
    row.revoked_at = clock.now().replace(microsecond=0)
    row.revocation_reason, row.revoked_by = "removeFromCRL", "x"
    session.commit()
    der = crl_mod.current_crl(session, ca_state).der
    entries = {f"{e['user_certificate'].native:x}": e
               for e in crl.CertificateList.load(der)["tbs_cert_list"]["revoked_certificates"]}
    assert set(entries) == {a.sign_serial, a.enc_serial, b.sign_serial}
    assert len(entries[a.sign_serial]["crl_entry_extensions"]) == 0
    assert len(entries[b.sign_serial]["crl_entry_extensions"]) == 0
    assert entries[a.enc_serial].crl_reason_value.native == "superseded"
    (tmp_path / "ca.crl").write_bytes(der)
    text = openssl("crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text",
                   cwd=tmp_path).stdout.decode()
    assert text.count("CRL Reason Code") == 1 and "Superseded" in text
    assert "Remove From CRL" not in text and "Unspecified" not in text
    check = crl_mod.verify_crl(der, ca_state.cert)
    assert check.ok and sorted(r for _s, _d, r in check.revoked) == [
        "superseded", "unspecified", "unspecified"]
