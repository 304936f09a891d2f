"""The audit log is chained with SM3: any edit or deletion shows, and `audit verify` names it."""

from __future__ import annotations

from sqlalchemy import delete, select, update

from mailbot.cases.audit import GENESIS, append_audit, verify_chain
from mailbot.cases.models import AuditEntry, Case
from mailbot.cli import main


def _three_rows(session) -> list[AuditEntry]:
    case = Case(ref="XM-2026-0001", kind="new", state="received")
    session.add(case)
    rows = [
        append_audit(session, actor="message:1", action="open", case=case, to_state="received"),
        append_audit(session, actor="system", action="intake_check", case=case,
                     from_state="received", to_state="incomplete", reason="missing csr"),
        append_audit(session, actor="张三", action="confirm", case=case, reason="电话确认"),
    ]
    session.commit()
    return rows


def test_rows_chain_from_genesis(session, frozen_clock) -> None:
    rows = _three_rows(session)
    assert rows[0].prev_hash == GENESIS
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    report = verify_chain(session)
    assert report.ok and report.rows == 3


def test_edited_row_is_named(session, frozen_clock) -> None:
    rows = _three_rows(session)
    session.execute(update(AuditEntry).where(AuditEntry.id == rows[1].id)
                    .values(reason="nothing missing"))
    session.commit()
    report = verify_chain(session)
    assert not report.ok and report.broken_id == rows[1].id


def test_deleted_row_breaks_the_next_link(session, frozen_clock) -> None:
    rows = _three_rows(session)
    session.execute(delete(AuditEntry).where(AuditEntry.id == rows[1].id))
    session.commit()
    report = verify_chain(session)
    assert not report.ok and report.broken_id == rows[2].id


def test_audit_verify_command_exit_codes(tmp_path, capsys, frozen_clock) -> None:
    cfg = tmp_path / "mailbot.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "db.sqlite3"}"\n', encoding="utf-8")
    assert main(["--config", str(cfg), "db", "upgrade"]) == 0
    from mailbot.db import make_engine, session_factory

    with session_factory(make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}"))() as s:
        rows = _three_rows(s)
        assert main(["--config", str(cfg), "audit", "verify"]) == 0
        s.execute(update(AuditEntry).where(AuditEntry.id == rows[0].id).values(actor="mallory"))
        s.commit()
        assert s.scalars(select(AuditEntry)).first().actor == "mallory"
    assert main(["--config", str(cfg), "audit", "verify"]) == 1
    assert f"audit row {rows[0].id}" in capsys.readouterr().err
