"""The audit log: append-only rows, each carrying the SM3 hash of the row before it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction

from mailbot.cases.models import AuditEntry, Case
from mailbot.clock import now

GENESIS = "0" * 64
# session.info key: the hash of the last row this transaction appended (the chain head).
_HEAD = "mailbot.audit_head"


def _sm3_hex(data: bytes) -> str:
    return hashlib.new("sm3", data).hexdigest()


def entry_digest(entry: AuditEntry) -> str:
    """SM3 over the previous hash and every recorded field, in a canonical JSON form."""
    body = {
        "prev": entry.prev_hash,
        "case_id": entry.case_id,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "from": entry.from_state,
        "to": entry.to_state,
        "reason": entry.reason,
    }
    return _sm3_hex(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def append_audit(session: Session, *, actor: str, action: str, case: Case | None = None,
                 from_state: str | None = None, to_state: str | None = None,
                 reason: str | None = None) -> AuditEntry:
    """Add one chained row to the session (not committed: it joins the caller's work).

    The head is read once per transaction and then carried in the session, so a batch of
    appends costs no query each; another writer that got in first makes the unique prev_hash
    fail at commit, and the caller retries.
    """
    if case is not None and case.id is None:
        session.flush()  # the case needs its id: it is part of the hashed row
    head = session.info.get(_HEAD)
    if head is None:
        session.flush()  # rows added without append_audit must count too
        head = session.scalars(
            select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first() or GENESIS
    entry = AuditEntry(case_id=case.id if case is not None else None, at=now(), actor=actor,
                       action=action, from_state=from_state, to_state=to_state, reason=reason,
                       prev_hash=head)
    entry.hash = entry_digest(entry)
    session.add(entry)
    session.info[_HEAD] = entry.hash
    return entry


@event.listens_for(Session, "after_transaction_end")
def _forget_head(session: Session, _transaction: SessionTransaction) -> None:
    """A commit lets other writers in and a rollback drops our rows: read the head anew."""
    session.info.pop(_HEAD, None)


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
