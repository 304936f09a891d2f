"""The sink intake is given: analysed messages become cases (see mailbot.intake.sink)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from mailbot.cases.store import OPENING_KINDS, CaseStore
from mailbot.cases.verdict import settings_of
from mailbot.intake.facts import MessageFacts
from mailbot.intake.models import Message
from mailbot.rules.engine import RuleSettings


class CaseRecorder:
    """Opens, joins or leaves cases for a run of analysed messages, in the caller's
    transaction; `required` is the rules' required materials per kind, `settings` the rules'
    settings (None: the shipped rules folder) and `ca_public_keys` the CA's key(s), for the
    rules that need the database (run on each case opened or joined)."""

    def __init__(self, required: Mapping[str, tuple[str, ...]] | None = None, *,
                 settings: Mapping[str, Any] | RuleSettings | None = None,
                 ca_public_keys: Iterable[bytes] = ()) -> None:
        self.required = dict(required) if required is not None else None
        self.settings = settings_of(settings)  # parsed once, not once a batch
        self.ca_public_keys = [bytes(k) for k in ca_public_keys]

    def record(self, session: Session, items: Sequence[tuple[Message, MessageFacts]]) -> int:
        """Record `items` in order; returns how many cases they opened."""
        before = {row.id: row.case_id for row, _ in items}
        cases = CaseStore(session, self.required, settings=self.settings,
                          ca_public_keys=self.ca_public_keys).record_many(items)
        return sum(1 for (row, facts), case in zip(items, cases, strict=True)
                   if case is not None and before[row.id] is None
                   and facts.kind in OPENING_KINDS)
