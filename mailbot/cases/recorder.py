"""The sink intake is given: analysed messages become cases (see mailbot.intake.sink)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from mailbot.cases.store import OPENING_KINDS, CaseStore
from mailbot.intake.facts import MessageFacts
from mailbot.intake.models import Message


class CaseRecorder:
    """Opens, joins or leaves cases for a run of analysed messages, in the caller's
    transaction; `required` is the rules' required materials per kind."""

    def __init__(self, required: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.required = dict(required) if required is not None else None

    def record(self, session: Session, items: Sequence[tuple[Message, MessageFacts]]) -> int:
        """Record `items` in order; returns how many cases they opened."""
        before = {row.id: row.case_id for row, _ in items}
        cases = CaseStore(session, self.required).record_many(items)
        return sum(1 for (row, facts), case in zip(items, cases, strict=True)
                   if case is not None and before[row.id] is None
                   and facts.kind in OPENING_KINDS)
