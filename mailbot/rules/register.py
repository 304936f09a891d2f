"""Rules on what the register knows: certificates of ours, the CA key, revocations.

The caller looks these up and hands them in the view (`CaseView.database` and the fields
after it); the rules never query the database. A single message (`inspect`) has none, so the
rules marked `needs_database` are skipped there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mailbot import clock
from mailbot.findings import Finding
from mailbot.pki import sm2
from mailbot.rules.engine import Rule
from mailbot.rules.validators import normalise_uscc, same_company, same_serial
from mailbot.rules.view import CaseView, KnownCertificate

SM3_WITH_SM2 = "1.2.156.10197.1.501"


def _now(view: CaseView) -> datetime:
    now = view.now or clock.now()
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _active(view: CaseView) -> list[KnownCertificate]:
    """Our certificates not revoked and not expired, one per serial (sign before enc)."""
    now, seen, out = _now(view), set(), []
    for c in sorted(view.known_certificates, key=lambda c: c.kind != "sign"):
        after = c.not_after if c.not_after is None or c.not_after.tzinfo \
            else c.not_after.replace(tzinfo=UTC)
        if c.revoked or (after is not None and after <= now) or c.serial in seen:
            continue
        seen.add(c.serial)
        out.append(c)
    return out


def _same_code(a: str, b: str) -> bool:
    na, nb = normalise_uscc(a or ""), normalise_uscc(b or "")
    return bool(na) and na == nb


class AlreadyCertified(Rule):
    name = "already_certified"
    description = "one active certificate per organisation; one expiring soon is a renewal"
    needs_database = True
    kinds = ("new",)
    codes = ("already_certified",)
    defaults: Mapping[str, Any] = {"renewal_window_days": 90}

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        org, code = view.form.get("applicant_org") or "", view.form.get("org_code") or ""
        window = timedelta(days=int(params.get("renewal_window_days", 90)))
        now, out = _now(view), []
        for c in _active(view):
            if not same_company(org, c.organisation):
                continue  # the same code under another name is renamed_organisation
            after = c.not_after if c.not_after is None or c.not_after.tzinfo \
                else c.not_after.replace(tzinfo=UTC)
            if after is not None and after - now <= window:
                continue  # 须知三: expiring, so this is the renewal, a new application
            out.append(Finding("already_certified", "warn",
                               f"{c.organisation} already holds active certificate {c.serial}"
                               + (f" (until {after:%Y-%m-%d})" if after else ""),
                               {"serial": c.serial, "organisation": c.organisation,
                                "org_code": c.org_code or code}))
        return out


class RenamedOrganisation(Rule):
    name = "renamed_organisation"
    description = "the same credit code under another name: apply anew, revoke the old"
    needs_database = True
    kinds = ("new",)
    codes = ("renamed_organisation",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        org, code = view.form.get("applicant_org") or "", view.form.get("org_code") or ""
        if not org or not code:
            return []
        return [Finding("renamed_organisation", "warn",
                        f"credit code {code} holds certificate {c.serial} under the former name "
                        f"{c.organisation}: the renamed organisation applies anew and revokes "
                        "the old certificate",
                        {"serial": c.serial, "old_name": c.organisation, "new_name": org,
                         "org_code": code})
                for c in _active(view)
                if _same_code(code, c.org_code) and not same_company(org, c.organisation)]


@dataclass(frozen=True)
class AttachedCertificate:
    """What the rules read of a certificate attached for revocation."""

    serial: int
    issuer: str
    subject: str
    signature_algorithm: str
    tbs: bytes
    signature: bytes


def read_certificate(data: bytes) -> AttachedCertificate | None:
    from asn1crypto import x509
    try:
        cert = x509.Certificate.load(bytes(data))
        tbs = cert["tbs_certificate"]
        return AttachedCertificate(
            serial=int(tbs["serial_number"].native), issuer=tbs["issuer"].human_friendly,
            subject=tbs["subject"].human_friendly,
            signature_algorithm=cert["signature_algorithm"]["algorithm"].dotted,
            tbs=tbs.dump(), signature=bytes(cert["signature_value"].native))
    except Exception:  # noqa: BLE001 - an unreadable file is intake's finding
        return None


def signed_by(cert: AttachedCertificate, public_keys: list[bytes]) -> bool:
    """Whether one of the keys verifies the certificate's SM3withSM2 signature."""
    if cert.signature_algorithm != SM3_WITH_SM2:
        return False
    for pub in public_keys:
        try:
            if sm2.verify(pub, cert.tbs, cert.signature):
                return True
        except Exception:  # noqa: BLE001 - a malformed signature is simply not ours
            continue
    return False


class RevokeForeignCertificate(Rule):
    name = "revoke_foreign_certificate"
    description = "a certificate to revoke that another CA signed goes to staff"
    needs_database = True
    kinds = ("revoke",)
    codes = ("revoke_foreign_certificate",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        out = []
        for data in view.certificates:
            cert = read_certificate(data)
            if cert is None or signed_by(cert, view.ca_public_keys):
                continue
            out.append(Finding("revoke_foreign_certificate", "warn",
                               f"certificate {cert.serial:x} was issued by {cert.issuer}, not "
                               "this CA: staff revoke it where it was issued and close the case",
                               {"serial": f"{cert.serial:x}", "issuer": cert.issuer}))
        return out


class RevokeSerialMismatch(Rule):
    name = "revoke_serial_mismatch"
    description = "the serial written on the form is the certificate's (compared as numbers)"
    kinds = ("revoke",)
    codes = ("revoke_serial_mismatch",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        written = (view.form.get("revoke_serial") or "").strip()
        if not written:
            return []
        serials = [c.serial for c in map(read_certificate, view.certificates) if c]
        if serials:
            if any(same_serial(written, s) for s in serials):
                return []
            return [Finding("revoke_serial_mismatch", "reject",
                            f"the form's serial {written} is not the attached certificate's "
                            f"({', '.join(f'{s:x}' for s in serials)})",
                            {"form_serial": written, "certificates": [f"{s:x}" for s in serials]})]
        if not view.database:
            return []
        # The certificate file is lost: a serial our CA issued to this credit code lets staff
        # accept the revocation with an override; any other serial is a mismatch.
        code = view.form.get("org_code") or ""
        ours = [c for c in view.known_certificates if _same_code(code, c.org_code)]
        if any(same_serial(written, c.serial) for c in ours):
            return []
        return [Finding("revoke_serial_mismatch", "reject",
                        f"the form's serial {written} is no certificate this CA issued to "
                        f"{code or 'this organisation'}",
                        {"form_serial": written, "certificates": [c.serial for c in ours]})]
