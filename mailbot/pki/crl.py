"""Revocation and CRLs: v2, SM3withSM2 (standard ID), AKI + cRLNumber monotonic in the DB.

OpenSSL 3.0 cannot check an SM2 CRL signature made with the standard ID (reference §7), so
`verify_crl` checks it here, over the TBSCertList bytes exactly as received.

When a new CRL is made (`current_crl`, what `mailbot ca crl` runs): only when the revoked
entries differ from those of the last CRL (a revocation since), the CA's name changed, or the
last CRL is close to its nextUpdate: less than CRL_RENEW_FRACTION (half) of the configured
period `[ca] crl_next_update_days` is left, so with the default 7 days a daily `ca crl` makes a
new CRL every 3.5 days and a published CRL always has at least 3.5 days to run. Otherwise the
last CRL is given back byte for byte, same CRL number (RFC 5280 §5.2.3: the number goes up
with each CRL *issued*, and relying parties see no churn).

Entries follow RFC 5280 §5.3.1: reason `unspecified` is written as no reasonCode extension,
and `removeFromCRL` is refused as a reason for `revoke`: it only takes a certificateHold back
in a delta CRL, and this CA publishes full CRLs only (an entry from before that rule is
listed without a reason code).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from asn1crypto import core, crl, pem, x509
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailbot import clock
from mailbot.pki import sm2
from mailbot.pki.ca import SM3_WITH_SM2, CaState, dn_text, sig_alg, x509_time
from mailbot.pki.errors import PkiError
from mailbot.pki.models import (
    REVOCATION_REASONS,
    REVOKE_REASONS,
    CrlState,
    IssuedCertificate,
    subject_names,
)

# a new CRL once less than this share of [ca] crl_next_update_days is left before nextUpdate
CRL_RENEW_FRACTION = 0.5
# reasons written as no reasonCode extension (RFC 5280 §5.3.1; removeFromCRL: delta CRLs only)
_NO_REASON_CODE = ("unspecified", "removeFromCRL")


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
    if reason == "removeFromCRL":
        raise RevokeError("removeFromCRL is no revocation reason: it only takes back a "
                          "certificateHold in a delta CRL (RFC 5280 5.3.1), and this CA "
                          "publishes full CRLs")
    if reason not in REVOKE_REASONS:
        raise RevokeError(f"unknown reason {reason!r}; use one of "
                          + ", ".join(REVOKE_REASONS))
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


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes; RevokeError when it is none."""
    try:
        if pem.detect(data):
            data = pem.unarmor(data)[2]
        cert = x509.Certificate.load(bytes(data), strict=True)
        cert["tbs_certificate"].native  # noqa: B018 - parse it all
        return cert
    except (ValueError, TypeError) as exc:
        raise RevokeError(f"not a certificate: {exc}") from None


def signed_by_ca(ca: CaState, data: bytes | x509.Certificate) -> bool:
    """Whether this CA's key made the certificate's SM3withSM2 signature (standard ID),
    whatever the database knows of it: certificates from before mailbot count too."""
    try:
        cert = data if isinstance(data, x509.Certificate) else load_certificate(data)
        if cert["signature_algorithm"]["algorithm"].dotted != SM3_WITH_SM2:
            return False
        sig = bytes(cert["signature_value"].native)
        return bool(sm2.verify(ca.public_key, cert["tbs_certificate"].dump(), sig))
    except Exception:  # noqa: BLE001 - a malformed certificate or signature is not ours
        return False


def _kind_of(cert: x509.Certificate) -> str:
    usage = set(cert.key_usage_value.native) if cert.key_usage_value else set()
    if "digital_signature" in usage or "non_repudiation" in usage:
        return "sign"
    return "enc" if usage & {"key_encipherment", "data_encipherment", "key_agreement"} else "sign"


def certificate_row(session: Session, ca: CaState, data: bytes) -> IssuedCertificate:
    """The register row of a certificate this CA's key signed; one is added (no case, no
    approval) for a certificate from before mailbot, so it can be revoked and listed in the
    CRL. RevokeError when this CA did not sign it."""
    cert = load_certificate(data)
    if not signed_by_ca(ca, cert):
        raise RevokeError("that certificate was not signed by this CA's key")
    hexserial = f"{cert.serial_number:x}"
    row = session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.issuer_key_id == ca.key_id_hex,
        IssuedCertificate.serial == hexserial)).first()
    if row is not None:
        return row
    tbs = cert["tbs_certificate"]
    subject_org, subject_serial_number = subject_names(tbs["subject"])
    row = IssuedCertificate(
        issuer_key_id=ca.key_id_hex, issuer=dn_text(tbs["issuer"]), serial=hexserial,
        case_ref=None, kind=_kind_of(cert), subject=dn_text(tbs["subject"]),
        subject_org=subject_org, subject_serial_number=subject_serial_number,
        not_before=cert.not_valid_before, not_after=cert.not_valid_after, der=cert.dump(),
        public_key=bytes(cert.public_key["public_key"].contents)[1:].hex())
    session.add(row)
    session.flush()
    return row


def pair_of(session: Session, row: IssuedCertificate) -> IssuedCertificate | None:
    """The other certificate of `row`'s pair: same CA and approval, the other kind."""
    if row.approval_audit_id is None or row.kind not in ("sign", "enc"):
        return None
    other = "enc" if row.kind == "sign" else "sign"
    return session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.issuer_key_id == row.issuer_key_id,
        IssuedCertificate.approval_audit_id == row.approval_audit_id,
        IssuedCertificate.kind == other)).first()


def find_issued(session: Session, ca: CaState, serial: str | int) -> IssuedCertificate | None:
    """This CA's row for `serial` (hex, any case, colons and spaces ignored), or None."""
    return session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.issuer_key_id == ca.key_id_hex,
        IssuedCertificate.serial == _serial_hex(serial))).first()


def write_crl(path: str | Path, der: bytes) -> bool:
    """Write the CRL file when its bytes differ (atomic: readers never see half a CRL)."""
    target = Path(path)
    if target.is_file() and target.read_bytes() == der:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(der)
    os.replace(tmp, target)
    return True


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


def _revoked_rows(session: Session, ca: CaState) -> list[IssuedCertificate]:
    return list(session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.issuer_key_id == ca.key_id_hex,
        IssuedCertificate.revoked_at.is_not(None)).order_by(IssuedCertificate.revoked_at,
                                                            IssuedCertificate.id)).all())


def _entries(rows: list[IssuedCertificate]) -> list[crl.RevokedCertificate]:
    out = []
    for r in rows:
        entry: dict[str, object] = {
            "user_certificate": int(r.serial, 16),
            "revocation_date": x509_time(r.revoked_at),  # type: ignore[arg-type]
        }
        reason = r.revocation_reason or "unspecified"
        if reason not in _NO_REASON_CODE:
            entry["crl_entry_extensions"] = [{"extn_id": "crl_reason", "critical": False,
                                              "extn_value": REVOCATION_REASONS[reason]}]
        out.append(crl.RevokedCertificate(entry))
    return out


def make_crl(session: Session, ca: CaState, *, next_update_days: int = 7) -> bytes:
    """A fresh CRL (DER) of every revoked certificate of this CA; the number goes up by one."""
    st = _state(session, ca)
    return _make(session, ca, st, _entries(_revoked_rows(session, ca)), next_update_days)


def _make(session: Session, ca: CaState, st: CrlState, entries: list[crl.RevokedCertificate],
          next_update_days: int) -> bytes:
    number = st.last_number + 1
    this_update = clock.now().replace(microsecond=0)
    next_update = this_update + timedelta(days=next_update_days)
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
    if entries:
        tbs_fields["revoked_certificates"] = entries
    tbs = crl.TbsCertList(tbs_fields)
    sig = ca.signer.sign_ca_operation(tbs.dump(), "crl")
    der = crl.CertificateList({"tbs_cert_list": tbs, "signature_algorithm": sig_alg(),
                               "signature": core.OctetBitString(sig)}).dump()
    st.last_number = number
    st.this_update, st.next_update, st.der = this_update, next_update, der
    session.flush()
    return der


@dataclass
class CurrentCrl:
    der: bytes
    number: int
    next_update: datetime
    made: bool  # False: the last CRL, unchanged
    why: str  # why a new one was made, or why the last one still holds


def _stale(st: CrlState, ca: CaState, entries: list[crl.RevokedCertificate],
           renew_before: timedelta) -> str | None:
    """Why the last CRL must be replaced, or None while it holds."""
    if not st.der:
        return "no CRL yet"
    try:
        tbs = crl.CertificateList.load(bytes(st.der))["tbs_cert_list"]
        old = [e.dump() for e in tbs["revoked_certificates"]]
        issuer, next_update = tbs["issuer"].dump(), tbs["next_update"].native
    except (ValueError, TypeError):
        return "the last CRL is unreadable"
    if old != [e.dump() for e in entries]:
        return "revocations changed"
    if issuer != ca.subject.dump():
        return "the CA's name changed"
    if next_update is None or clock.now() >= next_update - renew_before:
        return "the last CRL is close to its next update"
    return None


def crl_due(session: Session, *, next_update_days: int = 7) -> bool:
    """Whether `current_crl` would make a new CRL, judged without the CA key (loading it may
    take a passphrase's key derivation): no CRL yet, one close to its next update, or a
    revocation since it was made. A True may still find the last CRL good."""
    renew_before = timedelta(days=next_update_days) * CRL_RENEW_FRACTION
    states = session.scalars(select(CrlState)).all()
    if not states or any(not s.der or s.next_update is None or s.this_update is None
                         for s in states):
        return True
    now = clock.now()
    if any(now >= s.next_update - renew_before for s in states if s.next_update is not None):
        return True
    made = min(s.this_update for s in states if s.this_update is not None)
    latest = session.scalar(select(func.max(IssuedCertificate.revoked_at)))
    return latest is not None and latest >= made


def current_crl(session: Session, ca: CaState, *, next_update_days: int = 7,
                renew_before: timedelta | None = None, force: bool = False) -> CurrentCrl:
    """The CRL to publish: the last one while it holds, else a new one (module docstring).

    `renew_before` defaults to CRL_RENEW_FRACTION of the period. Flushed; the caller commits.
    """
    if renew_before is None:
        renew_before = timedelta(days=next_update_days) * CRL_RENEW_FRACTION
    st = _state(session, ca)  # locked row (not on SQLite, which serialises writers anyway)
    entries = _entries(_revoked_rows(session, ca))
    why = "asked for a new one" if force else _stale(st, ca, entries, renew_before)
    if why is None:
        assert st.der is not None and st.next_update is not None
        return CurrentCrl(bytes(st.der), st.last_number, st.next_update, False,
                          "up to date")
    der = _make(session, ca, st, entries, next_update_days)
    assert st.next_update is not None
    return CurrentCrl(der, st.last_number, st.next_update, True, why)


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
