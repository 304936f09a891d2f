"""Findings: what a check found, in the shape the replies, the rules and `inspect` share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["reject", "missing", "warn"]
SEVERITIES: tuple[str, ...] = ("reject", "missing", "warn")


@dataclass(frozen=True)
class Finding:
    """One fact a check found: a stable code, how bad it is, a one-line English detail.

    `facts` carries the values the reply templates need (a material name, a CN, a serial);
    it never holds key material.
    """

    code: str
    severity: Severity
    detail: str
    facts: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def blocks(self) -> bool:
        """`warn` never blocks approval; `reject` and `missing` do."""
        return self.severity != "warn"

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "detail": self.detail}


# Every finding code the code base emits, with its severity (CONTRACTS.md "Findings"): the one
# list the replies' sentences (templates/findings.toml) and the code-literal test walk.
CODES: dict[str, str] = {
    # intake
    "unparseable_message": "reject",
    "application_type_ambiguous": "reject",
    "attachment_rejected": "reject",  # warn for one unreadable file; reject for a bad archive
    "archive_unsupported": "warn",
    "private_key_sent": "reject",
    # rules: the mail and its materials
    "subject_format": "warn",  # for staff only: no reply asks to fix the subject
    "missing_material": "missing",
    "id_scan_inferred": "warn",
    "rule_failed": "warn",
    "key_compromise": "warn",
    # rules: the form
    "org_code_invalid": "reject",
    "org_code_not_uscc": "warn",
    "outside_district": "warn",
    "id_number_invalid": "reject",
    "phone_not_mobile": "reject",
    "email_invalid": "reject",
    "sender_not_form_address": "warn",
    "delivery_fields_missing": "missing",
    # rules: the request against the form, and the register
    "cn_mismatch": "warn",
    "company_mismatch": "warn",
    "already_certified": "warn",
    "renamed_organisation": "warn",
    "revoke_foreign_certificate": "warn",
    "revoke_serial_mismatch": "reject",
    # PKI: the certificate request
    "csr_unreadable": "reject",
    "csr_not_sm2": "reject",
    "csr_bad_signature": "reject",
    "csr_wrong_sm2_id": "reject",
    "csr_bad_public_key": "reject",
    "csr_duplicate_key": "reject",
    "csr_unknown_critical_attribute": "reject",
    "csr_encoding_quirk": "warn",
    "csr_empty_subject": "warn",
    "csr_temp_key_unreadable": "warn",
}
