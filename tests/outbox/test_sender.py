"""send_due against a real aiosmtpd on loopback, on SQLite and PostgreSQL: rendered once,
retried on the clock, failed for good, SMTP down then back, never sent twice, and the one
window (killed between the server's acceptance and the commit) with at most one duplicate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailbot import clock
from mailbot.db import session_factory
from mailbot.outbox import context as ctx
from mailbot.outbox import sender
from mailbot.outbox.models import (
    COPY_DONE,
    COPY_FAILED,
    COPY_NONE,
    COPY_PENDING,
    FAILED,
    QUEUED,
    SENT,
    SUPPRESSED,
    OutboxMessage,
)
from mailbot.outbox.queue import Outgoing, enqueue
from mailbot.outbox.sender import (
    CLAIM_SECONDS,
    SendReport,
    Suppress,
    copies_due,
    copy_failures,
    mark_copy_done,
    mark_copy_failed,
    send_due,
)
from mailbot.outbox.transport import TemporaryFailure, Transport, transport_from_url
from tests.support import smtp as smtp_support
from tests.support.smtp import SmtpServer, prepare_simple

smtp_server = smtp_support.smtp_server  # the fixture (an argument would shadow an import)

ROOT = Path(__file__).resolve().parents[2]
FROM = "xmport@189.cn"


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def _queue(sessions: sessionmaker[Session], at: datetime, count: int = 1,
           to: str = "applicant@example.cn", template: str = ctx.ACKNOWLEDGEMENT,
           start: int = 1) -> list[int]:
    """Queue and commit `count` rows, one second apart from `at`; their ids, oldest first."""
    ids = []
    with sessions() as s:
        for n in range(start, start + count):
            row = enqueue(s, Outgoing(template=template, from_addr=FROM, to_addrs=[to],
                                      message_id=f"<XM-2026-0007.{n:04d}@189.cn>",
                                      case_ref="XM-2026-0007",
                                      context={"body": f"mail {n}\r\n"}),
                          our_addresses=[FROM], daily_cap=100,
                          now=at + timedelta(seconds=n - start))
            s.flush()
            ids.append(row.id)
        s.commit()
    return ids


def _rows(sessions: sessionmaker[Session]) -> list[OutboxMessage]:
    with sessions() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _transport(server: SmtpServer, tmp_path: Path) -> Transport:
    return transport_from_url(server.url(), password=None, timeout=20, base_dir=tmp_path)


class CountingPrepare:
    """prepare_simple, counted, and different every call (as a Date header would make it)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, session: Session, row: OutboxMessage) -> bytes:
        self.calls += 1
        return prepare_simple(session, row).replace(b"\r\n\r\n", f"\r\nX-Render: {self.calls}"
                                                    "\r\n\r\n".encode(), 1)


def _send(sessions: sessionmaker[Session], transport: Transport, now: Callable[[], datetime],
          *, prepare: Callable[[Session, OutboxMessage], bytes] = prepare_simple,
          max_attempts: int = 5, copy_wanted: bool = False,
          should_stop: Callable[[], bool] | None = None) -> SendReport:
    return send_due(sessions, transport, prepare=prepare, now=now, max_attempts=max_attempts,
                    backoff_seconds=60, backoff_max_seconds=300, copy_wanted=copy_wanted,
                    should_stop=should_stop)


def test_due_rows_go_out_oldest_first_as_rendered(sessions: sessionmaker[Session],
                                                  smtp_server: SmtpServer, tmp_path: Path,
                                                  frozen_clock: clock.FrozenClock) -> None:
    start = frozen_clock()
    _queue(sessions, start, 3)
    later = _queue(sessions, start + timedelta(hours=1), 1, start=4)  # not due yet
    frozen_clock.advance(seconds=2)
    prepare = CountingPrepare()
    report = _send(sessions, _transport(smtp_server, tmp_path), frozen_clock, prepare=prepare)
    assert (report.sent, report.retried, report.failed, report.suppressed) == (3, 0, 0, 0)
    assert prepare.calls == 3
    rows = _rows(sessions)
    assert [r.state for r in rows] == [SENT, SENT, SENT, QUEUED] and rows[3].id == later[0]
    got = smtp_server.deliveries
    assert [d.message_id for d in got] == [r.message_id for r in rows[:3]]
    assert [d.data for d in got] == [r.raw for r in rows[:3]]  # byte for byte
    assert all(d.rcpt_tos == ["applicant@example.cn"] and d.mail_from == FROM for d in got)
    assert all(r.sent_at == frozen_clock() and r.copy_state == COPY_NONE and r.attempts == 1
               and r.last_error is None for r in rows[:3])


def test_temporary_failure_then_success_sends_the_same_bytes(
        sessions: sessionmaker[Session], smtp_server: SmtpServer, tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    [row_id] = _queue(sessions, frozen_clock())
    smtp_server.fail_next(1, "451 4.3.0 Try again later")
    prepare = CountingPrepare()
    transport = _transport(smtp_server, tmp_path)
    report = _send(sessions, transport, frozen_clock, prepare=prepare)
    assert (report.sent, report.retried, report.unreachable) == (0, 1, None)
    [row] = _rows(sessions)
    assert (row.state, row.attempts) == (QUEUED, 1) and "451" in (row.last_error or "")
    assert row.next_attempt_at == frozen_clock() + timedelta(seconds=60)  # the clock's, no sleep
    first_raw = row.raw
    assert first_raw is not None and b"X-Render: 1" in first_raw  # committed before the attempt

    assert _send(sessions, transport, frozen_clock, prepare=prepare).attempted == 0
    frozen_clock.advance(seconds=59)
    assert _send(sessions, transport, frozen_clock, prepare=prepare).attempted == 0
    frozen_clock.advance(seconds=1)
    report = _send(sessions, transport, frozen_clock, prepare=prepare)
    assert report.sent == 1 and prepare.calls == 1
    [row] = _rows(sessions)
    assert (row.id, row.state, row.attempts, row.last_error) == (row_id, SENT, 2, None)
    assert [d.data for d in smtp_server.deliveries] == [first_raw]


def test_backoff_doubles_to_its_cap_then_the_row_fails(
        sessions: sessionmaker[Session], smtp_server: SmtpServer, tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock())
    smtp_server.fail_next(100, "421 4.3.2 Service shutting down")
    transport = _transport(smtp_server, tmp_path)
    waits = []
    for _ in range(4):
        report = _send(sessions, transport, frozen_clock)
        assert report.retried == 1
        [row] = _rows(sessions)
        waits.append((row.next_attempt_at - frozen_clock()).total_seconds())
        frozen_clock.current = row.next_attempt_at
    assert waits == [60, 120, 240, 300]  # doubled, capped at backoff_max_seconds
    report = _send(sessions, transport, frozen_clock)
    assert (report.failed, report.retried) == (1, 0)
    [row] = _rows(sessions)
    assert (row.state, row.attempts, row.failure_reported_at) == (FAILED, 5, None)
    assert "gave up after 5 attempts" in (row.last_error or "")
    assert report.errors and row.message_id in report.errors[0]
    frozen_clock.advance(days=1)
    assert _send(sessions, transport, frozen_clock).attempted == 0
    assert smtp_server.deliveries == []


def test_permanent_failure_fails_the_row_and_the_queue_goes_on(
        sessions: sessionmaker[Session], smtp_server: SmtpServer, tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 1, to="gone@example.cn")
    _queue(sessions, frozen_clock(), 1, to="here@example.cn", start=2)
    smtp_server.refuse("gone@example.cn", "550 5.1.1 No such user")
    frozen_clock.advance(seconds=1)
    report = _send(sessions, _transport(smtp_server, tmp_path), frozen_clock)
    assert (report.sent, report.failed, report.retried) == (1, 1, 0)
    gone, here = _rows(sessions)
    assert gone.state == FAILED and "550" in (gone.last_error or "") and gone.attempts == 1
    assert here.state == SENT
    assert "550" in report.errors[0] and "gone@example.cn" in report.errors[0]


def test_smtp_down_then_back(sessions: sessionmaker[Session], smtp_server: SmtpServer,
                             tmp_path: Path, frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 3)
    frozen_clock.advance(seconds=2)
    transport = _transport(smtp_server, tmp_path)
    smtp_server.stop()
    report = _send(sessions, transport, frozen_clock)
    assert (report.sent, report.retried) == (0, 1) and report.unreachable
    rows = _rows(sessions)
    # The batch stopped at the first row: the others were not tried and are still due.
    assert [(r.state, r.attempts) for r in rows] == [(QUEUED, 1), (QUEUED, 0), (QUEUED, 0)]
    assert rows[0].next_attempt_at == frozen_clock() + timedelta(seconds=60)
    assert all(r.raw is not None for r in rows[:1])

    smtp_server.start()
    assert _send(sessions, transport, frozen_clock).sent == 2  # the first waits its backoff
    frozen_clock.advance(seconds=60)
    assert _send(sessions, transport, frozen_clock).sent == 1
    assert [r.state for r in _rows(sessions)] == [SENT] * 3
    assert Counter(d.message_id for d in smtp_server.deliveries) == Counter(
        r.message_id for r in rows)


def test_a_row_accepted_is_never_sent_again(sessions: sessionmaker[Session],
                                            smtp_server: SmtpServer, tmp_path: Path,
                                            frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock())
    transport = _transport(smtp_server, tmp_path)
    assert _send(sessions, transport, frozen_clock).sent == 1
    with sessions() as s:  # even made due again by hand
        row = s.scalars(select(OutboxMessage)).one()
        row.next_attempt_at = frozen_clock() - timedelta(days=1)
        s.commit()
    for _ in range(3):
        frozen_clock.advance(days=1)
        assert _send(sessions, transport, frozen_clock).attempted == 0
    assert len(smtp_server.deliveries) == 1


def test_a_prepare_that_raises_fails_only_its_row(sessions: sessionmaker[Session],
                                                  smtp_server: SmtpServer, tmp_path: Path,
                                                  frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 1, template=ctx.INCOMPLETE)
    _queue(sessions, frozen_clock(), 1, start=2)

    def prepare(session: Session, row: OutboxMessage) -> bytes:
        if row.template == ctx.INCOMPLETE:
            raise RuntimeError("undefined variable 'findings'")
        return prepare_simple(session, row)

    frozen_clock.advance(seconds=1)
    report = _send(sessions, _transport(smtp_server, tmp_path), frozen_clock, prepare=prepare)
    assert (report.sent, report.failed) == (1, 1)
    broken, fine = _rows(sessions)
    assert broken.state == FAILED and broken.raw is None
    assert broken.last_error == "could not be rendered: RuntimeError: undefined variable 'findings'"
    assert "could not be rendered" in report.errors[0]
    assert fine.state == SENT


def test_prepare_may_suppress_and_bad_rows_are_suppressed(
        sessions: sessionmaker[Session], smtp_server: SmtpServer, tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 1, template=ctx.EXPIRED)
    [bad] = _queue(sessions, frozen_clock(), 1, start=2)
    with sessions() as s:  # a row written around enqueue's checks
        row = s.get(OutboxMessage, bad)
        assert row is not None
        row.to_addrs = ["<>"]
        s.commit()

    def prepare(session: Session, row: OutboxMessage) -> bytes:
        raise Suppress("the case was closed meanwhile")

    frozen_clock.advance(seconds=1)
    report = _send(sessions, _transport(smtp_server, tmp_path), frozen_clock, prepare=prepare)
    assert (report.suppressed, report.sent, report.failed) == (2, 0, 0)
    first, second = _rows(sessions)
    assert (first.state, first.last_error) == (SUPPRESSED,
                                               "suppressed: the case was closed meanwhile")
    assert second.state == SUPPRESSED and "null recipient" in (second.last_error or "")
    assert smtp_server.deliveries == []


def test_should_stop_ends_the_batch_between_rows(sessions: sessionmaker[Session],
                                                 smtp_server: SmtpServer, tmp_path: Path,
                                                 frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 3)
    frozen_clock.advance(seconds=2)
    asked = iter([False, True])
    report = _send(sessions, _transport(smtp_server, tmp_path), frozen_clock,
                   should_stop=lambda: next(asked))
    assert (report.sent, report.stopped) == (1, True)
    assert [r.state for r in _rows(sessions)] == [SENT, QUEUED, QUEUED]


def test_file_delivery_writes_one_eml_per_row(sessions: sessionmaker[Session], tmp_path: Path,
                                              frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 3)
    frozen_clock.advance(seconds=2)
    transport = transport_from_url("file:outbox", password=None, timeout=1, base_dir=tmp_path)
    assert _send(sessions, transport, frozen_clock).sent == 3
    rows = _rows(sessions)
    files = {p.name: p.read_bytes() for p in (tmp_path / "outbox").iterdir()}
    assert files == {f"{r.message_id.strip('<>')}.eml": r.raw for r in rows}


def test_bytes_another_sender_stored_first_are_the_ones_sent(
        sessions: sessionmaker[Session], smtp_server: SmtpServer, tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    """Two senders render the same row at once: the bytes committed first win, both send
    those (the loser's rendering is dropped, never overwrites)."""
    [row_id] = _queue(sessions, frozen_clock())
    theirs = b"X-Rendered-By: the other sender\r\n"

    def prepare(session: Session, row: OutboxMessage) -> bytes:
        with sessions() as other:  # the other sender commits its rendering meanwhile
            other.execute(update(OutboxMessage).where(OutboxMessage.id == row_id)
                          .values(raw=theirs + prepare_simple(other, row)))
            other.commit()
        return prepare_simple(session, row)

    frozen_clock.advance(seconds=1)
    assert _send(sessions, _transport(smtp_server, tmp_path), frozen_clock,
                 prepare=prepare).sent == 1
    [row] = _rows(sessions)
    assert row.raw is not None and row.raw.startswith(theirs)
    assert [d.data for d in smtp_server.deliveries] == [row.raw]


def test_one_commit_a_row_besides_the_batch_rendering(
        sessions: sessionmaker[Session], smtp_server: SmtpServer, tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    """Each row's claim is committed with the previous row's outcome: a batch of N rows
    costs N + 1 commits to send, plus the snapshot's and the rendering's."""
    count = sender.RENDER_BATCH + 5
    _queue(sessions, frozen_clock(), count)
    frozen_clock.advance(seconds=count)
    commits: list[Session] = []
    event.listen(sessions, "after_commit", commits.append)  # this test's own sessionmaker
    assert _send(sessions, _transport(smtp_server, tmp_path), frozen_clock).sent == count
    batches = -(-count // sender.RENDER_BATCH)
    # per batch: the rendering, the first claim, then one commit per row
    assert len(commits) == batches * 2 + count
    assert [r.state for r in _rows(sessions)] == [SENT] * count


def test_an_idempotent_transport_gets_a_batch_and_one_commit(
        sessions: sessionmaker[Session], tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    """file: replaces a file written twice, so nothing is claimed: a batch is written, the
    folder synced once, and its outcomes committed together."""
    count = sender.RENDER_BATCH + 5
    _queue(sessions, frozen_clock(), count)
    frozen_clock.advance(seconds=count)
    commits: list[Session] = []
    event.listen(sessions, "after_commit", commits.append)
    transport = transport_from_url("file:outbox", password=None, timeout=1, base_dir=tmp_path)
    assert transport.idempotent
    handed: list[int] = []
    real_send_many = transport.send_many
    transport.send_many = lambda mails: handed.append(len(mails)) or real_send_many(mails)
    assert _send(sessions, transport, frozen_clock).sent == count
    assert handed == [sender.RENDER_BATCH, 5]
    assert len(commits) == len(handed) * 2  # per batch: the rendering and the outcomes
    rows = _rows(sessions)
    assert [r.state for r in rows] == [SENT] * count
    assert [r.next_attempt_at <= frozen_clock() for r in rows] == [True] * count  # no lease
    assert len(list((tmp_path / "outbox").iterdir())) == count


def test_an_idempotent_batch_records_each_outcome(
        sessions: sessionmaker[Session], tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    """A file that cannot be written is retried on its own; a row another sender recorded
    meanwhile is neither counted nor changed."""
    first, second, third = _queue(sessions, frozen_clock(), 3)
    frozen_clock.advance(seconds=2)
    transport = transport_from_url("file:outbox", password=None, timeout=1, base_dir=tmp_path)
    real_send_many = transport.send_many

    def send_many(mails: list[tuple[bytes, str, list[str]]]) -> list[Exception | None]:
        with sessions() as other:  # the other sender records the first as sent meanwhile
            other.execute(update(OutboxMessage).where(OutboxMessage.id == first)
                          .values(state=SENT, attempts=7))
            other.commit()
        outcomes = real_send_many(mails)
        return [outcome if b".0002@" not in raw else TemporaryFailure("disk full")
                for outcome, (raw, _f, _t) in zip(outcomes, mails, strict=True)]

    transport.send_many = send_many
    report = _send(sessions, transport, frozen_clock)
    assert (report.sent, report.retried) == (1, 1)
    rows = {r.id: r for r in _rows(sessions)}
    assert (rows[first].state, rows[first].attempts) == (SENT, 7)
    assert (rows[second].state, rows[second].attempts, rows[second].last_error) == (
        QUEUED, 1, "disk full")
    assert rows[second].next_attempt_at == frozen_clock() + timedelta(seconds=60)
    assert (rows[third].state, rows[third].attempts) == (SENT, 1)


def test_sent_copy_bookkeeping(sessions: sessionmaker[Session], smtp_server: SmtpServer,
                               tmp_path: Path, frozen_clock: clock.FrozenClock) -> None:
    _queue(sessions, frozen_clock(), 2)
    frozen_clock.advance(seconds=1)
    assert _send(sessions, _transport(smtp_server, tmp_path), frozen_clock,
                 copy_wanted=True).sent == 2
    with sessions() as s:
        first, second = copies_due(s, frozen_clock(), limit=10)
        assert first.copy_state == second.copy_state == COPY_PENDING
        assert [r.id for r in copies_due(s, frozen_clock(), limit=1)] == [first.id]
        mark_copy_done(s, first)
        assert not mark_copy_failed(s, second, "NO [TRYCREATE]", frozen_clock(), 3,
                                    backoff_seconds=60, backoff_max_seconds=300)
        s.commit()
        assert copies_due(s, frozen_clock(), limit=10) == []  # waiting its backoff
        assert second.copy_next_attempt_at == frozen_clock() + timedelta(seconds=60)
        frozen_clock.advance(seconds=60)
        assert copies_due(s, frozen_clock(), limit=10) == [second]
        assert not mark_copy_failed(s, second, "timeout", frozen_clock(), 3, 60, 300)
        frozen_clock.advance(seconds=120)
        assert mark_copy_failed(s, second, "timeout again", frozen_clock(), 3, 60, 300)
        s.commit()
        assert (second.copy_state, second.copy_attempts, second.copy_error) == (
            COPY_FAILED, 3, "timeout again")
        assert second.copy_next_attempt_at == frozen_clock()  # when it was given up
        assert first.copy_state == COPY_DONE and second.state == SENT
        frozen_clock.advance(days=1)
        assert copies_due(s, frozen_clock(), limit=10) == []
        assert copy_failures(s) == [second]


# The kill window: a sender in another process, SIGKILLed at one of three points while it
# sends the second of three rows; then this process restarts the queue.
KILL_SCRIPT = """
import os, signal, sys
from datetime import datetime
import mailbot.cases.models, mailbot.intake.models  # the tables the outbox's keys name
from mailbot.db import make_engine, session_factory
from mailbot.outbox.sender import send_due
from mailbot.outbox.transport import transport_from_url
from tests.support.smtp import prepare_simple

db_url, smtp_url, at, kill_after = sys.argv[1:]
when = datetime.fromisoformat(at)
transport = transport_from_url(smtp_url, password=None, timeout=30, base_dir=".")
if kill_after:
    real_send = transport.send
    def send(raw, from_addr, to_addrs):
        real_send(raw, from_addr, to_addrs)
        if kill_after.encode() in raw:  # the server said 250: die before the commit
            os.kill(os.getpid(), signal.SIGKILL)
    transport.send = send
    real_send_many = transport.send_many
    def send_many(mails):
        outcomes = real_send_many(mails)
        if any(kill_after.encode() in raw for raw, _f, _t in mails):  # written, not recorded
            os.kill(os.getpid(), signal.SIGKILL)
        return outcomes
    transport.send_many = send_many
send_due(session_factory(make_engine(db_url)), transport, prepare=prepare_simple,
         now=lambda: when, max_attempts=5, backoff_seconds=60, backoff_max_seconds=3600,
         copy_wanted=False)
sys.exit(3)  # never reached: the test kills this process first
"""


@pytest.mark.parametrize(("kill_at", "copies_of_second"), [
    ("rcpt", 1),  # before the server had the message: nothing to repeat
    ("before_250", 2),  # the server has it, the client never heard 250: one duplicate
    ("after_250", 2),  # the client heard 250 and died before its commit: one duplicate
])
def test_kill_between_acceptance_and_commit_repeats_at_most_one_mail(
        kill_at: str, copies_of_second: int, engine: Engine, sessions: sessionmaker[Session],
        smtp_server: SmtpServer, tmp_path: Path, frozen_clock: clock.FrozenClock) -> None:
    t0 = frozen_clock()
    first, second, third = _queue(sessions, t0, 3)
    frozen_clock.advance(seconds=2)
    second_id = "<XM-2026-0007.0002@189.cn>"
    proc: dict[str, subprocess.Popen[bytes]] = {}
    transactions = Counter[str]()

    def hook(stage: str, envelope: Any, address: str | None) -> None:
        transactions[stage] += 1
        hit = ((kill_at == "rcpt" and stage == "RCPT" and transactions["MAIL"] == 2)
               or (kill_at == "before_250" and stage == "ACCEPTED"
                   and second_id.encode() in envelope.original_content))
        if hit:
            os.kill(proc["sender"].pid, signal.SIGKILL)
        return None

    smtp_server.hook = hook
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc["sender"] = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, engine.url.render_as_string(hide_password=False),
         smtp_server.url(), frozen_clock().isoformat(),
         second_id if kill_at == "after_250" else ""],
        cwd=ROOT, env=env, stderr=subprocess.PIPE)
    _out, err = proc["sender"].communicate(timeout=120)
    assert proc["sender"].returncode == -signal.SIGKILL, err.decode(errors="replace")
    smtp_server.hook = None

    rows = {r.id: r for r in _rows(sessions)}
    assert rows[first].state == SENT
    # The batch was rendered (its bytes committed), the second claimed, then the sender died.
    assert (rows[second].state, rows[second].attempts) == (QUEUED, 0)
    assert rows[second].raw is not None
    assert rows[second].next_attempt_at == frozen_clock() + timedelta(seconds=CLAIM_SECONDS)
    # The third was rendered with it but never claimed: due at once, not held by a lease.
    assert rows[third].state == QUEUED and rows[third].raw is not None
    assert rows[third].next_attempt_at <= frozen_clock()

    transport = _transport(smtp_server, tmp_path)
    assert _send(sessions, transport, frozen_clock).sent == 1  # the third; the second is held
    frozen_clock.advance(seconds=CLAIM_SECONDS)  # the dead sender's claim runs out
    assert _send(sessions, transport, frozen_clock).sent == 1
    frozen_clock.advance(days=1)
    assert _send(sessions, transport, frozen_clock).attempted == 0

    rows = {r.id: r for r in _rows(sessions)}
    assert [r.state for r in rows.values()] == [SENT] * 3
    copies = Counter(d.message_id for d in smtp_server.deliveries)
    assert copies == {rows[first].message_id: 1, second_id: copies_of_second,
                      rows[third].message_id: 1}
    assert {d.data for d in smtp_server.deliveries if d.message_id == second_id} == {
        rows[second].raw}  # a duplicate is the same bytes, the same Message-ID


def test_kill_before_an_idempotent_batch_is_recorded_repeats_nobodys_mail(
        engine: Engine, sessions: sessionmaker[Session], tmp_path: Path,
        frozen_clock: clock.FrozenClock) -> None:
    """Killed after a batch's files are written and synced, before its outcomes commit: the
    rows are still queued and due at once (no lease), and the restart writes the same files
    again: one file a mail, each holding the bytes the row stores."""
    _queue(sessions, frozen_clock(), 3)
    frozen_clock.advance(seconds=2)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, engine.url.render_as_string(hide_password=False),
         f"file:{tmp_path / 'outbox'}", frozen_clock().isoformat(),
         "<XM-2026-0007.0002@189.cn>"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE,
        timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
    written = {p.name: p.read_bytes() for p in (tmp_path / "outbox").iterdir()}
    assert len(written) == 3  # every file of the batch was written before the kill
    rows = _rows(sessions)
    assert [(r.state, r.attempts) for r in rows] == [(QUEUED, 0)] * 3
    assert all(r.next_attempt_at <= frozen_clock() for r in rows)

    transport = transport_from_url("file:outbox", password=None, timeout=1, base_dir=tmp_path)
    assert _send(sessions, transport, frozen_clock).sent == 3
    rows = _rows(sessions)
    assert [r.state for r in rows] == [SENT] * 3
    files = {p.name: p.read_bytes() for p in (tmp_path / "outbox").iterdir()}
    assert files == written == {f"{r.message_id.strip('<>')}.eml": r.raw for r in rows}


def test_the_window_is_documented() -> None:
    doc = sender.__doc__ or ""
    assert "at most one" in doc and "duplicate" in doc and "only there" in doc
