"""Subject grammar: 企业名称+数字证书申办, prefixes, case tags, lenient variants, 注销 hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.config import load_rule_settings
from mailbot.intake.subject import (
    DEFAULTS,
    ApplicationSubject,
    is_auto_reply_subject,
    parse_subject,
    strip_prefixes,
)

ORG = "厦门海天测试科技有限公司"


@pytest.mark.parametrize("subject", [
    f"{ORG}+数字证书申办",
    f"{ORG}＋数字证书申办",
    f"{ORG} + 数字证书申办",
    f"{ORG}　＋　数字证书申办 ",
    f"Re: {ORG}+数字证书申办",
    f"RE: RE: {ORG}+数字证书申办",
    f"回复：{ORG}+数字证书申办",
    f"答复: 回复：{ORG}+数字证书申办",
    f"Fw: {ORG}+数字证书申办",
    f"FW：Fwd: 转发：{ORG}+数字证书申办",
    f"Re[2]: {ORG}+数字证书申办",
    f"[XM-2026-0007] {ORG}+数字证书申办",
    f"Re: [XM-2026-0007] {ORG}+数字证书申办",
])
def test_strict_subjects(subject: str) -> None:
    s = parse_subject(subject)
    assert s.is_application and s.is_strict
    assert s.company == ORG
    assert s.findings == []
    assert not s.is_revocation_hint


@pytest.mark.parametrize("company", ["厦门鹭江（集团）有限公司", "厦门鹭江(集团)有限公司",
                                     "Xiamen Test Co., Ltd.", "厦门A+B科技有限公司"])
def test_company_names_keep_their_parentheses(company: str) -> None:
    assert parse_subject(f"{company}+数字证书申办").company == company


def test_case_tag_is_extracted_and_removed() -> None:
    s = parse_subject(f"回复：[XM-2026-0007] {ORG}+数字证书申办")
    assert s.case_ref == "XM-2026-0007"
    assert s.company == ORG
    assert parse_subject("补充材料 【XM-2026-0123】").case_ref == "XM-2026-0123"
    assert parse_subject(f"{ORG}+数字证书申办").case_ref is None


@pytest.mark.parametrize("subject,company", [
    (f"{ORG}数字证书申办", ORG),
    (f"{ORG} 数字证书申请", ORG),
    (f"{ORG}-证书申办", ORG),
    (f"{ORG}+数字证书申办（注销）", ORG),
    ("数字证书申办", None),
    (f"关于{ORG}申请数字证书", f"关于{ORG}"),
])
def test_lenient_subjects_warn(subject: str, company: str | None) -> None:
    s = parse_subject(subject)
    assert s.is_application and not s.is_strict
    assert s.company == company
    assert [(f.code, f.severity) for f in s.findings] == [("subject_format", "warn")]


@pytest.mark.parametrize("subject", [f"{ORG}+数字证书注销", f"{ORG}+数字证书申办（注销）",
                                     f"{ORG} 证书注销"])
def test_revocation_hint(subject: str) -> None:
    assert parse_subject(subject).is_revocation_hint


@pytest.mark.parametrize("subject", ["", "会议通知", "Re: hello", "关于春节放假的通知"])
def test_not_applications(subject: str) -> None:
    s = parse_subject(subject)
    assert not s.is_application and s.company is None and s.findings == []


def test_strip_prefixes_is_bounded_and_total() -> None:
    assert strip_prefixes("Re: " * 1000 + "x").startswith("Re:")  # bounded, never hangs
    assert strip_prefixes("Re: Fw: 回复：x") == "x"


@pytest.mark.parametrize("subject,auto", [
    ("自动回复: 您的邮件", True), ("Automatic reply: hi", True), ("Auto-Reply: x", True),
    ("Out of Office: back Monday", True), ("Re: 自动回复：x", True), ("回复: 申请", False),
    (f"{ORG}+数字证书申办", False)])
def test_auto_reply_subjects(subject: str, auto: bool) -> None:
    assert is_auto_reply_subject(subject) is auto


def test_shipped_settings_equal_builtin_defaults() -> None:
    shipped = load_rule_settings(Path(__file__).resolve().parents[2] / "rules")["subject"]
    assert {k: shipped[k] for k in DEFAULTS} == DEFAULTS


def test_settings_override_keywords() -> None:
    settings = {"subject": {"keyword": "证书办理", "lenient_keywords": ["证书办理"]}}
    s = ApplicationSubject.parse(f"{ORG}+证书办理", settings)
    assert s.is_strict and s.company == ORG
