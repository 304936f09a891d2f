"""The subject grammar of an application mail: `企业名称+数字证书申办`, read leniently."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mailbot.findings import Finding
from mailbot.refs import CASE_TAG

# Built-in defaults; equal to the shipped rules/subject.toml so analysis works without settings.
DEFAULTS: dict[str, Any] = {
    "keyword": "数字证书申办",
    "lenient_keywords": [
        "数字证书申办", "数字证书申请", "数字证书注销", "数字证书办理", "数字证书新办",
        "申办数字证书", "申请数字证书", "注销数字证书", "办理数字证书",
        "证书申办", "证书申请", "证书注销", "证书新办",
    ],
    "revocation_keywords": ["注销", "吊销", "撤销证书"],
    "reply_prefixes": ["re", "回复", "答复", "回覆", "fw", "fwd", "转发", "轉發", "aw", "wg",
                       "sv", "vs", "antw", "tr"],
    "auto_reply_subjects": [
        "自动回复", "自動回覆", "自动答复", "Automatic reply", "Auto-Reply", "Auto Reply",
        "AutoReply", "Out of Office", "Out of the Office", "Abwesenheitsnotiz", "休假自动回复",
    ],
}

_PLUS = "+＋"
_SEPARATORS = " \t\u3000+＋-－—_:：、,，|/\\"
_BRACKETS = {"【": "】", "[": "]", "「": "」", "“": "”", '"': '"', "《": "》", "<": ">"}


def subject_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `subject` section of the rule settings over the built-in defaults."""
    merged = dict(DEFAULTS)
    section = (settings or {}).get("subject") if settings else None
    if isinstance(section, Mapping):
        merged.update({k: v for k, v in section.items() if k in DEFAULTS})
    return merged


@lru_cache(maxsize=16)
def _prefix_re(prefixes: tuple[str, ...]) -> re.Pattern[str]:
    alts = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    # "Re:", "RE :", "Re[2]:", "回复：", "Fwd: " ... and our own case tag, in any order.
    return re.compile(rf"^\s*(?:(?:{alts})\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*|"
                      rf"{CASE_TAG.pattern}\s*)", re.I)


def strip_prefixes(subject: str, settings: Mapping[str, Any] | None = None) -> str:
    """The subject without reply/forward prefixes and case tags (any number, any order)."""
    conf = subject_settings(settings)
    pattern = _prefix_re(tuple(conf["reply_prefixes"]))
    text = subject.strip()
    for _ in range(64):  # bounded: hostile subjects can repeat prefixes forever
        stripped = pattern.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return CASE_TAG.sub(" ", text).strip()


def _clean_company(text: str) -> str | None:
    text = text.strip(_SEPARATORS)
    if len(text) >= 2 and text[0] in _BRACKETS and text[-1] == _BRACKETS[text[0]]:
        text = text[1:-1].strip()
    return text or None


@dataclass
class ApplicationSubject:
    """What a subject says: the company, our case number, whether it asks for a certificate
    (strictly or leniently) and whether it hints at revocation (注销)."""

    raw: str
    stripped: str
    company: str | None = None
    case_ref: str | None = None
    is_application: bool = False
    is_strict: bool = False
    is_revocation_hint: bool = False
    findings: list[Finding] = field(default_factory=list)

    @classmethod
    def parse(cls, subject: str | None,
              settings: Mapping[str, Any] | None = None) -> ApplicationSubject:
        conf = subject_settings(settings)
        raw = (subject or "")[:4096]
        tag = CASE_TAG.search(raw)
        stripped = strip_prefixes(raw, settings)
        result = cls(raw=raw, stripped=stripped,
                     case_ref=tag.group(1).upper() if tag else None)
        # Hints are matched on an NFKC-folded copy; the company keeps its own parentheses.
        folded = unicodedata.normalize("NFKC", stripped)
        result.is_revocation_hint = any(k in folded for k in conf["revocation_keywords"])
        keyword = conf["keyword"]
        strict = re.match(rf"^(?P<company>.+?)\s*[{_PLUS}]\s*{re.escape(keyword)}\s*$",
                          stripped, re.S)
        if strict and _clean_company(strict.group("company")):
            result.company = _clean_company(strict.group("company"))
            result.is_application = result.is_strict = True
            return result
        hit = None
        for kw in sorted(conf["lenient_keywords"], key=len, reverse=True):
            i = stripped.find(kw)
            if i >= 0 and (hit is None or i < hit[0]):
                hit = (i, kw)
        if hit is None:
            return result
        result.is_application = True
        result.company = _clean_company(stripped[:hit[0]])
        result.findings.append(Finding(
            "subject_format", "warn",
            f"subject does not follow 企业名称+{keyword}: {stripped!r}",
            facts={"subject": stripped, "expected": f"企业名称+{keyword}"}))
        return result


def parse_subject(subject: str | None,
                  settings: Mapping[str, Any] | None = None) -> ApplicationSubject:
    return ApplicationSubject.parse(subject, settings)


def is_auto_reply_subject(subject: str | None, settings: Mapping[str, Any] | None = None) -> bool:
    """自动回复 / Automatic reply / Out of Office ... at the start (after reply prefixes)."""
    if not subject:
        return False
    conf = subject_settings(settings)
    pattern = _prefix_re(tuple(conf["reply_prefixes"]))
    text = subject.strip()
    for _ in range(16):
        if any(text.lower().startswith(s.lower()) for s in conf["auto_reply_subjects"]):
            return True
        stripped = pattern.sub("", text, count=1)
        if stripped == text:
            return False
        text = stripped
    return False
