"""Revocation and CRLs: v2, SM3withSM2 (standard ID), AKI + cRLNumber monotonic in the DB.

OpenSSL 3.0 cannot check an SM2 CRL signature made with the standard ID (reference §7), so
`verify_crl` checks it here, over the TBSCertList bytes exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asn1crypto import core, crl, pem, x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot import clock
from mailbot.pki import sm2
from mailbot.pki.ca import SM3_WITH_SM2, CaState, sig_alg, x509_time
from mailbot.pki.errors import PkiError
from mailbot.pki.models import REVOCATION_REASONS, CrlState, IssuedCertificate


class RevokeError(PkiError, RuntimeError):
    """A revocation cannot be done; the message says why."""


def _serial_hex(value: str | int) -> str:
    if isinstance(value, int):
        return f"{value:x}"
    text = value.strip().lower().replace(":", "").replace(" ", "")
    text = text[2:] if text.startswith("0x") else text
    try:
        return f"{int(text, 16):x}"
    except ValueError:
        raise RevokeError(f"{value!r} is not a hexadecimal serial number") from None


def serial_of_cert(data: bytes) -> tuple[str, bytes]:
    """(serial hex, issuer AKI or b"") of a certificate file (PEM or DER)."""
    if pem.detect(data):
        data = pem.unarmor(data)[2]
    try:
        cert = x509.Certificate.load(bytes(data))
        return f"{cert.serial_number:x}", cert.authority_key_identifier or b""
    except (ValueError, TypeError) as exc:
        raise RevokeError(f"not a certificate: {exc}") from None


def revoke(session: Session, ca: CaState, serial: str | int, *, reason: str, by: str,
           issuer_key_id: bytes | None = None) -> IssuedCertificate:
    """Mark a certificate issued by this CA revoked (flushed; the caller commits).

    Writes no audit row: the PKI knows no cases. mailbot.app.revocation.revoke_certificate
    wraps this and records the revocation in the case's audit log in the same transaction.
    """
    if reason not in REVOCATION_REASONS:
        raise RevokeError(f"unknown reason {reason!r}; use one of "
                          + ", ".join(REVOCATION_REASONS))
    if not by.strip():
        raise RevokeError("say who revokes (--by NAME)")
    if issuer_key_id and issuer_key_id != ca.key_id:
        raise RevokeError("that certificate was issued by another CA, not by this one")
    hexserial = _serial_hex(serial)
    row = session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.issuer_key_id == ca.key_id_hex,
        IssuedCertificate.serial == hexserial)).first()
    if row is None:
        raise RevokeError(f"no certificate with serial {hexserial} was issued by this CA")
    if row.revoked_at is not None:
        raise RevokeError(f"certificate {hexserial} was already revoked on "
                          f"{row.revoked_at:%Y-%m-%d %H:%M} UTC ({row.revocation_reason})")
    row.revoked_at = clock.now().replace(microsecond=0)
    row.revocation_reason = reason
    row.revoked_by = by.strip()
    session.flush()
    return row


def _state(session: Session, ca: CaState) -> CrlState:
    q = select(CrlState).where(CrlState.issuer_key_id == ca.key_id_hex)
    if session.get_bind().dialect.name != "sqlite":
        q = q.with_for_update()  # one CRL number per CRL, also with two writers
    st = session.scalars(q).first()
    if st is None:
        st = CrlState(issuer_key_id=ca.key_id_hex, last_number=0)
        session.add(st)
        session.flush()
    return st


def make_crl(session: Session, ca: CaState, *, next_update_days: int = 7) -> bytes:
    """A fresh CRL (DER) of every revoked certificate of this CA; the number goes up by one."""
    st = _state(session, ca)
    number = st.last_number + 1
    this_update = clock.now().replace(microsecond=0)
    next_update = this_update + timedelta(days=next_update_days)
    rows = session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.issuer_key_id == ca.key_id_hex,
        IssuedCertificate.revoked_at.is_not(None)).order_by(IssuedCertificate.revoked_at,
                                                            IssuedCertificate.id)).all()
    tbs_fields: dict[str, object] = {
        "version": "v2",
        "signature": sig_alg(),
        "issuer": ca.subject,
        "this_update": x509_time(this_update),
        "next_update": x509_time(next_update),
        "crl_extensions": [
            {"extn_id": "authority_key_identifier", "critical": False,
             "extn_value": {"key_identifier": ca.key_id}},
            {"extn_id": "crl_number", "critical": False, "extn_value": number},
        ],
    }
    if rows:
        tbs_fields["revoked_certificates"] = [{
            "user_certificate": int(r.serial, 16),
            "revocation_date": x509_time(r.revoked_at),  # type: ignore[arg-type]
            "crl_entry_extensions": [{"extn_id": "crl_reason", "critical": False,
                                      "extn_value": REVOCATION_REASONS[r.revocation_reason
                                                                       or "unspecified"]}],
        } for r in rows]
    tbs = crl.TbsCertList(tbs_fields)
    sig = ca.signer.sign_ca_operation(tbs.dump(), "crl")
    der = crl.CertificateList({"tbs_cert_list": tbs, "signature_algorithm": sig_alg(),
                               "signature": core.OctetBitString(sig)}).dump()
    st.last_number = number
    st.this_update, st.next_update, st.der = this_update, next_update, der
    session.flush()
    return der


@dataclass
class CrlCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    number: int | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    revoked: list[tuple[str, datetime, str]] = field(default_factory=list)


def verify_crl(data: bytes, ca_cert: x509.Certificate, *, uid: bytes = sm2.DEFAULT_ID) -> CrlCheck:
    """Check a CRL (PEM or DER) against the CA certificate: signature, issuer, AKI, times."""
    out = CrlCheck(ok=False)
    if pem.detect(data):
        try:
            data = pem.unarmor(data)[2]
        except ValueError as exc:
            out.problems.append(f"bad PEM: {exc}")
            return out
    try:
        cl = crl.CertificateList.load(bytes(data), strict=True)
        tbs = cl["tbs_cert_list"]
        tbs_raw = tbs.dump()  # asn1crypto keeps the received bytes for a parsed value
        outer_alg, inner_alg = cl["signature_algorithm"], tbs["signature"]
        sig = bytes(cl["signature"].contents)
        out.number = cl.crl_number_value.native if cl.crl_number_value else None
        out.this_update = tbs["this_update"].native
        out.next_update = tbs["next_update"].native
        for entry in tbs["revoked_certificates"]:
            reason = entry.crl_reason_value.native if entry.crl_reason_value else "unspecified"
            out.revoked.append((f"{entry['user_certificate'].native:x}",
                                entry["revocation_date"].native, str(reason)))
        aki = cl.authority_key_identifier
    except (ValueError, TypeError) as exc:
        out.problems.append(f"not a readable CRL: {exc}")
        return out
    pub = bytes(ca_cert.public_key["public_key"].contents)[1:]
    if outer_alg["algorithm"].dotted != SM3_WITH_SM2 or inner_alg.dump() != outer_alg.dump():
        out.problems.append("signature algorithm is not SM3withSM2 in both fields")
    if sig[:1] != b"\x00" or not sm2.verify(pub, tbs_raw, sig[1:], uid):
        out.problems.append("CRL signature does not verify with the CA key "
                            f"(SM2 ID {uid.decode(errors='replace')!r})")
    if tbs["issuer"].dump() != ca_cert.subject.dump():
        out.problems.append("CRL issuer is not the CA certificate's subject")
    ski = ca_cert.key_identifier
    if ski and aki and aki != ski:
        out.problems.append("CRL authority key identifier is not the CA's key identifier")
    if tbs["version"].native != "v2":
        out.problems.append("CRL is not version 2")
    if out.next_update is not None and out.next_update < clock.now():
        out.problems.append(f"CRL is out of date (nextUpdate {out.next_update:%Y-%m-%d %H:%M})")
    out.ok = not out.problems
    return out
