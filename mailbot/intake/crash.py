"""Intake's crash points (after_archive_commit, before_moved_commit, after_move in ingest.py;
during_processing, after_cases_commit in processor.py) use the switch of mailbot/faults.py,
where every named point of the flow is listed."""

from __future__ import annotations

from mailbot.faults import CRASH_ENV, crash_point

__all__ = ["CRASH_ENV", "crash_point"]
