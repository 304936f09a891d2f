"""The schema comes from the real migrations, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, select

from mailbot.cases.models import Case, Message
from mailbot.db import Base, upgrade


def test_migrations_create_every_model_table(engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_upgrade_is_idempotent(engine) -> None:
    upgrade(engine=engine)
    assert "messages" in inspect(engine).get_table_names()


def test_datetimes_come_back_in_utc(session, frozen_clock) -> None:
    case = Case(ref="XM-2026-0001", kind="new", state="received")
    session.add(case)
    session.add(Message(source="maildir:/x", size=10, case=case))
    session.commit()
    session.expire_all()
    got = session.scalars(select(Case)).one()
    assert got.created_at == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert got.created_at.tzinfo is not None
