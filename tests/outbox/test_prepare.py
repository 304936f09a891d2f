"""The preparer: a row's template rendered with its files and, for results, the notice PDF."""

from __future__ import annotations

import email
from email import policy

from mailbot.outbox.models import OutboxMessage
from mailbot.outbox.prepare import Preparer
from tests.outbox import context


def test_the_revocation_reason_is_said_in_chinese_in_mail_and_notice(session) -> None:
    ctx = context("revoked")
    ctx.pop("reason_text", None)
    ctx["reason"] = "keyCompromise"
    row = OutboxMessage(template="revoked", from_addr="xmport@189.cn",
                        to_addrs=["it@example.cn"], recipient_key="it@example.cn",
                        message_id="<XM-2026-0007.abc@189.cn>", references=[], context=ctx,
                        cap_exempt=True)
    session.add(row)
    session.flush()
    raw = Preparer()(session, row)
    mail = email.message_from_bytes(raw, policy=policy.default)
    assert "私钥丢失、泄露或损毁" in mail.get_body(("plain",)).get_content()
    [notice] = list(mail.iter_attachments())
    assert notice.get_filename() == "中国电子口岸数字证书申请受理告知书.pdf"
    from io import BytesIO

    from pypdf import PdfReader

    text = "".join(p.extract_text() for p in PdfReader(BytesIO(notice.get_content())).pages)
    assert "私钥丢失、泄露或损毁" in text.replace(" ", "").replace("\n", "")
