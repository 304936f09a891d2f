"""One message judged by every rule that needs no database: the verdict written into its facts.

`mailbot inspect` and the daemon's analysis workers both go through here, so an application
is judged the same way wherever it is looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailbot.intake.facts import MessageFacts
from mailbot.rules.engine import Evaluation, RuleSettings, evaluate, merge_findings, rule_settings
from mailbot.rules.materials import id_roles
from mailbot.rules.view import CaseView, view_from_facts


def judge_message(facts: MessageFacts,
                  settings: Mapping[str, Any] | None = None) -> Evaluation:
    """Evaluate the rules on one message's facts and write the verdict into them: the rules'
    findings replace intake's copy of a code a rule decides, `missing` is the materials
    rule's, and ID scans are listed under the role(s) they count for."""
    conf = rule_settings(settings)
    view = view_from_facts(facts, settings)
    result = evaluate(view, conf)
    apply_verdict(facts, view, result, conf)
    return result


def apply_verdict(facts: MessageFacts, view: CaseView, result: Evaluation,
                  conf: RuleSettings) -> None:
    """Write an evaluation into the message's facts (findings, missing, ID-scan roles)."""
    facts.findings = merge_findings(facts.findings, result)
    if "materials" in result.ran:
        facts.missing = result.missing
        params = conf.params.get("materials") or {}
        if params.get("id_scan_roles", True):
            roles = id_roles(view, params.get("naming"))
            for att, materials in zip(facts.attachments, roles.materials, strict=True):
                att.materials = list(materials)
    elif view.kind not in ("new", "revoke"):
        facts.missing = []
