"""The audit log: append-only rows, each carrying the SM3 hash of the row before it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from mailbot.cases.models import AuditEntry, Case
from mailbot.clock import now

GENESIS = "0" * 64
# session.info key: the hash of the last row this transaction appended (the chain head).
_HEAD = "mailbot.audit_head"


def _sm3_hex(data: bytes) -> str:
    return hashlib.new("sm3", data).hexdigest()


AUDIT_FIELDS = ("case_id", "at", "actor", "action", "from_state", "to_state", "reason", "via")
# The channel of an action: a staff command, the mailbox (flags, folders), or mailbot itself.
VIA = ("cli", "mailbox", "system")
# Staff marked a revocation's key lost, leaked or damaged (须知四): the audit row is the mark.
KEY_LOST = "key_lost"


def row_digest(prev_hash: str, row: dict[str, Any]) -> str:
    """SM3 over the previous hash and every recorded field, in a canonical JSON form.

    `via` came later: it is part of the hashed body only when set, so rows written before
    it existed (via NULL) hash as they always did and keep verifying.
    """
    body = {
        "prev": prev_hash,
        "case_id": row["case_id"],
        "at": row["at"].isoformat(timespec="microseconds"),
        "actor": row["actor"],
        "action": row["action"],
        "from": row["from_state"],
        "to": row["to_state"],
        "reason": row["reason"],
    }
    if row.get("via") is not None:
        body["via"] = row["via"]
    return _sm3_hex(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def entry_digest(entry: AuditEntry) -> str:
    return row_digest(entry.prev_hash, {k: getattr(entry, k) for k in AUDIT_FIELDS})


def _head(session: Session) -> str:
    """The chain head: read once per transaction, then carried in the session."""
    head = session.info.get(_HEAD)
    if head is None:
        session.flush()  # rows added without these functions must count too
        head = session.scalars(
            select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first() or GENESIS
    return head


def append_audit(session: Session, *, actor: str, action: str, case: Case | None = None,
                 from_state: str | None = None, to_state: str | None = None,
                 reason: str | None = None, via: str | None = None) -> AuditEntry:
    """Add one chained row to the session (not committed: it joins the caller's work).

    Another writer that got in first makes the unique prev_hash fail at commit, and the
    caller retries.
    """
    if via is not None and via not in VIA:
        raise ValueError(f"unknown audit channel {via!r}: one of {', '.join(VIA)}")
    if case is not None and case.id is None:
        session.flush()  # the case needs its id: it is part of the hashed row
    entry = AuditEntry(case_id=case.id if case is not None else None, at=now(), actor=actor,
                       action=action, from_state=from_state, to_state=to_state, reason=reason,
                       via=via, prev_hash=_head(session))
    entry.hash = entry_digest(entry)
    session.add(entry)
    session.info[_HEAD] = entry.hash
    return entry


def append_audit_rows(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """Chain and insert many rows at once (dicts of AUDIT_FIELDS; `at` defaults to now).

    Pending ORM rows are flushed first, so ids keep following the chain. Returns the rows'
    hashes, in order.
    """
    if not rows:
        return []
    head = _head(session)
    session.flush()
    stamp = now()
    chained = []
    for row in rows:
        full = {k: row.get(k) for k in AUDIT_FIELDS}
        full["at"] = full["at"] or stamp
        full["prev_hash"] = head
        head = full["hash"] = row_digest(head, full)
        chained.append(full)
    # render_nulls: NULLs as values, so rows of any shape go in one multi-row INSERT.
    session.execute(insert(AuditEntry).execution_options(render_nulls=True), chained)
    session.info[_HEAD] = head
    return [row["hash"] for row in chained]


@event.listens_for(Session, "after_transaction_end")
def _forget_head(session: Session, transaction: SessionTransaction) -> None:
    """A commit lets other writers in and a rollback drops our rows: read the head anew."""
    if transaction.parent is None or transaction.nested:  # not a flush's inner one
        session.info.pop(_HEAD, None)


def key_lost_mark(session: Session, case: Case) -> AuditEntry | None:
    """The staff's key-loss mark of `case` (its first `key_lost` row), if any."""
    if case.id is None:
        return None
    session.flush()
    return session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id,
                                                    AuditEntry.action == KEY_LOST)
                           .order_by(AuditEntry.id).limit(1)).first()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows: int
    broken_id: int | None = None
    problem: str = ""


def verify_chain(session: Session) -> ChainReport:
    """Walk the log in order; name the first row whose link or content does not hold."""
    prev = GENESIS
    count = 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)).yield_per(500):
        count += 1
        if entry.prev_hash != prev:
            return ChainReport(False, count, entry.id, "prev_hash does not match the row before")
        if entry_digest(entry) != entry.hash:
            return ChainReport(False, count, entry.id, "row content does not match its hash")
        prev = entry.hash
    return ChainReport(True, count)
