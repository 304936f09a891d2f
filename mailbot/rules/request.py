"""Rules on the certificate request: the PKI's verdict, and its names against the form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailbot.findings import Finding
from mailbot.rules.engine import Rule
from mailbot.rules.validators import same_company
from mailbot.rules.view import CaseView

SM2_ONLY = ("since 2022-07-01 the Xiamen sub-centre issues SM2 certificates only and no longer "
            "accepts RSA requests (RSA certificates issued before stay valid until they expire)"
            "; make a new SM2 key pair and a GM/T 0092-2020 request")
# The PKI's own codes for a request (CONTRACTS.md): the check decides, this rule reports.
CSR_CODES = ("csr_unreadable", "csr_not_sm2", "csr_bad_signature", "csr_wrong_sm2_id",
             "csr_bad_public_key", "csr_duplicate_key", "csr_unknown_critical_attribute",
             "csr_encoding_quirk", "csr_empty_subject", "csr_temp_key_unreadable")


class CsrRequest(Rule):
    name = "csr"
    description = "the request is a valid SM2 request signed with the standard SM2 ID (PKI check)"
    codes = CSR_CODES

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        if view.csr is None:
            return []  # no request: a missing material, said by the materials rule
        out = []
        for f in getattr(view.csr, "findings", None) or []:
            if f.code == "csr_not_sm2" and "2022-07-01" not in f.detail:
                f = Finding(f.code, f.severity, f"{f.detail}: {SM2_ONLY}",
                            {**dict(f.facts), "since": "2022-07-01"})
            out.append(f)
        return out


def _csr_field(view: CaseView, key: str) -> str | None:
    # the names only: on a recorded case they come from the kept facts, not the request
    value = view.request_names.get(key)
    return str(value) if value else None


class CnMismatch(Rule):
    name = "cn_mismatch"
    description = "the request's CN is the form's 通用名 (by default the 申请单位)"
    codes = ("cn_mismatch",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        cn = _csr_field(view, "CN")
        want = (view.form.get("common_name") or "").strip() \
            or (view.form.get("applicant_org") or "").strip()
        if not cn or not want or same_company(cn, want):
            return []
        return [Finding("cn_mismatch", "warn",
                        f"the request's CN {cn!r} is not the form's 通用名 {want!r}; the "
                        "certificate takes the form's value",
                        {"csr_cn": cn, "form_cn": want})]


class CompanyMismatch(Rule):
    name = "company_mismatch"
    description = "the company in the subject and the request's O are the form's 申请单位"
    codes = ("company_mismatch",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        org = (view.form.get("applicant_org") or "").strip()
        if not org:
            return []
        out = []
        subject_company = view.subject_info.company if view.subject_info is not None else None
        for where, value in (("subject", subject_company), ("csr", _csr_field(view, "O"))):
            if value and not same_company(value, org):
                label = "mail subject" if where == "subject" else "request's O"
                out.append(Finding("company_mismatch", "warn",
                                   f"the {label} names {value!r}, the form's 申请单位 is {org!r}",
                                   {"where": where, "value": value, "form": org}))
        return out
