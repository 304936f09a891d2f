"""Issue a dual certificate pair for one approved request (GM/T 0015 / GB/T 20518 profile).

Signing certificate: the applicant's key from the CSR. Encryption certificate: a key pair the
signer's issuance generates; its private key leaves only inside an SM2EnvelopedKey to the
applicant's signing key (envelope.py) and is never stored or logged.

Subject: only the vetted names the caller hands in (`CertificateSubject`: C=CN, O, CN,
serialNumber), never the request's own subject.

The PKI knows no cases: the caller hands in the `Approval` and the `ApprovalCheck` that
confirms it (mailbot.app.issuance.issue_for_case wires the cases' check); the signer calls the
check before each of the two signatures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from asn1crypto import x509
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot import clock
from mailbot.db import begin_write
from mailbot.pki import der, sm2
from mailbot.pki.approval import Approval, ApprovalCheck, check_approval
from mailbot.pki.ca import (
    CaState,
    add_years,
    dn_text,
    key_identifier,
    random_serial,
    sig_alg,
    spki_of,
    x509_time,
)
from mailbot.pki.errors import ApprovalRequired, PkiError
from mailbot.pki.models import IssuedCertificate, subject_names
from mailbot.pki.signer import Issuance

if TYPE_CHECKING:
    from mailbot.pki.csr import CsrReport

KEY_USAGE = {
    "sign": {"digital_signature", "non_repudiation"},
    "enc": {"key_encipherment", "data_encipherment", "key_agreement"},
}
SERIAL_ATTEMPTS = 5
_SIG_ALG_DER = sig_alg().dump()


class IssueError(PkiError, RuntimeError):
    """Issuance refused; the message says why."""


@dataclass
class IssuedPair:
    case_ref: str
    sign_cert: bytes  # DER
    enc_cert: bytes  # DER
    envelope: bytes  # SM2EnvelopedKey DER (the `envprivatekey` attachment)
    sign_serial: str  # hex
    enc_serial: str
    not_before: datetime
    not_after: datetime
    approval: Approval


@dataclass(frozen=True)
class CertificateSubject:
    """The vetted names of a certificate: C=CN, O = the organisation, CN = the common name
    (default: the organisation) and the organisation code as serialNumber (2.5.4.5).

    The caller (the case's vetted form) gives them; nothing of the request's own subject is
    copied into a certificate.
    """

    organization: str
    common_name: str | None = None
    org_code: str | None = None
    country: str = "CN"


# the only attributes a certificate subject may carry, in the order written
SUBJECT_ORDER = (("C", "country_name"), ("O", "organization_name"), ("CN", "common_name"),
                 ("SERIALNUMBER", "serial_number"))
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")


def subject_fields(subject: CertificateSubject | Mapping[str, str], company: str | None = None,
                   common_name: str | None = None,
                   org_code: str | None = None) -> dict[str, str]:
    """{"C", "O", "CN", "SERIALNUMBER"} of the vetted values; CN defaults to O.

    A mapping is taken as vetted values too (keys C, O, CN, SERIALNUMBER, any case); any other
    key is refused, so no stray name (OU, L, emailAddress, ...) reaches a certificate.
    `company`, `common_name` and `org_code`, when given, replace what `subject` says.
    """
    if isinstance(subject, CertificateSubject):
        given = {"C": subject.country, "O": subject.organization,
                 "CN": subject.common_name or "", "SERIALNUMBER": subject.org_code or ""}
    else:
        given = {str(k).upper(): str(v) for k, v in subject.items()}
        stray = sorted(set(given) - {k for k, _ in SUBJECT_ORDER})
        if stray:
            raise IssueError(f"a certificate subject holds only C, O, CN and serialNumber, "
                             f"not {', '.join(stray)}")
    for key, value in (("O", company), ("CN", common_name), ("SERIALNUMBER", org_code)):
        if value and value.strip():
            given[key] = value
    fields = {k: given[k].strip() for k, _ in SUBJECT_ORDER if (given.get(k) or "").strip()}
    fields["C"] = fields.get("C") or "CN"
    if not fields.get("CN"):
        if not fields.get("O"):
            raise IssueError("no common name and no organisation for the subject")
        fields["CN"] = fields["O"]
    code = fields.get("SERIALNUMBER")
    if code is not None and not _PRINTABLE.fullmatch(code):
        raise IssueError(f"the organisation code {code!r} cannot be a subject serialNumber "
                         "(PrintableString: letters, digits and ' ()+,-./:=?)")
    if len(fields["C"]) != 2 or not fields["C"].isascii() or not fields["C"].isalpha():
        raise IssueError(f"country {fields['C']!r} is not a two-letter code")
    return {k: fields[k] for k, _ in SUBJECT_ORDER if k in fields}


def subject_name(fields: Mapping[str, str]) -> x509.Name:
    """The DN of subject_fields, in the order C, O, CN, serialNumber (one attribute per RDN;
    C and serialNumber PrintableString, O and CN UTF8String)."""
    rdns = []
    for key, attr in SUBJECT_ORDER:
        if fields.get(key):
            rdns.append(x509.Name.build({attr: fields[key]}).chosen[0])
    return x509.Name(name="", value=x509.RDNSequence(rdns))


def validity(ca: CaState, years: int, start: datetime | None = None) -> tuple[datetime, datetime]:
    """From now for `years`, cut at the CA certificate's own notAfter."""
    start = (start or clock.now()).replace(microsecond=0)
    end = min(add_years(start, years), ca.not_after)
    if end <= start:
        raise IssueError("the CA certificate has expired: renew the CA before issuing")
    return start, end


def build_tbs(ca: CaState, *, kind: str, subject: x509.Name, public_key: bytes, serial: int,
              not_before: datetime, not_after: datetime, crl_url: str) -> x509.TbsCertificate:
    if kind not in KEY_USAGE:
        raise IssueError(f"unknown certificate kind {kind!r}")
    exts = [
        {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": False}},
        {"extn_id": "key_usage", "critical": True, "extn_value": KEY_USAGE[kind]},
        {"extn_id": "key_identifier", "critical": False,
         "extn_value": key_identifier(public_key)},
        {"extn_id": "authority_key_identifier", "critical": False,
         "extn_value": {"key_identifier": ca.key_id}},
    ]
    if crl_url:
        exts.append({"extn_id": "crl_distribution_points", "critical": False, "extn_value": [
            {"distribution_point": {"full_name": [
                x509.GeneralName(name="uniform_resource_identifier", value=crl_url)]}}]})
    return x509.TbsCertificate({
        "version": "v3",
        "serial_number": serial,
        "signature": sig_alg(),
        "issuer": ca.subject,
        "validity": {"not_before": x509_time(not_before), "not_after": x509_time(not_after)},
        "subject": subject,
        "subject_public_key_info": spki_of(public_key),
        "extensions": exts,
    })


def sign_tbs(ca: CaState, tbs: x509.TbsCertificate, issuance: Issuance, kind: str) -> bytes:
    tbs_der = tbs.dump()
    sig = issuance.sign(tbs_der, kind)
    # Certificate ::= SEQUENCE { tbs, sigAlg, BIT STRING sig }, over the exact bytes signed
    return der.tlv(0x30, tbs_der + _SIG_ALG_DER + der.tlv(0x03, b"\x00" + sig))


def _approval_used(session: Session, approval: Approval, kind: str) -> IssuedCertificate | None:
    return session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.approval_audit_id == approval.audit_id,
        IssuedCertificate.kind == kind).limit(1)).first()


def _refuse_used(row: IssuedCertificate, approval: Approval) -> ApprovalRequired:
    return ApprovalRequired(
        f"approval {approval.audit_id} of {approval.case_ref} already issued its {row.kind} "
        f"certificate (serial {row.serial}): one approval gives one pair; approve again to "
        "issue again")


def _issue_one(session: Session, ca: CaState, issuance: Issuance, *, kind: str,
               subject: x509.Name, public_key: bytes, not_before: datetime,
               not_after: datetime, crl_url: str) -> tuple[bytes, str]:
    approval = issuance.approval
    begin_write(session)  # the savepoint below must be inside the caller's transaction
    used = _approval_used(session, approval, kind)
    if used is not None:
        raise _refuse_used(used, approval)
    for _ in range(SERIAL_ATTEMPTS):
        serial = random_serial()
        tbs = build_tbs(ca, kind=kind, subject=subject, public_key=public_key, serial=serial,
                        not_before=not_before, not_after=not_after, crl_url=crl_url)
        subject_org, subject_serial_number = subject_names(subject)
        row = IssuedCertificate(
            issuer_key_id=ca.key_id_hex, issuer=dn_text(ca.subject), serial=f"{serial:x}",
            case_ref=approval.case_ref, kind=kind, subject=dn_text(subject),
            subject_org=subject_org, subject_serial_number=subject_serial_number,
            not_before=not_before, not_after=not_after, der=b"", public_key=public_key.hex(),
            approval_audit_id=approval.audit_id, approved_by=approval.staff,
        )
        try:
            # reserve the serial and the (approval, kind) slot first: the unique constraints
            # decide, also against another process issuing at the same time
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            used = _approval_used(session, approval, kind)
            if used is not None:
                raise _refuse_used(used, approval) from None
            continue
        try:
            cert = sign_tbs(ca, tbs, issuance, kind)
        except BaseException:
            # refused or failed: give the serial and the approval's slot back, so a caller
            # that commits anyway (to record the failure) leaves no empty certificate row
            session.delete(row)
            session.flush()
            raise
        row.der = cert
        session.flush()
        return cert, row.serial
    raise IssueError("could not find an unused serial number")  # pragma: no cover


def issue_pair(session: Session, ca: CaState, approval: Approval, check: ApprovalCheck,
               csr_public_key: bytes, subject: CertificateSubject | Mapping[str, str], *,
               company: str | None = None, common_name: str | None = None,
               org_code: str | None = None, crl_url: str = "",
               validity_years: int = 10) -> IssuedPair:
    """Sign + encryption certificates and the envelope for one approved request.

    `subject` holds the vetted names (CertificateSubject, or a mapping of C/O/CN/SERIALNUMBER;
    `company`, `common_name`, `org_code` override it): never the request's own subject.
    `check` confirms `approval` (in the caller's transaction) before each signature, and the
    signing key must be the one the approval names. Rows are added to `session` (flushed, not
    committed: the caller commits with its own records).
    """
    approval = check_approval(approval)
    try:
        sm2.check_public_key(csr_public_key)
    except sm2.SM2Error as exc:
        raise IssueError(f"the request's public key is not usable: {exc}") from exc
    issuance = ca.signer.begin_issuance(approval, check)
    issuance.confirm_request_key(csr_public_key)
    name = subject_name(subject_fields(subject, company, common_name, org_code))
    not_before, not_after = validity(ca, validity_years)
    sign_der, sign_serial = _issue_one(session, ca, issuance, kind="sign", subject=name,
                                       public_key=csr_public_key, not_before=not_before,
                                       not_after=not_after, crl_url=crl_url)
    enc_pub, env = issuance.make_encryption_key(csr_public_key)
    enc_der, enc_serial = _issue_one(session, ca, issuance, kind="enc", subject=name,
                                     public_key=enc_pub, not_before=not_before,
                                     not_after=not_after, crl_url=crl_url)
    return IssuedPair(case_ref=approval.case_ref, sign_cert=sign_der, enc_cert=enc_der,
                      envelope=env, sign_serial=sign_serial, enc_serial=enc_serial,
                      not_before=not_before, not_after=not_after, approval=approval)


def checked_request(session: Session, csr_der: bytes, what: str = "the request") -> CsrReport:
    """check_csr again, at issuing time; IssueError unless the request is valid."""
    from mailbot.pki.csr import check_csr

    report = check_csr(csr_der, key_already_certified=key_already_certified(session))
    if not report.valid or report.public_key is None:
        raise IssueError(f"the CSR of {what} is not valid: {', '.join(report.codes)}")
    return report


def issue_from_csr(session: Session, ca: CaState, approval: Approval, check: ApprovalCheck,
                   csr_der: bytes, subject: CertificateSubject, *, crl_url: str = "",
                   validity_years: int = 10) -> IssuedPair:
    """Check the CSR again (check_csr) and issue under `approval` with the vetted `subject`
    (the request's own subject is not used); refuses an invalid request."""
    report = checked_request(session, csr_der, approval.case_ref)
    assert report.public_key is not None
    return issue_pair(session, ca, approval, check, report.public_key, subject,
                      crl_url=crl_url, validity_years=validity_years)


def key_already_certified(session: Session) -> Callable[[bytes], bool]:
    """A callable for check_csr: is this public key in an unrevoked certificate of ours?"""

    def known(pub: bytes) -> bool:
        q = select(IssuedCertificate.id).where(IssuedCertificate.public_key == bytes(pub).hex(),
                                               IssuedCertificate.revoked_at.is_(None)).limit(1)
        return session.scalars(q).first() is not None

    return known


