"""Rules on the mail itself: its subject, the one application type, words of a lost key."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from mailbot.findings import Finding
from mailbot.intake.classify import application_type
from mailbot.intake.subject import ApplicationSubject, strip_prefixes
from mailbot.rules.engine import Rule
from mailbot.rules.validators import key_loss_words
from mailbot.rules.view import CaseView

_BRACKETS = {"【": "】", "[": "]", "「": "」", "“": "”", '"': '"', "《": "》", "<": ">"}
_EDGE = " \t+＋-－—_:：、,，|/\\"


def _company(text: str) -> str:
    text = text.strip().strip(_EDGE).strip()
    if len(text) >= 2 and text[0] in _BRACKETS and text[-1] == _BRACKETS[text[0]]:
        text = text[1:-1].strip()
    return text


class SubjectFormat(Rule):
    name = "subject_format"
    description = "the subject is 企业名称+数字证书申办 (plus optional, full-width ＋ and spaces fine)"
    codes = ("subject_format",)
    defaults: Mapping[str, Any] = {
        # Wordings after the company that raise nothing; add e.g. "数字证书申请" to let it pass.
        "accepted_wordings": ["数字证书申办"],
        "plus_optional": True,
        "require_company": True,
    }

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        stripped = (view.subject_info.stripped if view.subject_info is not None
                    else strip_prefixes(view.subject))
        # NFKC: a full-width ＋ and the ideographic space read as + and a space
        text = unicodedata.normalize("NFKC", stripped).strip()
        plus = "?" if params.get("plus_optional", True) else ""
        for wording in sorted(params.get("accepted_wordings") or [], key=len, reverse=True):
            wording = unicodedata.normalize("NFKC", wording)
            m = re.fullmatch(rf"(?P<company>.*?)\s*\+{plus}\s*{re.escape(wording)}", text, re.S)
            if m is None:
                continue
            if _company(m.group("company")) or not params.get("require_company", True):
                return []
            return [Finding("subject_format", "warn",
                            f"the subject names no company: {stripped!r}",
                            {"subject": stripped, "problem": "no_company",
                             "expected": f"企业名称+{wording}"})]
        expected = f"企业名称+{(params.get('accepted_wordings') or ['数字证书申办'])[0]}"
        info = view.subject_info or ApplicationSubject.parse(view.subject)
        rest = text
        if info.is_application and not info.company:  # only a wording: 数字证书申请
            rest = ""
        problem = "wording" if _company(rest) else "no_company"
        return [Finding("subject_format", "warn",
                        f"the subject does not follow {expected}: {stripped!r}",
                        {"subject": stripped, "problem": problem, "expected": expected})]


class ApplicationTypeAmbiguous(Rule):
    name = "application_type"
    description = "one application type (新办 or 注销) is ticked and the files agree"
    codes = ("application_type_ambiguous",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        # intake's classification reads the same signals to choose the kind; the verdict is here
        info = view.subject_info or ApplicationSubject.parse(view.subject)
        present = view.materials_present
        _kind, found = application_type(view.form.get("application_type"),
                                        info.is_revocation_hint, "csr" in present,
                                        "certificate" in present)
        return found


class KeyCompromise(Rule):
    name = "key_compromise"
    description = "须知四: a lost, leaked or damaged key (丢失/泄露/损毁) is urgent, keyCompromise"
    codes = ("key_compromise",)

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        words = key_loss_words(view.text)
        if not words and not view.key_loss_marked:
            return []
        why = "; ".join(part for part in ("、".join(words),
                                          "marked by staff" if view.key_loss_marked else "")
                        if part)
        return [Finding("key_compromise", "warn",
                        f"the private key is reported lost, leaked or damaged ({why}): revoke "
                        "with reason keyCompromise, urgently",
                        {"words": words, "reason": "keyCompromise", "urgent": True,
                         "marked_by_staff": view.key_loss_marked})]
