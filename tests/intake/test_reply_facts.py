"""Where an answer to a message goes, and why none may go (RFC 3834; lists and spam)."""

from __future__ import annotations

import pytest

from mailbot.intake.analyse import analyse_message


def _mail(*headers: str, sender: str = "张三 <zhang@example.cn>") -> bytes:
    lines = [f"From: {sender}", "To: xmport@189.cn", "Subject: hello",
             "Message-ID: <m1@example.cn>", *headers, "", "body", ""]
    return "\r\n".join(lines).encode()


def test_a_person_is_answered_at_reply_to_else_from() -> None:
    assert analyse_message(_mail()).reply_address == "zhang@example.cn"
    facts = analyse_message(_mail("Reply-To: 办事员 <desk@example.cn>"))
    assert facts.reply_address == "desk@example.cn"
    assert facts.no_reply_reason is None


@pytest.mark.parametrize(("header", "reason"), [
    ("Auto-Submitted: auto-replied", "automatic"),
    ("Return-Path: <>", "bounce"),  # a null reverse path is a delivery report's mark
    ("List-Id: <staff.example.cn>", "list"),
    ("List-Unsubscribe: <mailto:leave@example.cn>", "list"),
    ("X-Spam-Flag: YES", "spam"),
    ("X-Spam-Status: Yes, score=9.1", "spam"),
    ("X-Spam: yes", "spam"),
    ("X-MS-Exchange-Organization-SCL: 7", "spam"),
])
def test_why_no_answer_may_go(header: str, reason: str) -> None:
    assert analyse_message(_mail(header)).no_reply_reason == reason


@pytest.mark.parametrize("header", ["X-Spam-Status: No, score=0.1", "X-Spam-Flag: NO",
                                    "X-MS-Exchange-Organization-SCL: 1",
                                    "Auto-Submitted: no"])
def test_clean_verdicts_are_no_reason(header: str) -> None:
    assert analyse_message(_mail(header)).no_reply_reason is None


def test_a_bounce_is_never_answered() -> None:
    raw = _mail(sender="MAILER-DAEMON@mx.example.cn")
    assert analyse_message(raw).no_reply_reason == "bounce"


def test_no_address_at_all_is_a_null_sender() -> None:
    raw = b"To: xmport@189.cn\r\nSubject: hello\r\n\r\nbody\r\n"
    assert analyse_message(raw).no_reply_reason == "null_sender"
