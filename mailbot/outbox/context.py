"""What renders each outgoing mail: the template names and the keys of their context.

`app` builds a context from the case (plain JSON: strings, numbers, lists, dicts) and stores
it on the outbox row; the outbox renders it with Jinja2 (`render.py`) and, for the issued and
revoked replies, the notice PDF (`notice.py`). The templates read only these keys.

Every template gets:
    ref             "XM-2026-0007", or None (unrelated mail, the digest)
    kind            "new" | "revoke" | None
    company         the organisation as the form (or subject) names it, or None
    received_at     when the answered message arrived, "2026-11-30 09:15" (Beijing time), or None
    original_subject  the answered message's subject, or None
    mailbox         our address, "xmport@189.cn"
    hotline         "0592-5653395"
    office_hours    the service hall's hours (source document §四)
    hall_address    the service hall's address

acknowledgement  nothing more
incomplete       findings: [{"code", "severity": "reject"|"missing"|"warn", "detail",
                             "facts": {...}}], every finding of the case; the template says
                             the blocking ones (and the warnings meant for the applicant)
                             each as one sentence (sentences.py)
rejected         reason: the staff member's reason, as written
expired          days: how long the case waited; findings: as for incomplete (what was missing)
issued           org_code; issued_at "2026-11-30 10:02"; certificates: [{"role": "sign"|"enc",
                 "filename": "sign.cer"|"env.cer", "serial": upper-case hex, "subject",
                 "not_before", "not_after" ("2026-11-30 10:02:00", Beijing time),
                 "sm3_fingerprint": upper-case hex pairs joined by ":"}];
                 root_chain_path: where to download the SM2 root chain;
                 notice_filename: NOTICE_FILENAME
revoked          org_code; revoked_at; reason: the CRLReason ("keyCompromise", …), which
                 the preparer turns into reason_text (templates/findings.toml
                 [labels.revocation_reasons]) before rendering; certificates:
                 as for issued (the revoked pair); root_chain_path; notice_filename
unrelated        nothing more (what this mailbox is for, the subject form, the hotline)
digest           date "2026-11-30"; to_call: [{"ref", "company", "handler_name",
                 "handler_phone", "delivered_at"}]; awaiting: [{"ref", "company", "state",
                 "since", "urgent": bool}] (state awaiting_confirmation:
                 waiting for the phone call; approved: waiting for issuance);; parked: [{"id", "subject", "from_addr",
                 "error"}]; failures: [{"kind": "move"|"sent_copy", "where", "since",
                 "error"}]; outbox_failed: [{"ref", "to", "template", "error"}];
                 bounces: [{"ref", "at", "from_addr", "subject"}] (our mail that bounced)
"""

from __future__ import annotations

ACKNOWLEDGEMENT = "acknowledgement"
INCOMPLETE = "incomplete"
REJECTED = "rejected"
EXPIRED = "expired"
ISSUED = "issued"
REVOKED = "revoked"
UNRELATED = "unrelated"
DIGEST = "digest"
TEMPLATES = (ACKNOWLEDGEMENT, INCOMPLETE, REJECTED, EXPIRED, ISSUED, REVOKED, UNRELATED, DIGEST)

# The results the applicant must get whatever the per-address daily cap says.
CAP_EXEMPT = frozenset({ISSUED, REVOKED})

NOTICE_FILENAME = "中国电子口岸数字证书申请受理告知书.pdf"
ROOT_CHAIN_PATH = ("中国电子口岸门户网站（chinaport.gov.cn）→ 客服专区 → 下载中心 → 认证服务 → "
                   "国家信任源 SM2 证书链")
