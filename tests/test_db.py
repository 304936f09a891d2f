"""The schema comes from the real migrations, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError

from mailbot.cases.models import Case
from mailbot.config import ConfigError
from mailbot.db import Base, NoDatabase, check_url, make_engine, require_schema, upgrade
from mailbot.intake.models import Message


def test_migrations_create_every_model_table(engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_upgrade_is_idempotent(engine) -> None:
    upgrade(engine=engine)
    assert "messages" in inspect(engine).get_table_names()


def test_datetimes_come_back_in_utc(session, frozen_clock) -> None:
    case = Case(ref="XM-2026-0001", kind="new", state="received")
    session.add(case)
    session.add(Message(source="maildir:/x", source_key="k1", size=10, case=case))
    session.commit()
    session.expire_all()
    got = session.scalars(select(Case)).one()
    assert got.created_at == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert got.created_at.tzinfo is not None


def test_require_schema_creates_nothing(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'mailbot.sqlite3'}"
    with pytest.raises(NoDatabase, match="no database yet"):
        require_schema(url)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty.sqlite3").touch()
    with pytest.raises(NoDatabase, match="no mailbot schema"):
        require_schema(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert (tmp_path / "empty.sqlite3").stat().st_size == 0
    upgrade(url)
    require_schema(url)


def test_read_only_engine_does_not_write(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    ro = make_engine(url, read_only=True)
    with ro.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM cases")).scalar() == 0
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("DELETE FROM cases"))
    ro.dispose()
    with pytest.raises(OperationalError):  # a missing file is an error, not a new database
        with make_engine(f"sqlite:///{tmp_path / 'nope.sqlite3'}", read_only=True).connect():
            pass
    assert not (tmp_path / "nope.sqlite3").exists()


def test_check_url_names_the_problem(monkeypatch) -> None:
    check_url("sqlite:////tmp/x.sqlite3")
    with pytest.raises(ConfigError, match="SQLAlchemy"):
        check_url("sqlite3:///x")
    with pytest.raises(ConfigError, match="SQLAlchemy"):
        check_url("just words")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # installed without the extra
    with pytest.raises(ConfigError, match=r"mailbot\[postgres\]"):
        check_url("postgresql+psycopg://mb@db/mb")


def test_migrations_match_the_models(engine) -> None:
    """What the migrations build is what the models declare: no column, index or key that
    autogenerate would still add or drop."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import mailbot.outbox.models  # noqa: F401  (registers its tables)
    import mailbot.pki.models  # noqa: F401

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
