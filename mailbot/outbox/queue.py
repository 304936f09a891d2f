"""Put outgoing mail in the outbox: one row per mail, in the caller's transaction (issue 10).

`enqueue` is called by `app` inside the transaction of the case change that causes the mail,
so the mail exists exactly when the change does; it never commits. Loop safety is decided
here, once, when the row is born: a mail to no address, a null or invalid one, one of our
own addresses, or past the per-address daily cap is written `suppressed` with the reason in
`last_error` (staff can see it; the sender never touches it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from mailbot import clock
from mailbot.outbox.context import CAP_EXEMPT
from mailbot.outbox.models import (
    COPY_NONE,
    QUEUED,
    SENT,
    SUPPRESSED,
    OutboxAttachment,
    OutboxMessage,
)

# An addr-spec as we are willing to send to: a dot-atom local part (no quoted strings, no
# comments, no display name) and a domain of two or more labels (no address literals).
_LOCAL = r"[^\s@<>()\[\],;:\"\\.]+(?:\.[^\s@<>()\[\],;:\"\\.]+)*"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_ADDRESS = re.compile(rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})+$")


@dataclass
class Outgoing:
    """One mail to queue; `app` builds it, the preparer renders it later from the row."""

    template: str
    from_addr: str
    to_addrs: list[str]
    message_id: str  # fixed now: every retry carries the same one
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # plain JSON (context.py)
    case_id: int | None = None
    case_ref: str | None = None
    message_row_id: int | None = None
    notice_id: int | None = None
    cap_exempt: bool = False  # issued and revoked are exempt whatever this says
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, type, data
    blocked: str | None = None  # app's reason never to send it (an automatic mail answered…)


def normalise_address(address: str | None) -> str:
    """An address as stored and sent: trimmed, one pair of angle brackets removed."""
    text = (address or "").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def address_problem(address: str | None, our_addresses: frozenset[str] = frozenset()) -> str | None:
    """Why mail must not go to `address` (already normalised), or None when it may."""
    if not address:
        return "null recipient address"
    if len(address) > 254 or not _ADDRESS.match(address):
        return f"invalid recipient address {address!r}"
    if address.lower() in our_addresses:
        return f"recipient {address} is our own address"
    return None


def local_midnight(now: datetime) -> datetime:
    """The start of `now`'s day in Beijing time (what "per day" means for the desk)."""
    return datetime.combine(clock.local(now).date(), time(0), tzinfo=clock.SHANGHAI)


def _row_values(outgoing: Outgoing, ours: frozenset[str], daily_cap: int, now: datetime,
                count_today: Callable[[str], int]) -> dict[str, Any]:
    """The outbox row's columns for `outgoing`, loop safety decided (module docstring)."""
    if not outgoing.message_id:
        raise ValueError("an outgoing mail needs its Message-ID before it is queued")
    to_addrs = [normalise_address(a) for a in outgoing.to_addrs]
    key = to_addrs[0].lower() if to_addrs else ""
    exempt = outgoing.cap_exempt or outgoing.template in CAP_EXEMPT
    reason = outgoing.blocked or ("no recipient address" if not to_addrs else None)
    for address in to_addrs:
        reason = reason or address_problem(address, ours)
    if reason is None and not exempt and count_today(key) >= daily_cap:
        reason = f"daily cap of {daily_cap} mails to {key} reached"
    return dict(
        case_id=outgoing.case_id, case_ref=outgoing.case_ref,
        message_row_id=outgoing.message_row_id, notice_id=outgoing.notice_id,
        template=outgoing.template, from_addr=outgoing.from_addr, to_addrs=to_addrs,
        recipient_key=key, message_id=outgoing.message_id, in_reply_to=outgoing.in_reply_to,
        references=list(outgoing.references), context=dict(outgoing.context),
        cap_exempt=exempt, raw=None, state=QUEUED if reason is None else SUPPRESSED,
        attempts=0, next_attempt_at=now, created_at=now, copy_state=COPY_NONE,
        copy_attempts=0, last_error=None if reason is None else f"suppressed: {reason}",
    )


def _ours(our_addresses: Iterable[str]) -> frozenset[str]:
    return frozenset(normalise_address(a).lower() for a in our_addresses if a)


def enqueue_many(session: Session, outgoing: Sequence[Outgoing], *,
                 our_addresses: Iterable[str], daily_cap: int, now: datetime) -> int:
    """`enqueue` for a batch (the recorder queues one answer per application): the day's
    counts in one query and the rows in one bulk INSERT; mail with files goes one by one."""
    ours = _ours(our_addresses)
    plain = [o for o in outgoing if not o.attachments]
    keys = {normalise_address(o.to_addrs[0]).lower() for o in plain if o.to_addrs}
    counts = _counts_today(session, keys, now)

    def count_today(key: str) -> int:
        return counts.get(key, 0)

    rows = []
    for o in plain:
        values = _row_values(o, ours, daily_cap, now, count_today)
        if values["state"] != SUPPRESSED:
            counts[values["recipient_key"]] = counts.get(values["recipient_key"], 0) + 1
        rows.append(values)
    if rows:
        session.execute(insert(OutboxMessage), rows)
    for o in outgoing:
        if o.attachments:
            enqueue(session, o, our_addresses=ours, daily_cap=daily_cap, now=now)
    return len(outgoing)


def enqueue(session: Session, outgoing: Outgoing, *, our_addresses: Iterable[str],
            daily_cap: int, now: datetime) -> OutboxMessage:
    """Add the mail (and its attachment rows) to `session`; the caller commits.

    The row is `queued`, due at `now`, unless loop safety suppresses it (see the module
    docstring). The daily cap counts the rows to the same first recipient created since
    Beijing midnight, suppressed ones not included; cap-exempt rows pass it but count.
    """
    row = OutboxMessage(**_row_values(outgoing, _ours(our_addresses), daily_cap, now,
                                      lambda key: _count_today(session, key, now)))
    session.add(row)
    if outgoing.attachments:
        session.flush()  # the attachment rows need the row's id
        for position, (filename, content_type, data) in enumerate(outgoing.attachments):
            session.add(OutboxAttachment(outbox_id=row.id, position=position, filename=filename,
                                         content_type=content_type, data=bytes(data)))
    return row


def _counts_today(session: Session, keys: Iterable[str], now: datetime) -> dict[str, int]:
    """Rows (not suppressed) to each of `keys` since Beijing midnight, flushed or not."""
    keys = set(keys)
    if not keys:
        return {}
    with session.no_autoflush:
        counts: dict[str, int] = dict(session.execute(
            select(OutboxMessage.recipient_key, func.count()).where(
                OutboxMessage.recipient_key.in_(keys),
                OutboxMessage.created_at >= local_midnight(now),
                OutboxMessage.state != SUPPRESSED).group_by(OutboxMessage.recipient_key)).all())
    for row in _pending(session, now):
        if row.recipient_key in keys and row.state != SUPPRESSED:
            counts[row.recipient_key] = counts.get(row.recipient_key, 0) + 1
    return counts


def _count_today(session: Session, key: str, now: datetime) -> int:
    return _counts_today(session, [key], now).get(key, 0)


def _pending(session: Session, now: datetime) -> list[OutboxMessage]:
    """Rows of `now`'s day added to the session and not flushed yet."""
    midnight = local_midnight(now)
    return [o for o in session.new if isinstance(o, OutboxMessage)
            and o.created_at is not None and o.created_at >= midnight]


def sent_today(session: Session, template: str, address: str, now: datetime) -> bool:
    """True when a `template` mail to `address` (as first recipient) was queued today.

    Any state counts, suppressed included: the day's one notice was decided either way, so a
    stream of unrelated mail from one sender makes at most one row a day.
    """
    key = normalise_address(address).lower()
    if any(r.template == template and r.recipient_key == key for r in _pending(session, now)):
        return True
    with session.no_autoflush:
        return session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.template == template, OutboxMessage.recipient_key == key,
            OutboxMessage.created_at >= local_midnight(now)).limit(1)) is not None


def attachments_of(session: Session, row: OutboxMessage) -> list[OutboxAttachment]:
    """The row's attachment rows, in the order they were queued."""
    return list(session.scalars(select(OutboxAttachment)
                                .where(OutboxAttachment.outbox_id == row.id)
                                .order_by(OutboxAttachment.position, OutboxAttachment.id)))


def requeue(row: OutboxMessage, now: datetime, *, rerender: bool = False) -> None:
    """A failed (or suppressed) mail queued again at once, its attempts counted afresh; with
    `rerender` its bytes are made again from the templates (after a template or font fix).
    A sent mail is never requeued: the server has it."""
    if row.state == SENT:
        raise ValueError(f"outbox {row.id} was sent already")
    row.state, row.attempts, row.next_attempt_at = QUEUED, 0, now
    row.last_error, row.failure_reported_at = None, None
    if rerender:
        row.raw = None
