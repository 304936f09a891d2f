"""The ordered table of every rule: the order findings are reported in (the mail, its
materials, the request, the form's values, the register)."""

from __future__ import annotations

from mailbot.rules.applicant import (
    DeliveryFields,
    EmailAddress,
    IdNumbers,
    MobilePhones,
    OrgCode,
    OutsideDistrict,
    SenderNotFormAddress,
)
from mailbot.rules.engine import Rule
from mailbot.rules.materials import MaterialsRule
from mailbot.rules.message import ApplicationTypeAmbiguous, KeyCompromise, SubjectFormat
from mailbot.rules.register import (
    AlreadyCertified,
    RenamedOrganisation,
    RevokeForeignCertificate,
    RevokeSerialMismatch,
)
from mailbot.rules.request import CnMismatch, CompanyMismatch, CsrRequest

RULES: tuple[Rule, ...] = (
    SubjectFormat(),
    ApplicationTypeAmbiguous(),
    MaterialsRule(),
    CsrRequest(),
    CnMismatch(),
    CompanyMismatch(),
    OrgCode(),
    OutsideDistrict(),
    IdNumbers(),
    MobilePhones(),
    EmailAddress(),
    SenderNotFormAddress(),
    DeliveryFields(),
    KeyCompromise(),
    AlreadyCertified(),
    RenamedOrganisation(),
    RevokeForeignCertificate(),
    RevokeSerialMismatch(),
)
RULES_BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}


def describe() -> list[dict[str, object]]:
    """name, description, needs_database, codes of every rule (for docs and `inspect`)."""
    return [{"name": r.name, "description": r.description, "needs_database": r.needs_database,
             "codes": list(r.codes)} for r in RULES]
