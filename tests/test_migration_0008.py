"""Migration 0008: messages.source_key becomes NOT NULL, a row without one getting its UID or
'row-<id>' (SQLite and, when configured, PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from mailbot.db import downgrade, make_engine, upgrade


def _nullable(engine) -> bool:
    engine.dispose()  # SQLite's batch mode copied the table: fresh reflection
    return next(c["nullable"] for c in inspect(engine).get_columns("messages")
                if c["name"] == "source_key")


def test_0008_fills_missing_keys_and_requires_them(db_url) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine=engine, revision="0007_certificate_subject_names")
        with engine.begin() as conn:
            for uid, key in ((7, None), (None, None), (9, "9")):
                conn.execute(text(
                    "INSERT INTO messages (source, uidvalidity, uid, source_key, size, status,"
                    " fetched_at, attempts) VALUES ('imap://x/INBOX', 1, :uid, :key, 10,"
                    " 'archived', CURRENT_TIMESTAMP, 0)"), {"uid": uid, "key": key})
            # rows that point at a message: the table copy must keep them (and their keys)
            conn.execute(text("INSERT INTO processing_failures (message_row_id, at, error)"
                              " SELECT id, CURRENT_TIMESTAMP, 'x' FROM messages"))
        upgrade(engine=engine)
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":  # off only while the table was copied
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            got = conn.execute(text("SELECT id, uid, source_key FROM messages ORDER BY id")).all()
        assert [(uid, key) for _, uid, key in got] == [(7, "7"), (None, f"row-{got[1][0]}"),
                                                      (9, "9")]
        assert _nullable(engine) is False

        downgrade(engine, "0007_certificate_subject_names")
        assert _nullable(engine) is True
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM messages")).scalar() == 3
            assert conn.execute(text(
                "SELECT count(*) FROM processing_failures JOIN messages"
                " ON messages.id = processing_failures.message_row_id")).scalar() == 3
    finally:
        engine.dispose()
