"""Rules on the form's values: 机构代码, the people, the address, what issuance needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailbot.findings import Finding
from mailbot.rules.engine import Rule
from mailbot.rules.validators import (
    email_problem,
    in_district,
    is_resident_id_type,
    is_uscc_length,
    mobile_problem,
    resident_id_problem,
    uscc_problem,
    uscc_region,
)
from mailbot.rules.view import CaseView

PEOPLE = (("legal_rep", "法定代表人/主要负责人"), ("handler", "经办人"))


def _value(view: CaseView, key: str) -> str:
    return (view.form.get(key) or "").strip()


class OrgCode(Rule):
    name = "org_code"
    description = "机构代码 is an 18-character unified social credit code with a valid check " \
                  "character (GB 32100)"
    codes = ("org_code_invalid", "org_code_not_uscc")

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        code = _value(view, "org_code")
        if not code:
            return []  # an empty field is delivery_fields_missing
        if not is_uscc_length(code):
            return [Finding("org_code_not_uscc", "warn",
                            f"机构代码 {code!r} is not an 18-character unified social credit "
                            "code: staff check the other qualification's code",
                            {"org_code": code})]
        problem = uscc_problem(code)
        if problem:
            return [Finding("org_code_invalid", "reject",
                            f"机构代码 {code!r} is no valid unified social credit code: {problem}",
                            {"org_code": code, "problem": problem})]
        return []


class OutsideDistrict(Rule):
    name = "outside_district"
    description = "the credit code's region is in the Xiamen customs district (属地管理)"
    codes = ("outside_district",)
    defaults: Mapping[str, Any] = {"prefixes": ["3502", "3505", "3506", "3508"]}

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        code = _value(view, "org_code")
        if not code or not is_uscc_length(code) or uscc_problem(code):
            return []  # only a valid credit code says where it was registered
        prefixes = tuple(params.get("prefixes") or ())
        if in_district(code, prefixes):
            return []
        region = uscc_region(code)
        return [Finding("outside_district", "warn",
                        f"机构代码 {code!r} was registered in region {region}, outside the "
                        f"Xiamen customs district ({', '.join(prefixes)}): 属地管理, staff decide",
                        {"org_code": code, "region": region, "prefixes": list(prefixes)})]


class IdNumbers(Rule):
    name = "id_number"
    description = "resident ID numbers have a valid check digit (GB 11643), where 证件类型 is " \
                  "居民身份证"
    codes = ("id_number_invalid",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        out = []
        for role, label in PEOPLE:
            number = _value(view, f"{role}_id_no")
            if not number or not is_resident_id_type(_value(view, f"{role}_id_type")):
                continue
            problem = resident_id_problem(number)
            if problem:
                out.append(Finding("id_number_invalid", "reject",
                                   f"{label}'s 证件号码 {number!r}: {problem}",
                                   {"role": role, "id_no": number, "problem": problem}))
        return out


class MobilePhones(Rule):
    name = "phone_not_mobile"
    description = "the legal representative's and the handler's 联系电话 are mobile numbers"
    codes = ("phone_not_mobile",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        out = []
        for role, label in PEOPLE:
            phone = _value(view, f"{role}_phone")
            problem = mobile_problem(phone) if phone else None
            if problem:
                out.append(Finding("phone_not_mobile", "reject",
                                   f"{label}'s 联系电话 {phone!r}: {problem}",
                                   {"role": role, "phone": phone, "problem": problem}))
        return out


class EmailAddress(Rule):
    name = "email_invalid"
    description = "the form's 邮件地址 is deliverable: local@domain, a dotted domain, no spaces"
    codes = ("email_invalid",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        address = _value(view, "email")
        problem = email_problem(address) if address else None
        if not problem:
            return []
        return [Finding("email_invalid", "reject", f"邮件地址 {address!r}: {problem}",
                        {"email": address, "problem": problem})]


class SenderNotFormAddress(Rule):
    name = "sender_not_form_address"
    description = "the mail comes from the form's 邮件地址 (certificates go there anyway)"
    codes = ("sender_not_form_address",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        address, sender = _value(view, "email"), (view.sender or "").strip()
        if not address or not sender or email_problem(address):
            return []
        if sender.casefold() == address.casefold():
            return []
        return [Finding("sender_not_form_address", "warn",
                        f"sent from {sender}, the form's 邮件地址 is {address}: certificates go "
                        "to the form's address", {"sender": sender, "email": address})]


DELIVERY_LABELS = {"applicant_org": "申请单位", "org_code": "机构代码", "email": "邮件地址",
                   "handler_name": "经办人", "handler_phone": "经办人联系电话"}


class DeliveryFields(Rule):
    name = "delivery_fields"
    description = "the form's 申请单位, 机构代码, 邮件地址 and the handler's name and mobile " \
                  "are known (read or typed in by staff)"
    codes = ("delivery_fields_missing",)
    defaults: Mapping[str, Any] = {"fields": list(DELIVERY_LABELS)}

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        if "application_form" not in view.materials_present:
            return []  # no form yet: the missing form is the materials rule's finding
        missing = [k for k in params.get("fields") or () if not _value(view, k)]
        if not missing:
            return []
        names = "、".join(DELIVERY_LABELS.get(k, k) for k in missing)
        return [Finding("delivery_fields_missing", "missing",
                        f"the form's {names} not known (scanned form: staff type them in with "
                        "`cases edit`)", {"fields": missing})]
