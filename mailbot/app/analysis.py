"""What the daemon's analysis workers run: intake's analysis, then the rules' verdict.

Intake knows no rules, so the pool is handed this function (by name: workers import it);
judging in the workers keeps the main process free for the mailbox and the database.
"""

from __future__ import annotations

from mailbot.config import load_rule_settings
from mailbot.intake.facts import MessageFacts
from mailbot.intake.pool import analyse_archived
from mailbot.rules.judge import judge_message


def analyse_and_judge(archive_dir: str, sha256: str, rules_dir: str) -> MessageFacts:
    """Worker side: the archived message's facts, judged by every rule needing no database."""
    facts = analyse_archived(archive_dir, sha256, rules_dir)
    judge_message(facts, load_rule_settings(rules_dir))
    return facts
