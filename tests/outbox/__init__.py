"""Realistic outbox contexts, one per template, shaped as mailbot/outbox/context.py says."""

from __future__ import annotations

from typing import Any

from mailbot.outbox.context import NOTICE_FILENAME, ROOT_CHAIN_PATH

COMPANY = "厦门象屿港务有限公司"
ORG_CODE = "91350200MA31XXXX8K"

BASE: dict[str, Any] = {
    "ref": "XM-2026-0007", "kind": "new", "company": COMPANY,
    "received_at": "2026-11-30 09:15", "original_subject": f"{COMPANY}+数字证书申办",
    "mailbox": "xmport@189.cn", "hotline": "0592-5653395",
    "office_hours": "星期一至星期五（法定节假日除外）上午 8:30-11:45，下午 13:30-16:45",
    "hall_address": "厦门市湖里区象兴一路 11 号海关大楼 7 楼服务大厅",
}

# What a case with a scanned ID missing, an RSA request and a few warnings holds.
FINDINGS: list[dict[str, Any]] = [
    {"code": "subject_format", "severity": "warn", "detail": "subject does not follow",
     "facts": {"subject": "申请证书", "problem": "wording", "expected": "企业名称+数字证书申办"}},
    {"code": "missing_material", "severity": "missing", "detail": "missing material: legal_rep_id",
     "facts": {"material": "legal_rep_id"}},
    {"code": "missing_material", "severity": "missing",
     "detail": "missing material: crypto_product_cert", "facts": {"material": "crypto_product_cert"}},
    {"code": "csr_not_sm2", "severity": "reject", "detail": "the request holds RSA, not SM2",
     "facts": {"algorithm": "RSA", "since": "2022-07-01"}},
    {"code": "csr_wrong_sm2_id", "severity": "reject", "detail": "empty SM2 ID", "facts": {}},
    {"code": "cn_mismatch", "severity": "warn", "detail": "CN differs",
     "facts": {"csr_cn": "xiangyu", "form_cn": COMPANY}},
    {"code": "company_mismatch", "severity": "warn", "detail": "subject names another",
     "facts": {"where": "subject", "value": "象屿", "form": COMPANY}},
    {"code": "rule_failed", "severity": "warn", "detail": "rule org_code failed",
     "facts": {"rule": "org_code"}},
]

CERTIFICATES: list[dict[str, Any]] = [
    {"role": "sign", "filename": "sign.cer", "serial": "5F3A9C0D11E2B4A7C8D9E0F1A2B3C4D5E6F70819",
     "subject": f"C=CN, O={COMPANY}, CN={COMPANY}", "not_before": "2026-11-30 10:02:00",
     "not_after": "2036-11-30 10:02:00", "sm3_fingerprint": ":".join(["A7"] * 32)},
    {"role": "enc", "filename": "env.cer", "serial": "1A2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D",
     "subject": f"C=CN, O={COMPANY}, CN={COMPANY}", "not_before": "2026-11-30 10:02:00",
     "not_after": "2036-11-30 10:02:00", "sm3_fingerprint": ":".join(["3C"] * 32)},
]

NO_CASE = {"ref": None, "kind": None, "company": None, "received_at": None,
           "original_subject": None}

EXTRA: dict[str, dict[str, Any]] = {
    "acknowledgement": {},
    "incomplete": {"findings": FINDINGS},
    "rejected": {"reason": "营业执照复印件未加盖公章，请加盖公章后重新申请。"},
    "expired": {"days": 30, "findings": FINDINGS},
    "issued": {"org_code": ORG_CODE, "issued_at": "2026-11-30 10:02",
               "certificates": CERTIFICATES, "root_chain_path": ROOT_CHAIN_PATH,
               "notice_filename": NOTICE_FILENAME},
    "revoked": {"kind": "revoke", "org_code": ORG_CODE, "revoked_at": "2026-12-01 09:40",
                "reason_text": "密钥丢失、泄露或损毁", "certificates": CERTIFICATES,
                "root_chain_path": ROOT_CHAIN_PATH, "notice_filename": NOTICE_FILENAME},
    "unrelated": {**NO_CASE, "original_subject": "合作洽谈"},
    "digest": {**NO_CASE, "date": "2026-11-30",
               "to_call": [{"ref": "XM-2026-0003", "company": "厦门甲贸易有限公司",
                            "handler_name": "王五", "handler_phone": "13800000000",
                            "delivered_at": "2026-11-29 16:00"}],
               "awaiting": [{"ref": "XM-2026-0005", "company": "厦门乙物流有限公司",
                             "state": "awaiting_confirmation", "since": "2026-11-28 10:00",
                             "urgent": True},
                            {"ref": "XM-2026-0006", "company": None, "state": "approved",
                             "since": "2026-11-29 11:00", "urgent": False}],
               "parked": [{"id": 12, "subject": "Fw: 材料", "from_addr": "a@example.com",
                           "error": "UnicodeDecodeError"}],
               "failures": [{"kind": "move", "where": "imap://imap.189.cn/INBOX",
                             "since": "2026-11-30 03:00", "error": "quota exceeded"}],
               "outbox_failed": [{"ref": "XM-2026-0004", "to": "ca@example.com",
                                  "template": "issued", "error": "550 no such user"}],
               "bounces": [{"ref": "XM-2026-0002", "at": "2026-11-30 08:10",
                            "from_addr": "MAILER-DAEMON@example.com",
                            "subject": "Undelivered Mail Returned to Sender"}]},
}


def context(template: str, **over: Any) -> dict[str, Any]:
    """A full context for `template`, with `over` replacing keys."""
    return {**BASE, **EXTRA[template], **over}
