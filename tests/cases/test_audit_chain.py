"""The chained log with `via`: old rows (no via) still verify; edits, deletions and reordering
of workflow rows are each named; `mailbot audit verify` exits 0 / 1."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import delete, select, update

from mailbot.cases import workflow
from mailbot.cases.audit import GENESIS, append_audit, row_digest, verify_chain
from mailbot.cases.models import AuditEntry, Case
from mailbot.cli import main
from mailbot.db import make_engine, session_factory


def _history(session) -> list[AuditEntry]:
    case = Case(ref="XM-2026-0001", kind="new", state="received")
    session.add(case)
    session.flush()
    workflow.transition(session, case, "awaiting_confirmation", actor="system", via="system")
    workflow.confirm(session, case, by="张三")
    workflow.approve(session, case, by="李四")
    workflow.transition(session, case, "issued", actor="system", via="system")
    session.commit()
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_a_row_without_via_hashes_as_before_via_existed(session, frozen_clock) -> None:
    case = Case(ref="XM-2026-0001", kind="new", state="received")
    session.add(case)
    old = append_audit(session, actor="system", action="intake_check", case=case,
                       from_state="received", to_state="incomplete", reason="r")
    session.commit()
    legacy = {"prev": GENESIS, "case_id": case.id,
              "at": old.at.isoformat(timespec="microseconds"), "actor": "system",
              "action": "intake_check", "from": "received", "to": "incomplete", "reason": "r"}
    body = json.dumps(legacy, ensure_ascii=False, sort_keys=True).encode("utf-8")
    assert old.via is None and old.hash == hashlib.new("sm3", body).hexdigest()
    new = append_audit(session, actor="张三", action="confirm", case=case, via="cli")
    session.commit()
    assert new.hash != row_digest(new.prev_hash, {**{k: getattr(new, k) for k in (
        "case_id", "at", "actor", "action", "from_state", "to_state", "reason")}, "via": None})
    assert verify_chain(session).ok


def test_intact_history_verifies(session, frozen_clock) -> None:
    rows = _history(session)
    assert [r.via for r in rows] == ["system", "cli", "cli", "system"]
    assert verify_chain(session).ok and verify_chain(session).rows == 4


def test_an_edited_row_is_named(session, frozen_clock) -> None:
    rows = _history(session)
    session.execute(update(AuditEntry).where(AuditEntry.id == rows[2].id).values(actor="mallory"))
    session.commit()
    report = verify_chain(session)
    assert not report.ok and report.broken_id == rows[2].id


def test_an_edited_via_is_named(session, frozen_clock) -> None:
    rows = _history(session)
    session.execute(update(AuditEntry).where(AuditEntry.id == rows[1].id).values(via="mailbox"))
    session.commit()
    assert verify_chain(session).broken_id == rows[1].id
    session.execute(update(AuditEntry).where(AuditEntry.id == rows[1].id).values(via=None))
    session.commit()  # dropping it is an edit too
    assert verify_chain(session).broken_id == rows[1].id


def test_a_deleted_row_is_named(session, frozen_clock) -> None:
    rows = _history(session)
    session.execute(delete(AuditEntry).where(AuditEntry.id == rows[1].id))
    session.commit()
    report = verify_chain(session)
    assert not report.ok and report.broken_id == rows[2].id


def test_reordered_rows_are_named(session, frozen_clock) -> None:
    """Swap the contents of two rows (ids stay in order): the first swapped one breaks."""
    rows = _history(session)
    a, b = rows[1], rows[2]
    cols = ("case_id", "at", "actor", "action", "from_state", "to_state", "reason", "via",
            "prev_hash", "hash")
    va = {c: getattr(a, c) for c in cols}
    vb = {c: getattr(b, c) for c in cols}
    # hash and prev_hash are unique: move one row out of the way first
    session.execute(update(AuditEntry).where(AuditEntry.id == a.id)
                    .values(hash="x" * 64, prev_hash="y" * 64))
    session.execute(update(AuditEntry).where(AuditEntry.id == b.id).values(**va))
    session.execute(update(AuditEntry).where(AuditEntry.id == a.id).values(**vb))
    session.commit()
    report = verify_chain(session)
    assert not report.ok and report.broken_id == a.id


def test_audit_verify_command(tmp_path, capsys, db_url, frozen_clock) -> None:
    cfg = tmp_path / "mailbot.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n', encoding="utf-8")
    assert main(["--config", str(cfg), "db", "upgrade"]) == 0
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            rows = _history(s)
            capsys.readouterr()
            assert main(["--config", str(cfg), "audit", "verify"]) == 0
            assert "4 row(s)" in capsys.readouterr().out
            s.execute(update(AuditEntry).where(AuditEntry.id == rows[3].id)
                      .values(reason="forged"))
            s.commit()
            assert main(["--config", str(cfg), "audit", "verify"]) == 1
            err = capsys.readouterr().err
            assert f"audit row {rows[3].id}" in err and err.count("\n") == 1
    finally:
        engine.dispose()
