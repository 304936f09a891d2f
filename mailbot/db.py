"""Database plumbing: one declarative Base, engines, sessions and Alembic upgrades."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    URL,
    Connection,
    DateTime,
    Engine,
    MetaData,
    create_engine,
    event,
    inspect,
    make_url,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from mailbot.config import ConfigError, shipped_dir

MIGRATIONS_DIR = shipped_dir("migrations")  # package data, a real folder (Alembic needs one)

# Stable constraint names so Alembic migrations name the same things on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes everywhere; SQLite drops the zone, so it is put back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use mailbot.clock.now()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class NoDatabase(Exception):
    """There is no database at the configured URL yet, or it has no mailbot schema."""

    def __init__(self, where: str, *, empty: bool = False) -> None:
        super().__init__(f"{'no mailbot schema in' if empty else 'no database yet at'} {where}")
        self.where = where


def check_url(url: str) -> None:
    """Refuse a database URL that does not parse, names an unknown dialect or lacks its driver.

    Raises ConfigError with one readable line; opens nothing.
    """
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"[database] url is not a database URL SQLAlchemy knows "
                          f"(e.g. sqlite:///PATH, postgresql+psycopg://USER@host/DB): "
                          f"{str(exc).splitlines()[0]}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        if parsed.get_backend_name() == "postgresql":
            raise ConfigError("[database] url is PostgreSQL but its driver (psycopg) is not "
                              "installed: pip install 'mailbot[postgres]' and use "
                              "postgresql+psycopg://") from None
        raise ConfigError(f"[database] url needs the driver {parsed.get_driver_name()!r}, "
                          f"which is not installed ({exc})") from None


def sqlite_path(url: URL) -> Path | None:
    """The file of a file-backed SQLite URL; None for any other database."""
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def make_engine(url: str, *, read_only: bool = False, **kwargs: object) -> Engine:
    """An engine; SQLite gets a busy timeout and foreign keys, since several processes share it.

    `read_only`: open an existing database without writing or creating anything (SQLite is
    opened with mode=ro, so a missing file is an error rather than a new empty database).
    """
    parsed = make_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if read_only:
            url = f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_SECONDS})
    engine = create_engine(url, future=True, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if not read_only:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        if not read_only:
            _WriterGate(engine)
    return engine


# What starts a writing transaction: pysqlite begins one before these, and begin_write's
# BEGIN IMMEDIATE takes SQLite's write lock at once.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
SQLITE_BUSY_SECONDS = 30  # how long a writer waits for another process's (SQLite's timeout)
GATE_SECONDS = float(SQLITE_BUSY_SECONDS)  # ... and for another thread's (the writer gate)
_GATES: weakref.WeakKeyDictionary[Engine, _WriterGate] = weakref.WeakKeyDictionary()


class _WriterGate:
    """One writing transaction at a time among an engine's connections, queued on a Python lock.

    SQLite allows one writer anyway, but its busy handler waits by sleeping (1, 2, 5 ... 100
    ms), so a thread waiting for another thread's commit (intake's beside the recorder's)
    wakes up to 100 ms late; on the lock it wakes at once. Writers in other processes still
    meet SQLite's busy timeout. The gate is taken before a transaction's first write and
    given back once SQLite has committed or rolled it back (the dialect's do_commit and
    do_rollback, which the pool's reset on return uses too), or when its connection is
    invalidated, closed or detached.
    """

    def __init__(self, engine: Engine) -> None:
        self.lock = threading.Lock()
        self.holder: object | None = None  # the DBAPI connection in a writing transaction
        event.listen(engine, "before_cursor_execute", self._enter)
        dialect = engine.dialect  # one per engine
        dialect.do_commit = self._releasing(dialect.do_commit)  # type: ignore[method-assign]
        dialect.do_rollback = self._releasing(dialect.do_rollback)  # type: ignore[method-assign]
        for name in ("invalidate", "close", "detach"):
            event.listen(engine.pool, name, self._leave)
        _GATES[engine] = self

    def _enter(self, _conn: Connection, cursor: Any, statement: str, *_args: object) -> None:
        raw = cursor.connection
        if self.holder is raw or not statement.lstrip()[:15].upper().startswith(_WRITES):
            return
        if not self.lock.acquire(timeout=GATE_SECONDS):
            raise sqlite3.OperationalError("database is locked (by another thread's writing"
                                           " transaction)")
        self.holder = raw

    def _releasing(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        """The dialect's commit or rollback, giving the gate back once SQLite has done it."""
        def ended(dbapi_connection: Any) -> None:
            try:
                end(dbapi_connection)
            finally:
                self._leave(dbapi_connection)
        return ended

    def _leave(self, connection: Any, *_event_args: object) -> None:
        # The pool hands its own wrapper (the "fairy"); compare the DBAPI connection inside.
        raw = getattr(connection, "dbapi_connection", connection)
        if raw is not None and self.holder is raw:
            self.holder = None
            self.lock.release()

    def reset_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.holder = None


def _reset_gates_in_child() -> None:
    """A forked child starts with free gates, whatever a thread of the parent held."""
    for gate in list(_GATES.values()):
        gate.reset_after_fork()


def holds_writer_gate(conn: Connection) -> bool:
    """Whether this connection is in a writing transaction by its engine's gate (SQLite)."""
    gate = _GATES.get(conn.engine)
    return gate is not None and gate.holder is conn.connection.dbapi_connection


os.register_at_fork(after_in_child=_reset_gates_in_child)


def require_schema(url: str) -> None:
    """Raise NoDatabase unless the database exists and carries mailbot's schema.

    Creates nothing: a missing SQLite file stays missing (read-only commands call this
    first). A server that cannot be reached raises SQLAlchemy's OperationalError.
    """
    parsed = make_url(url)
    path = sqlite_path(parsed)
    where = str(path) if path is not None else parsed.render_as_string(hide_password=True)
    if path is not None and not path.is_file():
        raise NoDatabase(where)
    engine = make_engine(url, read_only=True)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                raise NoDatabase(where, empty=True)
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, *, engine: Engine | None = None, revision: str = "head") -> None:
    """Bring the schema up to `revision` (Alembic), on a URL or on an existing engine."""
    if engine is None:
        assert url is not None
        engine = make_engine(url)
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` (Alembic)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step: Callable[[AlembicConfig, str], None], revision: str) -> None:
    """Run an Alembic command in one transaction on one of the engine's connections.

    SQLite's batch mode changes a table by copying it and dropping the old one, which fails
    while foreign keys are enforced and other tables' rows point at it; as SQLite's own
    procedure for schema changes says, enforcement is off meanwhile and the keys are checked
    before the commit instead.
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
            conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration left {len(broken)} rows pointing at"
                                           f" rows that do not exist (first: {broken[0]})")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def begin_write(session: Session) -> None:
    """Open the session's write transaction now (before a SAVEPOINT).

    pysqlite begins SQLite's transaction only at the first INSERT/UPDATE: a SAVEPOINT taken
    before that starts a transaction of its own, and its RELEASE commits what it holds, so
    a later rollback would not undo it. PostgreSQL needs nothing.
    """
    conn = session.connection()
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now: we are about to write
