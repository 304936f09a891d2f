"""Archived rows -> facts -> cases: analysis on every core, recording in this process.

`analyse_message` runs in a process pool and reads the archived bytes itself (no copy over
the pipe); its MessageFacts come back and are recorded with `CaseStore` here, several per
commit. A message that fails (a missing or corrupt archive file, a database error) gets a
`ProcessingFailure` row and another try on the next pass; after `max_attempts` it is parked
and waits for `mailbot reprocess`. A failure never holds up the messages behind it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailbot.cases.models import (
    MESSAGE_ARCHIVED,
    MESSAGE_PARKED,
    Message,
    ProcessingFailure,
)
from mailbot.cases.store import CaseStore
from mailbot.clock import now
from mailbot.config import Config
from mailbot.intake import archive
from mailbot.intake.ingest import crash_point

if TYPE_CHECKING:
    from mailbot.intake.facts import MessageFacts
    from mailbot.mailbox.base import MailSource

log = logging.getLogger(__name__)

RECORD_BATCH = 25  # results recorded per commit
COMMIT_TRIES = 3  # attempts to commit a batch that clashes with another writer
POLL_SECONDS = 1.0  # the recorder looks at the clock this often while it waits
GRACE_SECONDS = 10.0  # after killing a pool, how long a future may take to learn of it


def analyse_archived(archive_dir: str, sha256: str, rules_dir: str) -> MessageFacts:
    """Worker side: read the archived bytes (checking the hash) and analyse them."""
    from mailbot.intake.analyse import analyse_message
    from mailbot.rules.settings import load_rule_settings

    raw = archive.load(archive_dir, sha256, verify=True)
    facts = analyse_message(raw, load_rule_settings(rules_dir))
    for att in facts.attachments:
        att.data = None  # the bytes stay in the archive; the store needs only the facts
    return facts


def _claim(s: Session, row_ids: list[int]) -> list[int]:
    """Of these rows, the ones still `archived`, locked for this transaction.

    An UPDATE, not a SELECT: on PostgreSQL it waits for a concurrent pass (the daemon and
    `mailbot reprocess` at the same moment) and then sees its outcome; on SQLite it takes
    the write lock first, so the check reads the latest commit. No row is recorded twice.
    """
    if not row_ids:
        return []
    return list(s.scalars(
        update(Message).where(Message.id.in_(row_ids), Message.status == MESSAGE_ARCHIVED)
        .values(attempts=Message.attempts).returning(Message.id)
        .execution_options(synchronize_session=False)))


def _forkserver() -> Any:
    """A start method safe while other threads run: workers fork from a clean server."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mailbot.intake.analyse"])
    return ctx


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes: the pool breaks and fails what it holds.

    ProcessPoolExecutor names its processes only in `_processes` (stable since 3.2).
    """
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.kill()
        except (OSError, ValueError):
            pass


def _workers_can_start(pool: cf.ProcessPoolExecutor) -> bool:
    """Run a trivial task in `pool` (then shut it down): False when even that fails."""
    try:
        pool.submit(os.getpid).result(timeout=60)
        return True
    except Exception:  # noqa: BLE001 - broken pool, timeout: the workers do not run
        log.error("a new parse worker could not run even a trivial task")
        return False
    finally:
        _kill_workers(pool)  # a probe that hangs must not hold its worker
        pool.shutdown(wait=False, cancel_futures=True)


def _worker_init() -> None:
    """Ignore stop signals, and leave as soon as the daemon is gone.

    SIGTERM or SIGINT sent to the whole process group (systemd, Ctrl-C) is the daemon's to
    handle: it finishes the current step and then stops its workers. A killed daemon
    (SIGKILL, OOM) cannot tell its pool to stop and a worker waiting for work never notices
    on its own; the worker's parent (the daemon, or the forkserver, which leaves with it)
    changes when the daemon dies: that is the sign to go.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _InFlight(NamedTuple):
    """One submitted analysis: its row, its future, and the pool running it."""

    row_id: int
    sha256: str
    future: cf.Future[Any]
    pool: cf.ProcessPoolExecutor


@dataclass
class ProcessReport:
    processed: int = 0
    failed: int = 0
    parked: list[int] = field(default_factory=list)
    cases_opened: int = 0


class Processor:
    """Owns the parse pool and the recorder thread.

    `submit` rows as they are committed; the recorder thread records the results in
    submission order (so case numbers follow arrival) while the caller goes on fetching;
    `drain` waits until everything submitted is recorded. Recording mostly waits on the
    database, so the thread overlaps it with intake's own waits (IMAP, fsync).
    """

    def __init__(self, cfg: Config, sessions: sessionmaker[Session],
                 *, workers: int | None = None) -> None:
        self.cfg = cfg
        self.sessions = sessions
        n = cfg.intake.workers if workers is None else workers
        self.workers = n if n > 0 else (os.cpu_count() or 1)
        self.archive_dir = str(cfg.archive_dir)
        self.rules_dir = str(cfg.rules_dir)
        self._pool: cf.ProcessPoolExecutor | None = None
        # Submitted and not yet recorded, oldest first; guarded by _cond.
        self._queue: deque[_InFlight] = deque()
        self._busy: set[int] = set()  # their row ids, until recorded
        self._cond = threading.Condition()
        self._recorder: threading.Thread | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._parked: list[int] = []  # parked, not yet moved to the failed folder
        self._alone: cf.ProcessPoolExecutor | None = None  # see _one_by_one
        self.analysis_timeout = float(cfg.intake.analysis_timeout_seconds)
        self.report = ProcessReport()

    # -- pool -------------------------------------------------------------------------------
    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import mailbot.intake.analyse  # noqa: F401 - workers start with it imported

            if threading.active_count() == 1:
                # fork: workers start at once and are our direct children (see _worker_init).
                # They never touch the inherited database or IMAP sockets, and leave with
                # os._exit, so nothing is closed twice.
                ctx = multiprocessing.get_context("fork")
            else:
                # A fork would copy locks other threads hold (a pool replaced while the
                # recorder runs).
                ctx = _forkserver()
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                                initializer=_worker_init)
        return self._pool

    def start(self) -> None:
        """Start the parse workers now (a pool forks them on its first task only)."""
        self._get_pool().submit(os.getpid).result()

    def _pool_submit(self, row_id: int, sha: str) -> _InFlight:
        """Submit one analysis; a pool broken by a dead worker is replaced first."""
        for _ in range(2):
            pool = self._get_pool()
            try:
                return _InFlight(row_id, sha, pool.submit(analyse_archived, self.archive_dir,
                                                          sha, self.rules_dir), pool)
            except BrokenProcessPool:
                log.warning("a parse worker died; starting a new pool")
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
        raise BrokenProcessPool("a new parse pool broke at once")

    def close(self) -> None:
        """Stop the recorder and the pool; what is still in flight stays `archived` for the
        next run (its workers are killed rather than waited for: one might never finish)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            in_flight = bool(self._busy)
            if self._alone is not None:
                _kill_workers(self._alone)  # a re-analysis one by one
        if self._pool is not None:
            if in_flight:
                _kill_workers(self._pool)  # before shutdown, which forgets the processes
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._recorder is not None:
            self._recorder.join()
            self._recorder = None
        with self._cond:
            self._queue.clear()
            self._busy.clear()
            self._closing = False

    def __enter__(self) -> Processor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- work -------------------------------------------------------------------------------
    def submit(self, row_ids: Iterable[int]) -> None:
        """Queue archived rows for analysis (called right after their commit)."""
        with self._cond:
            ids = [i for i in row_ids if i not in self._busy]
        if not ids:
            return
        with self.sessions() as s:
            rows = s.execute(select(Message.id, Message.sha256).where(
                Message.id.in_(ids), Message.status == MESSAGE_ARCHIVED)).all()
        if not rows:
            return
        futures = [self._pool_submit(row_id, sha or "") for row_id, sha in sorted(rows)]
        with self._cond:
            self._queue.extend(futures)
            self._busy.update(job.row_id for job in futures)
            self._cond.notify_all()
            if self._recorder is None:
                self._recorder = threading.Thread(target=self._record_loop,
                                                  name="mailbot-recorder", daemon=True)
                self._recorder.start()

    def submit_pending(self) -> int:
        """Queue every archived row not yet in flight; returns how many."""
        with self._cond:
            busy = set(self._busy)
        with self.sessions() as s:
            ids = [i for i in s.scalars(select(Message.id).where(
                Message.status == MESSAGE_ARCHIVED).order_by(Message.id)) if i not in busy]
        self.submit(ids)
        return len(ids)

    def drain(self) -> None:
        """Wait until everything submitted is recorded (the recorder thread records on its
        own meanwhile). Raises what stopped the recorder, if anything."""
        with self._cond:
            while self._busy and self._recorder is not None and self._recorder.is_alive():
                self._cond.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def run_pending(self) -> ProcessReport:
        """Analyse and record every archived row (one attempt each), then return the totals."""
        self.submit_pending()
        self.drain()
        return self.report

    def begin_cycle(self) -> None:
        """A new report; an error of an earlier, already failed cycle is not raised again."""
        with self._cond:
            self.report = ProcessReport()
            self._error = None

    def take_parked(self) -> list[int]:
        """Rows parked since the last call (whichever cycle parked them), for the mailbox."""
        with self._cond:
            parked, self._parked = self._parked, []
        return parked

    def return_parked(self, row_ids: Iterable[int]) -> None:
        """Rows the mailbox step could not move this time: offered again next cycle."""
        with self._cond:
            self._parked.extend(row_ids)

    def _record_loop(self) -> None:
        """Recorder thread: wait for the oldest analysis, record it with the ones ready
        behind it (up to RECORD_BATCH per commit), repeat.

        An analysis still running after `analysis_timeout` seconds as the oldest gets its
        pool's workers killed: the pool breaks, and `_one_by_one` finds the message that
        hangs. Should a future of a dead pool never complete, it is taken as broken.
        """
        oldest_since: tuple[_InFlight, float] | None = None  # (the oldest job, since when)
        killed: _InFlight | None = None  # the job whose workers were killed
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                oldest = self._queue[0]
            if oldest_since is None or oldest_since[0] is not oldest:
                oldest_since = (oldest, time.monotonic())
            cf.wait([oldest.future], timeout=min(POLL_SECONDS, self.analysis_timeout))
            overdue = time.monotonic() - oldest_since[1] - self.analysis_timeout
            with self._cond:
                if self._closing:
                    return
                batch: list[_InFlight] = []
                if not oldest.future.done():
                    if overdue < 0:
                        continue
                    if overdue < GRACE_SECONDS:
                        if killed is not oldest:
                            killed = oldest
                            log.warning("analysis of message row %s runs over %.0f s: stopping"
                                        " its workers", oldest.row_id, self.analysis_timeout)
                            _kill_workers(oldest.pool)
                        continue
                    batch.append(self._queue.popleft())  # a dead pool's lost future
                while self._queue and len(batch) < RECORD_BATCH and self._queue[0].future.done():
                    batch.append(self._queue.popleft())
            try:
                self._record(batch)
            except BaseException as exc:  # noqa: BLE001 - e.g. the database is gone
                # The rows stay `archived`: the next cycle's submit_pending tries them again.
                log.exception("recording %d analysed messages failed", len(batch))
                with self._cond:
                    self._error = exc
            finally:
                with self._cond:
                    self._busy.difference_update(job.row_id for job in batch)
                    self._cond.notify_all()

    # -- recording --------------------------------------------------------------------------
    def _record(self, results: list[_InFlight]) -> None:
        ok: list[tuple[int, MessageFacts]] = []
        broke: list[_InFlight] = []
        for job in results:
            if job.future.cancelled():
                continue  # closing: the row stays `archived` for the next run, uncharged
            if not job.future.done():  # its pool died without telling it
                broke.append(job)
                continue
            exc = job.future.exception()
            if isinstance(exc, BrokenProcessPool):
                broke.append(job)
            elif exc is not None:
                self._fail(job.row_id, exc)
            else:
                ok.append((job.row_id, job.future.result()))
        if broke:
            ok.extend(self._one_by_one(broke))
            ok.sort(key=lambda item: item[0])  # case numbers still follow arrival
        if not ok:
            return
        try:
            opened = self._commit(ok)
            self.report.processed += len(ok)
            self.report.cases_opened += opened
        except Exception:  # noqa: BLE001 - find the one that fails, keep the others
            log.warning("recording a batch of %d failed; retrying one by one", len(ok),
                        exc_info=True)
            for row_id, facts in ok:
                try:
                    opened = self._commit([(row_id, facts)])
                    self.report.processed += 1
                    self.report.cases_opened += opened
                except Exception as exc:  # noqa: BLE001
                    self._fail(row_id, exc)

    def _commit(self, items: list[tuple[int, MessageFacts]]) -> int:
        """Record and commit; a unique-key clash with another writer (a staff command
        chaining onto the same audit row, a case number taken meanwhile) is no fault of
        these messages: read the database again and retry, a few times."""
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                with self.sessions() as s:
                    opened = self._store(s, items)
                    crash_point("during_processing")
                    s.commit()
                return opened
            except IntegrityError:
                if attempt == COMMIT_TRIES:
                    raise
                log.info("recording clashed with another writer; again (%d)", attempt)
        raise AssertionError("unreachable")

    def _store(self, s: Session, items: list[tuple[int, MessageFacts]]) -> int:
        claimed = _claim(s, [i for i, _ in items])
        rows = {m.id: m for m in s.scalars(select(Message).where(Message.id.in_(claimed)))}
        todo: list[tuple[Message, MessageFacts]] = []
        for row_id, facts in items:
            row = rows.get(row_id)
            if row is None:
                continue  # recorded meanwhile (another pass, `mailbot reprocess`) or reset
            todo.append((row, facts))
        before = {row.id: row.case_id for row, _ in todo}
        cases = CaseStore(s).record_many(todo)
        return sum(1 for (row, facts), case in zip(todo, cases, strict=True)
                   if case is not None and before[row.id] is None
                   and facts.kind in ("new", "revoke"))

    def _one_by_one(self, jobs: list[_InFlight]) -> list[tuple[int, MessageFacts]]:
        """A worker died (killed, out of memory, a crash in C code, stopped for running too
        long) and took every analysis in flight with it. Find out which message did it:
        each again, alone in a worker of its own; the one whose worker dies (or runs over
        the time limit) again is charged the attempt, the others go on. If even a trivial
        task cannot run, workers cannot start at all: nobody is charged, and the error
        stops this pass.
        """
        log.warning("a parse worker died; analysing the %d messages it took along one by one",
                    len(jobs))
        ok: list[tuple[int, MessageFacts]] = []
        ctx = _forkserver()  # this thread is not the only one

        def lone() -> cf.ProcessPoolExecutor:
            return cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx,
                                          initializer=_worker_init)

        alone: cf.ProcessPoolExecutor | None = None
        try:
            for job in jobs:
                try:
                    with self._cond:  # submitted under the lock: close() kills what starts
                        if self._closing:
                            break  # the rest stay `archived`, uncharged
                        alone = self._alone = alone or lone()
                        fut = alone.submit(analyse_archived, self.archive_dir, job.sha256,
                                           self.rules_dir)
                    facts = fut.result(timeout=self.analysis_timeout)
                except (BrokenProcessPool, cf.TimeoutError) as exc:
                    _kill_workers(alone)
                    alone.shutdown(wait=False, cancel_futures=True)
                    with self._cond:
                        if self._closing:
                            break  # killed by close(), not by this message
                        alone = self._alone = lone()  # a probe first
                    if not _workers_can_start(alone):
                        raise RuntimeError("parse workers cannot start; nothing charged") \
                            from exc
                    alone = None
                    why = (f"did not finish within {self.analysis_timeout:.0f} s"
                           if isinstance(exc, cf.TimeoutError) else "died")
                    self._fail(job.row_id, RuntimeError(
                        f"the parse worker {why} while analysing this message"))
                except Exception as exc:  # noqa: BLE001 - as for any failed analysis
                    self._fail(job.row_id, exc)
                else:
                    ok.append((job.row_id, facts))
        finally:
            with self._cond:
                self._alone = None
            if alone is not None:
                alone.shutdown(wait=True)
        return ok

    def _fail(self, row_id: int, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"[:4000]
        log.warning("processing message row %s failed: %s", row_id, text)
        self.report.failed += 1
        with self.sessions() as s:
            if not _claim(s, [row_id]):
                return  # recorded meanwhile by another pass: nothing to charge
            row = s.get(Message, row_id)
            assert row is not None
            row.attempts = (row.attempts or 0) + 1
            row.last_error = text
            s.add(ProcessingFailure(message_row_id=row_id, error=text))
            parked = row.attempts >= self.cfg.intake.max_attempts
            if parked:
                row.status = MESSAGE_PARKED
            attempts = row.attempts
            s.commit()
        if parked:
            self.report.parked.append(row_id)
            with self._cond:
                self._parked.append(row_id)
            log.error("message row %s parked after %d attempts / 邮件处理失败已搁置"
                      " (mailbot reprocess %s)", row_id, attempts, row_id)


def park_in_mailbox(cfg: Config, sessions: sessionmaker[Session], source: MailSource,
                    row_ids: Iterable[int]) -> tuple[int, list[int]]:
    """Move parked messages to the failed folder, from wherever intake left them.

    Not yet moved: still in the inbox under its UID (or Maildir key). Moved to the processed
    folder: a Maildir message keeps its key; an IMAP message got a new UID there, so it is
    found again by its Message-ID (and size). One without a Message-ID stays where it is:
    the database row is what counts. Returns (how many moved, rows to try again later: the
    mailbox failed them this time).
    """
    from mailbot.mailbox.base import INBOX, MessageRef

    moved, again = 0, []
    maildir = source.identity.startswith("maildir:")
    finder = getattr(source, "find_message_id", None)
    if not source.supports_move():
        return 0, []  # keyword mode: nothing can be moved; the row is parked all the same
    with sessions() as s:
        rows = list(s.scalars(select(Message).where(Message.id.in_(list(row_ids)),
                                                    Message.status == MESSAGE_PARKED,
                                                    Message.source == source.identity)))
        for row in rows:
            try:
                if row.moved_at is None:
                    refs = [MessageRef(uid=row.uid or 0, key=row.source_key or str(row.uid or ""),
                                       size=row.size, folder=INBOX)]
                elif maildir:
                    refs = [MessageRef(uid=0, key=row.source_key or "", size=row.size,
                                       folder=cfg.intake.processed_folder)]
                elif finder is not None and row.message_id:
                    refs = [r for r in finder(cfg.intake.processed_folder, row.message_id)
                            if r.size == row.size]
                else:
                    refs = []
                if not refs:
                    log.warning("parked row %s: not found in the mailbox; left where it is",
                                row.id)
                    continue
                source.move(refs, cfg.intake.failed_folder)
                row.moved_at = now()  # out of the inbox: intake must not move it again
                moved += 1
            except Exception:  # noqa: BLE001 - the mailbox copy is a convenience for staff
                log.warning("could not move parked row %s to %s; trying again next cycle",
                            row.id, cfg.intake.failed_folder, exc_info=True)
                again.append(row.id)
        s.commit()
    return moved, again
