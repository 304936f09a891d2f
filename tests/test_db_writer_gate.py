"""The SQLite writer gate of make_engine: one writing transaction at a time among an engine's
connections, queued on a Python lock rather than in SQLite's sleeping busy handler.

Behaviour only, never speed: who waits, who proceeds, what was written. Every wait has a
timeout, so a broken gate fails a test instead of hanging it.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import OperationalError

from mailbot import db
from mailbot.db import begin_write, holds_writer_gate, make_engine, session_factory

pytestmark = pytest.mark.timeout(30)

INSERT = text("INSERT INTO t (v) VALUES (:v)")
WAIT = 5.0  # seconds: how long anything that should happen at once may take before we fail
QUEUED = 0.2  # seconds: how long a writer must stay queued for us to call it blocked


class Runner(threading.Thread):
    """A thread running `fn`; `finish()` joins it with a timeout and re-raises its error."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # handed to the test by finish()
            self.error = exc
        finally:
            self.done.set()

    def finish(self, timeout: float = WAIT) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the thread did not finish (a writer left waiting?)"
        if self.error is not None:
            raise self.error


def run(fn: Callable[[], object]) -> Runner:
    runner = Runner(fn)
    runner.start()
    return runner


def _url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'x.sqlite3'}"


def _create(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")


def values(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(text("SELECT v FROM t")).scalars())


@pytest.fixture(autouse=True)
def short_gate(monkeypatch) -> None:
    """A gate that is never given back fails within seconds, not after SQLite's 30."""
    monkeypatch.setattr(db, "GATE_SECONDS", WAIT)


@pytest.fixture
def gated(tmp_path) -> Iterator[Engine]:
    with gated_engine(tmp_path) as engine:
        yield engine


@contextmanager
def gated_engine(tmp_path, busy_seconds: float | None = None) -> Iterator[Engine]:
    """An engine on a new database with table t (SQLite's busy timeout as given, else
    make_engine's), disposed of afterwards."""
    extra = {} if busy_seconds is None else {"connect_args": {"timeout": busy_seconds}}
    engine = make_engine(_url(tmp_path), **extra)
    try:
        _create(engine)
        yield engine
    finally:
        engine.dispose()


def passed_gate(engine: Engine, *, thread: threading.Thread | None = None) -> threading.Event:
    """Set when a write statement gets past the gate (a listener registered after it)."""
    passed = threading.Event()

    @event.listens_for(engine, "before_cursor_execute")
    def _after_gate(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT") and (thread is None
                                               or threading.current_thread() is thread):
            passed.set()

    return passed


def writer_thread(engine: Engine, value: str) -> tuple[Runner, threading.Event]:
    """A thread (not started) inserting `value` in a transaction of its own, and the event
    set when its write gets past the gate."""
    def write() -> None:
        with engine.begin() as conn:
            conn.execute(INSERT, {"v": value})

    runner = Runner(write)
    return runner, passed_gate(engine, thread=runner)


# --- writers queue on the gate ------------------------------------------------------------


def test_a_second_writer_waits_for_the_first_to_commit(gated) -> None:
    a = gated.connect()
    a.execute(INSERT, {"v": "a1"})
    a.execute(INSERT, {"v": "a2"})  # a transaction's later writes do not queue again
    assert holds_writer_gate(a)

    connected = threading.Event()

    def b() -> None:
        with gated.connect() as conn:
            connected.set()
            conn.execute(INSERT, {"v": "b"})
            conn.commit()

    writer_b = Runner(b)
    b_passed = passed_gate(gated, thread=writer_b)
    writer_b.start()
    assert connected.wait(WAIT)
    assert not writer_b.done.wait(QUEUED), "B wrote while A's transaction was open"
    assert not b_passed.is_set(), "B went past the gate while A held it"
    a.commit()
    assert not holds_writer_gate(a)
    writer_b.finish()
    assert b_passed.is_set()
    a.close()
    assert values(gated) == ["a1", "a2", "b"]


def _rollback(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(INSERT, {"v": "gone"})
        conn.rollback()
        assert not holds_writer_gate(conn)


def _close_uncommitted(engine: Engine) -> None:
    conn = engine.connect()
    conn.execute(INSERT, {"v": "gone"})
    conn.close()  # back to the pool, its transaction still open


def _invalidate(engine: Engine) -> None:
    conn = engine.connect()
    conn.execute(INSERT, {"v": "gone"})
    conn.invalidate()  # as after a disconnect: the DBAPI connection is closed, SQLite rolls back
    # (not rolled back nor closed here: see test_an_invalidated_connection_rolls_back)


def _garbage_collect(engine: Engine) -> None:
    def lose() -> None:
        conn = engine.connect()
        conn.execute(INSERT, {"v": "gone"})
        # never closed: the pool gets the connection back from the garbage collector

    lose()
    gc.collect()


@pytest.mark.parametrize("end", [_rollback, _close_uncommitted, _invalidate, _garbage_collect],
                         ids=["rollback", "close-uncommitted", "invalidate", "garbage-collected"])
def test_a_transaction_that_ends_without_commit_gives_the_gate_back(gated, end) -> None:
    end(gated)

    def next_writer() -> None:
        with gated.begin() as conn:
            conn.execute(INSERT, {"v": "next"})

    run(next_writer).finish()
    assert values(gated) == ["next"]


def test_a_failed_write_keeps_the_gate_until_its_transaction_ends(gated) -> None:
    a = gated.connect()
    with pytest.raises(OperationalError):
        a.execute(text("INSERT INTO nowhere (v) VALUES ('x')"))
    assert holds_writer_gate(a)
    a.rollback()
    assert not holds_writer_gate(a)
    run(lambda: _rollback(gated)).finish()
    a.close()


def test_reads_never_take_the_gate(gated) -> None:
    with gated.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    a = gated.connect()
    a.execute(INSERT, {"v": "a"})
    seen: list[object] = []

    def reader() -> None:
        with gated.connect() as conn:
            seen.append(conn.execute(text("SELECT count(*) FROM t")).scalar())
            seen.append(conn.execute(text("  select v from t where v = 'a'")).first())
            seen.append(holds_writer_gate(conn))

    run(reader).finish()
    assert seen == [0, None, False]  # A's row is not committed yet, and the reader held nothing
    a.commit()
    a.close()


def test_a_session_commit_gives_the_gate_back(gated) -> None:
    Session = session_factory(gated)
    first = Session()
    first.execute(INSERT, {"v": "first"})
    assert holds_writer_gate(first.connection())

    def second() -> None:
        with Session() as session:
            session.execute(INSERT, {"v": "second"})
            session.commit()

    writer = run(second)
    assert not writer.done.wait(QUEUED), "the second session wrote while the first held"
    first.commit()
    writer.finish()

    first.execute(INSERT, {"v": "dropped"})
    first.close()  # a session closed without commit rolls back, and gives the gate back too
    run(second).finish()
    assert values(gated) == ["first", "second", "second"]


# --- no gate where there is nothing to queue for ------------------------------------------


def test_a_read_only_engine_has_no_gate(tmp_path) -> None:
    writable = make_engine(_url(tmp_path))
    _create(writable)
    writable.dispose()
    ro = make_engine(_url(tmp_path), read_only=True)
    try:
        conn = ro.connect()
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(INSERT, {"v": "x"})
        assert not holds_writer_gate(conn)
        conn.close()
        # nothing held: a writable engine on the same file writes at once
        writable = make_engine(_url(tmp_path))
        run(lambda: _rollback(writable)).finish()
        writable.dispose()
    finally:
        ro.dispose()


@pytest.mark.skipif(not os.environ.get("MAILBOT_TEST_DATABASE_URL"),
                    reason="MAILBOT_TEST_DATABASE_URL is not set")
def test_a_postgresql_engine_has_no_gate() -> None:
    engine = make_engine(os.environ["MAILBOT_TEST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TEMPORARY TABLE t (id serial PRIMARY KEY, v text)")
            conn.execute(INSERT, {"v": "x"})
            assert not holds_writer_gate(conn)
            conn.rollback()
    finally:
        engine.dispose()


# --- fork ------------------------------------------------------------------------------------


def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child did not finish")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_with_a_free_gate(gated) -> None:
    # The parent's thread holds the gate but not yet SQLite's write lock: it is paused just
    # past the gate. (A child forked while a parent thread holds SQLite's lock cannot write
    # at all: SQLite's in-process lock state is copied with it, and nobody ever clears it.)
    at_gate, go_on = threading.Event(), threading.Event()

    def hold() -> None:
        with gated.begin() as conn:
            conn.execute(INSERT, {"v": "parent"})

    holder = Runner(hold)

    @event.listens_for(gated, "before_cursor_execute")
    def _pause(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if threading.current_thread() is holder:  # after the gate's own listener
            at_gate.set()
            go_on.wait(WAIT)

    holder.start()
    assert at_gate.wait(WAIT)
    pid = os.fork()
    if pid == 0:  # the child: the holding thread is not here, and never gives anything back
        code = 1
        try:
            gated.dispose(close=False)
            with gated.begin() as conn:
                conn.execute(INSERT, {"v": "child"})
            code = 0
        except BaseException:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(code)
    try:
        # An inherited, held gate would fail the child after GATE_SECONDS (patched to WAIT).
        status = _wait_child(pid, WAIT * 2)
    finally:
        go_on.set()
        holder.join(WAIT)
    assert status == 0, "the child could not write (see its traceback above)"
    holder.finish()
    assert values(gated) == ["child", "parent"]


# --- defects a first version had ------------------------------------------------------


def test_a_writer_woken_by_the_gate_finds_sqlite_free(tmp_path) -> None:
    # No busy timeout: meeting SQLite's write lock is an error instead of a sleep.
    with gated_engine(tmp_path, busy_seconds=0) as engine:
        a = engine.connect()
        a.execute(INSERT, {"v": "a"})
        writer_b, b_passed = writer_thread(engine, "b")

        @event.listens_for(engine, "commit")
        def _slow_commit(conn: Connection) -> None:  # after the gate's own listener
            if conn is a:  # let B act on its wake-up before A's commit reaches SQLite
                b_passed.wait(QUEUED)
                writer_b.done.wait(QUEUED)

        writer_b.start()
        assert not writer_b.done.wait(QUEUED)
        a.commit()
        a.close()
        writer_b.finish()
        assert values(engine) == ["a", "b"]


def test_begin_write_and_a_gated_writer_do_not_deadlock(tmp_path) -> None:
    # A short busy timeout stands in for SQLite's 30 s; GATE_SECONDS is longer (WAIT).
    with gated_engine(tmp_path, busy_seconds=0.3) as engine:
        session = session_factory(engine)()
        begin_write(session)  # as the PKI issuance does before its savepoint
        writer, other_passed = writer_thread(engine, "other")
        writer.start()
        other_passed.wait(QUEUED)  # the other thread holds the gate, SQLite keeps it waiting
        session.execute(INSERT, {"v": "session"})
        session.commit()
        session.close()
        writer.finish()
        assert values(engine) == ["other", "session"]


def test_an_invalidated_connection_rolls_back(gated) -> None:
    with gated.connect() as conn:
        conn.execute(INSERT, {"v": "gone"})
        conn.invalidate()
        conn.rollback()


def test_a_detached_connection_gives_the_gate_back_once(gated) -> None:
    conn = gated.connect()
    conn.execute(INSERT, {"v": "detached"})
    conn.detach()
    try:
        conn.commit()
    finally:
        conn.close()
    run(lambda: _rollback(gated)).finish()
    assert values(gated) == ["detached"]
