"""PKI tables: certificates issued here (with revocation state) and the CRL counter.

They reference no table outside the PKI: the approval a certificate was signed under is kept
by its id and staff name only (the case side records which certificates a case got).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.clock import now
from mailbot.db import Base, UTCDateTime

if TYPE_CHECKING:
    from asn1crypto import x509

CERT_KINDS = ("sign", "enc", "ca")

# RFC 5280 CRLReason names -> codes (7 is unused by the RFC)
REVOCATION_REASONS: dict[str, int] = {
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
    "superseded": 4, "cessationOfOperation": 5, "certificateHold": 6, "removeFromCRL": 8,
    "privilegeWithdrawn": 9, "aACompromise": 10,
}
# What `revoke` accepts: every reason but removeFromCRL, which belongs to delta CRLs only
# (RFC 5280 5.3.1) and never to the full CRLs this CA publishes.
REVOKE_REASONS: tuple[str, ...] = tuple(r for r in REVOCATION_REASONS if r != "removeFromCRL")

SUBJECT_ORG_MAX = 400  # column sizes of IssuedCertificate.subject_org / subject_serial_number
SUBJECT_SERIAL_MAX = 64  # (X.520's upper bounds are 64 for both)


def subject_names(name: x509.Name) -> tuple[str | None, str | None]:
    """(O, serialNumber) of a subject, the first of each in the certificate's order, as
    written; None when absent, unreadable, or longer than its column holds (no name or code
    looked up is that long)."""
    found: dict[str, object] = {}
    try:
        for rdn in name.chosen:
            for atv in rdn:
                key = atv["type"].native
                if key in ("organization_name", "serial_number") and key not in found:
                    found[key] = atv["value"].native
    except Exception:  # noqa: BLE001 - a malformed name: nothing to look it up by
        return None, None
    org, code = found.get("organization_name"), found.get("serial_number")
    return (org if isinstance(org, str) and 0 < len(org) <= SUBJECT_ORG_MAX else None,
            code if isinstance(code, str) and 0 < len(code) <= SUBJECT_SERIAL_MAX else None)


class IssuedCertificate(Base):
    """One certificate signed by a CA key of ours; serial unique per issuer (the DB says so).

    One approval gives one pair: (approval_audit_id, kind) is unique, so a second sign or enc
    certificate under the same approval fails at the database, whoever asks for it.
    """

    __tablename__ = "pki_certificates"
    __table_args__ = (UniqueConstraint("issuer_key_id", "serial"),
                      UniqueConstraint("approval_audit_id", "kind"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_key_id: Mapped[str] = mapped_column(String(64))  # hex SKI of the issuing CA
    issuer: Mapped[str] = mapped_column(Text)  # issuer DN, human-readable
    serial: Mapped[str] = mapped_column(String(42))  # lowercase hex, no leading zeros
    case_ref: Mapped[str | None] = mapped_column(String(20), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(8))  # sign | enc | ca
    subject: Mapped[str] = mapped_column(Text)
    # the subject's O and serialNumber (机构代码) as written, for lookups by name or code
    # (`subject_names`); NULL when absent
    subject_org: Mapped[str | None] = mapped_column(String(SUBJECT_ORG_MAX), nullable=True,
                                                    index=True)
    subject_serial_number: Mapped[str | None] = mapped_column(
        String(SUBJECT_SERIAL_MAX), nullable=True, index=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[str] = mapped_column(String(130), index=True)  # hex of 04||X||Y
    # Approval.audit_id of the approval the signature was made under (no foreign key: the
    # PKI's tables stand alone)
    approval_audit_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class CrlState(Base):
    """Per issuer: the last CRL number used (monotonic) and the last CRL made."""

    __tablename__ = "pki_crl_state"

    issuer_key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)
    this_update: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_update: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
