"""Revoke a certificate and record it in the case's audit log, in one transaction.

The PKI's `revoke` only marks the certificate; the case side (this wrapper) appends the
``revoke_certificate`` audit row, on the case the certificate was issued for when its
case_ref names one, else as a row of no case. `mailbot ca revoke` calls this.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case
from mailbot.pki.ca import CaState
from mailbot.pki.crl import revoke
from mailbot.pki.models import IssuedCertificate

REVOKE_ACTION = "revoke_certificate"


def revoke_certificate(session: Session, ca: CaState, serial: str | int, *, reason: str,
                       by: str, issuer_key_id: bytes | None = None,
                       via: str = "cli") -> IssuedCertificate:
    """Revoke (RevokeError when it cannot be done) and audit it; flushed, the caller commits."""
    row = revoke(session, ca, serial, reason=reason, by=by, issuer_key_id=issuer_key_id)
    case = None
    if row.case_ref:
        case = session.scalars(select(Case).where(Case.ref == row.case_ref)).first()
    append_audit(session, actor=by.strip(), action=REVOKE_ACTION, case=case, via=via,
                 reason=f"{row.kind} certificate serial {row.serial}: {reason}")
    session.flush()
    return row
