"""What the daemon would decide for one message, without a mailbox or a database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailbot.config import load_rule_settings
from mailbot.intake.analyse import analyse_message
from mailbot.intake.facts import MessageFacts
from mailbot.rules.engine import Evaluation
from mailbot.rules.judge import judge_message


def inspect_message(raw: Any, settings: Mapping[str, Any] | None = None) -> MessageFacts:
    """Intake's facts for `raw` (bytes or an mmap), judged by every rule that needs no
    database. The rules' verdict replaces intake's copy of a code a rule decides; ID scans
    are listed under the role(s) they count for."""
    return inspect_with_rules(raw, settings)[0]


def inspect_with_rules(raw: Any, settings: Mapping[str, Any] | None = None,
                       ) -> tuple[MessageFacts, Evaluation]:
    """`inspect_message`, with the evaluation (which rules ran, were off or failed)."""
    if settings is None:
        settings = load_rule_settings()
    facts = analyse_message(raw, settings)
    return facts, judge_message(facts, settings)
