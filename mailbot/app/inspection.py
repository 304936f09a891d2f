"""What the daemon would decide for one message, without a mailbox or a database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailbot.intake.analyse import analyse_message
from mailbot.intake.facts import MessageFacts
from mailbot.rules.materials import check_materials, required_materials


def inspect_message(raw: Any, settings: Mapping[str, Any] | None = None) -> MessageFacts:
    """Intake's facts for `raw` (bytes or an mmap), judged by every rule that needs no
    database (today: the required materials)."""
    facts = analyse_message(raw, settings)
    check_materials(facts, required_materials(settings))
    return facts
