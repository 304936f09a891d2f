"""What the daemon would decide for one message, without a mailbox or a database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailbot.intake.analyse import analyse_message
from mailbot.intake.facts import MessageFacts
from mailbot.rules.engine import Evaluation, RuleSettings, evaluate, merge_findings, rule_settings
from mailbot.rules.materials import id_roles
from mailbot.rules.view import view_from_facts


def inspect_message(raw: Any, settings: Mapping[str, Any] | None = None) -> MessageFacts:
    """Intake's facts for `raw` (bytes or an mmap), judged by every rule that needs no
    database. The rules' verdict replaces intake's copy of a code a rule decides; ID scans
    are listed under the role(s) they count for."""
    return inspect_with_rules(raw, settings)[0]


def inspect_with_rules(raw: Any, settings: Mapping[str, Any] | None = None,
                       ) -> tuple[MessageFacts, Evaluation]:
    if settings is None:
        from mailbot.config import load_rule_settings
        settings = load_rule_settings()
    facts = analyse_message(raw, settings)
    conf = rule_settings(settings)
    view = view_from_facts(facts, settings)
    result = evaluate(view, conf)
    judge(facts, view, result, conf)
    return facts, result


def judge(facts: MessageFacts, view: Any, result: Evaluation, conf: RuleSettings) -> None:
    """Write the evaluation into the message's facts (findings, missing, ID-scan roles)."""
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


def rules_json(result: Evaluation) -> dict[str, Any]:
    """The `rules` object `inspect --json` adds: which rules ran, were off, skipped, failed."""
    return result.to_json()
