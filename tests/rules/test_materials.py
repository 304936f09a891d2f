"""Required materials and the missing-material finding: one home, in the rules."""

from __future__ import annotations

import pytest

from mailbot.config import load_rule_settings
from mailbot.findings import Finding
from mailbot.intake.facts import AttachmentFact, MessageFacts
from mailbot.rules.materials import (
    REQUIRED_MATERIALS,
    check_materials,
    missing_material,
    required_materials,
)


def _facts(kind: str, *materials: str, findings: list[Finding] | None = None) -> MessageFacts:
    atts = [AttachmentFact(filename=f"{m}.pdf", content_type="application/pdf", size=1,
                           materials=[m]) for m in materials]
    return MessageFacts(kind=kind, attachments=atts, findings=list(findings or []))


def test_the_shipped_rules_file_equals_the_defaults() -> None:
    assert required_materials(load_rule_settings()) == REQUIRED_MATERIALS
    assert required_materials(None) == REQUIRED_MATERIALS


def test_revocation_needs_the_certificate_not_the_request_or_product_certificate() -> None:
    f = _facts("revoke", "application_form", "business_licence", "legal_rep_id", "handler_id")
    check_materials(f)
    assert f.missing == ["certificate"]
    assert [x.facts["material"] for x in f.findings] == ["certificate"]


def test_findings_go_between_the_message_and_the_request() -> None:
    mail = Finding("subject_format", "warn", "another wording")
    request = Finding("csr_not_sm2", "reject", "RSA")
    f = _facts("new", "application_form", "csr", findings=[mail, request])

    class Report:  # the CSR check's report: its findings are the request's
        findings = [request]

    f.csr = Report()  # type: ignore[assignment]
    check_materials(f)
    assert [x.code for x in f.findings] == ["subject_format"] + ["missing_material"] * 4 \
        + ["csr_not_sm2"]
    assert f.missing == ["business_licence", "legal_rep_id", "handler_id", "crypto_product_cert"]
    check_materials(f)  # again: nothing doubled
    assert [x.code for x in f.findings].count("missing_material") == 4


def test_kinds_without_materials_have_none_missing() -> None:
    for kind in ("reply", "auto_reply", "bounce", "unrelated"):
        f = _facts(kind)
        check_materials(f)
        assert f.missing == [] and f.findings == []


def test_one_wording_for_the_missing_material_finding() -> None:
    f = missing_material("csr")
    assert (f.code, f.severity, f.detail, dict(f.facts)) == (
        "missing_material", "missing", "missing material: csr", {"material": "csr"})


def test_a_bad_required_table_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown material"):
        required_materials({"materials": {"required": {"new": ["application_form", "fax"]}}})
    with pytest.raises(ValueError, match="unknown kind"):
        required_materials({"materials": {"required": {"renew": ["csr"]}}})
    custom = required_materials({"materials": {"required": {"revoke": ["application_form"]}}})
    assert custom["revoke"] == ("application_form",) and custom["new"] == REQUIRED_MATERIALS["new"]
