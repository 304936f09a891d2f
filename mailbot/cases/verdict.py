"""The rules run on a whole case, and their verdict brought into the case's findings.

Two moments:

* a case is opened: the analysis worker judged the message with every rule that needs no
  database; here the rules that need it (`DATABASE_RULES`) run on the message's view with the
  certificates of ours known for its 机构代码 or organisation (`opening_findings`);
* a reply joined the case, or staff edited a field or overrode a finding: the rules run again
  on the whole case (`reevaluate`), and the case's open findings of every code they decide
  are brought in line (`apply_evaluation`): one that no longer holds is resolved, a new one
  is added, one already on the case is left as it is (not repeated), and one staff overrode
  is never touched, nor raised again.

Not run again on a case (their findings stay as the message's analysis left them): the
subject's wording (`subject_format`, judged on the application mail), the materials rule
(`assess` keeps `missing_material` in line with every file of the case), and the request's
own check (`csr`: signature, SM2 ID, key; it needs the request's bytes, which are not kept;
a reply bringing a request is handled by the store). Run again from what the case keeps:
`cn_mismatch` and `company_mismatch` (the request's subject names, kept in the messages'
recorded facts, against the form as it stands now) and `key_compromise` (the words the
messages' analysis found, and the staff's key-loss mark). Rules reading an attached
certificate (`revoke_foreign_certificate`, `revoke_serial_mismatch`) run only while its DER
is at hand (the message being recorded), and `revoke_foreign_certificate` only when the CA's
public key(s) are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from mailbot.cases.models import Case, CaseFinding
from mailbot.cases.view import CertificateIndex, case_view, with_database
from mailbot.clock import now
from mailbot.findings import Finding
from mailbot.intake.facts import MessageFacts
from mailbot.rules.engine import (
    Evaluation,
    Rule,
    RuleSettings,
    evaluate,
    load_rules,
    merge_findings,
    rule_settings,
)
from mailbot.rules.table import RULES
from mailbot.rules.view import CaseView, view_from_facts

# Rules that read the database part of the view (or read it when no certificate is attached).
DATABASE_RULES = ("already_certified", "renamed_organisation", "revoke_foreign_certificate",
                  "revoke_serial_mismatch")
# Rules judged on the message alone: never run again on a case (see the module's text).
MESSAGE_RULES = ("subject_format", "materials", "csr")
_CERTIFICATE_RULES = ("revoke_foreign_certificate", "revoke_serial_mismatch")


@lru_cache(maxsize=1)
def _shipped_settings() -> RuleSettings:
    return load_rules()


def settings_of(settings: Mapping[str, Any] | RuleSettings | None) -> RuleSettings:
    """RuleSettings from what the caller has: none (the shipped rules folder), the settings
    of `load_rule_settings`, or RuleSettings."""
    if settings is None:
        return _shipped_settings()
    return rule_settings(settings)


def _runnable(view: CaseView, names: Iterable[str]) -> list[Rule]:
    wanted = set(names)
    if not view.ca_public_keys:
        wanted.discard("revoke_foreign_certificate")  # every certificate would look foreign
    if not view.certificates:
        wanted.discard("revoke_foreign_certificate")
        if "certificate" in view.materials_present:
            # a certificate was attached but its DER is not at hand: keep the verdict given
            # when it was (the form's serial is compared with the file, not the register)
            wanted.discard("revoke_serial_mismatch")
    return [r for r in RULES if r.name in wanted]


def case_rules(view: CaseView) -> list[Rule]:
    """The rules run again on a whole case (all but MESSAGE_RULES, see the module's text)."""
    return _runnable(view, (r.name for r in RULES if r.name not in MESSAGE_RULES))


def opening_findings(facts: MessageFacts, certificates: CertificateIndex, *,
                     settings: Mapping[str, Any] | RuleSettings | None = None,
                     ca_public_keys: Iterable[bytes] = ()) -> list[Finding]:
    """A new case's findings: the message's (judged by the worker) with the database rules'
    verdict merged in (one home per code, as `merge_findings`)."""
    view = with_database(view_from_facts(facts), certificates, ca_public_keys=ca_public_keys)
    result = evaluate(view, settings_of(settings), rules=_runnable(view, DATABASE_RULES))
    return merge_findings(facts.findings, result)


def jsonable(facts: object) -> dict[str, object]:
    """Finding facts as plain JSON values (bytes and other objects become text)."""
    out: dict[str, object] = {}
    for key, value in dict(facts or {}).items():  # type: ignore[call-overload]
        if isinstance(value, str | int | float | bool) or value is None:
            out[str(key)] = value
        elif isinstance(value, list | tuple):
            out[str(key)] = [v if isinstance(v, str | int | float | bool) else str(v)
                             for v in value]
        else:
            out[str(key)] = str(value)
    return out


def _key(code: str, detail: str) -> tuple[str, str]:
    return code, detail


def apply_evaluation(case: Case, result: Evaluation, *,
                     message_row_id: int | None = None) -> tuple[list[str], list[str]]:
    """Bring the case's findings in line with `result` for the codes it decided.

    Returns the codes (resolved, added). A finding equal (code and detail) to one on the case,
    open or overridden, is not added again; an open one of a decided code the rules no longer
    find is resolved; overridden findings are never touched.
    """
    current = [f for f in case.findings if f.resolved_at is None]
    matched: set[int] = set()
    added: list[str] = []
    for f in result.findings:
        hit = next((c for c in current if id(c) not in matched
                    and _key(c.code, c.detail) == _key(f.code, f.detail)), None)
        if hit is not None:
            matched.add(id(hit))
            continue
        case.findings.append(CaseFinding(message_row_id=message_row_id, code=f.code,
                                         severity=f.severity, detail=f.detail,
                                         facts=jsonable(f.facts), created_at=now()))
        added.append(f.code)
    resolved: list[str] = []
    for c in current:
        if id(c) in matched or c.overridden_by is not None or c.code not in result.decided:
            continue
        c.resolved_at = now()
        resolved.append(c.code)
    return resolved, added


def reevaluate(session: Session, case: Case, *,
               settings: Mapping[str, Any] | RuleSettings | None = None,
               facts: MessageFacts | None = None, ca_public_keys: Iterable[bytes] = (),
               certificates: CertificateIndex | None = None,
               message_row_id: int | None = None,
               only: Iterable[str] | None = None) -> tuple[Evaluation, list[str], list[str]]:
    """Run `case_rules` (those named in `only`, when given) on the case's view and apply the
    verdict to its findings.

    Returns the evaluation and the codes resolved and added.
    """
    view = case_view(session, case, facts=facts, ca_public_keys=ca_public_keys,
                     certificates=certificates)
    rules = case_rules(view)
    if only is not None:
        names = set(only)
        rules = [r for r in rules if r.name in names]
    result = evaluate(view, settings_of(settings), rules=rules)
    resolved, added = apply_evaluation(case, result, message_row_id=message_row_id)
    return result, resolved, added


def summary(resolved: list[str], added: list[str]) -> str:
    """"rules: -org_code_invalid +already_certified", or "" when nothing changed."""
    parts = [f"-{c}" for c in dict.fromkeys(resolved)] + [f"+{c}" for c in dict.fromkeys(added)]
    return ("rules: " + " ".join(parts)) if parts else ""
