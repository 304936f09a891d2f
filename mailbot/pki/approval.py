"""The approval an end-entity signature is made under, and the check the signer asks to confirm it.

The PKI knows no cases. It only knows that someone outside it approved one request: an
`Approval` names the case, the staff member, when, the id of the record that says so (for
mailbot: the audit_log row that moved the case to ``approved``) and the fingerprint of the
approved request's public key. The PKI cannot tell a real approval from a hand-made one, so it
never trusts the value: before every end-entity signature the signer hands it to an
`ApprovalCheck` the caller gives it (mailbot.cases.approval.CaseApprovalCheck, wired by
mailbot.app), which re-reads the record in the signing transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from mailbot.pki import sm2
from mailbot.pki.errors import ApprovalRequired

_HEX64 = re.compile(r"[0-9a-f]{64}")


def key_fingerprint(public_key: bytes) -> str:
    """SM3 (lowercase hex) of the 65-byte uncompressed SM2 point 04||X||Y.

    The one definition of "the key of a request" the approval carries and the signer compares;
    the key is checked to be a valid SM2 point first (SM2Error otherwise).
    """
    pub = bytes(public_key)
    sm2.check_public_key(pub)
    return sm2.sm3(pub).hex()


@dataclass(frozen=True)
class Approval:
    """One approval of one request: who approved which case, when, under which record."""

    case_ref: str
    staff: str
    at: datetime
    audit_id: int  # the id of the record (audit_log row) that moved the case to approved
    key_fingerprint: str  # key_fingerprint() of the approved request's public key


@runtime_checkable
class ApprovalCheck(Protocol):
    """Confirms an approval still stands; raises ApprovalRequired (saying why) when not."""

    def confirm(self, approval: Approval) -> None: ...


def check_approval(approval: object) -> Approval:
    """Refuse unless `approval` is a complete Approval (shape only; the check confirms it)."""
    if not isinstance(approval, Approval):
        raise ApprovalRequired("refusing to sign: no approval record for this request")
    complete = (
        isinstance(approval.case_ref, str) and approval.case_ref.strip()
        and isinstance(approval.staff, str) and approval.staff.strip()
        and isinstance(approval.at, datetime)
        and isinstance(approval.audit_id, int) and not isinstance(approval.audit_id, bool)
        and approval.audit_id > 0
        and isinstance(approval.key_fingerprint, str)
        and _HEX64.fullmatch(approval.key_fingerprint)
    )
    if not complete:
        raise ApprovalRequired("refusing to sign: the approval record is incomplete")
    return approval


def check_is_a_check(check: object) -> ApprovalCheck:
    """Refuse unless the caller handed in something that can confirm approvals."""
    if check is None or not callable(getattr(check, "confirm", None)):
        raise ApprovalRequired("refusing to sign: no approval check was given to the signer")
    return check  # type: ignore[return-value]
