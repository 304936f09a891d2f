"""Where intake hands its finished facts: a sink it is given (cases provides the recorder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailbot.intake.facts import MessageFacts
    from mailbot.intake.models import Message


class FactsSink(Protocol):
    """Records analysed messages inside the caller's transaction (intake commits).

    `items` are in arrival order, so case numbers follow it. Returns how many cases the
    messages opened. A unique-key clash with another writer raises IntegrityError, which
    intake retries; any other error is charged to the messages.
    """

    def record(self, session: Session, items: Sequence[tuple[Message, MessageFacts]]) -> int:
        ...
