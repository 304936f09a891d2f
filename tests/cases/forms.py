"""A complete, valid application form for case tests: the rules run on a case when a reply
joins it or staff edit or override, so a test about something else gives them nothing to
find (a form-less case is held by delivery_fields_missing, as the worker would have said)."""

from __future__ import annotations

ORG = "厦门某某科技有限公司"
ORG_CODE = "91350200MA2Y00000K"  # valid GB 32100 check character, Xiamen region
FORM: dict[str, str] = {"applicant_org": ORG, "org_code": ORG_CODE, "email": "cert@example.cn",
                        "handler_name": "王五", "handler_phone": "13800138000"}


def form(**changes: str) -> dict[str, str]:
    return {**FORM, **changes}
