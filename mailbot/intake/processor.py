"""Archived rows -> facts -> the sink: analysis on every core, recording beside intake.

The analysis pool (pool.py) turns archived rows into MessageFacts; the recorder thread here
hands them, several per commit and in arrival order, to the sink intake is given (the cases
recorder). A message that fails (a missing or corrupt archive file, a database error) is
charged an attempt and tried again on the next pass; after `max_attempts` it is parked
(parking.py). A failure never holds up the messages behind it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailbot.clock import now
from mailbot.config import Config
from mailbot.faults import crash_point
from mailbot.intake.models import MESSAGE_ARCHIVED, MESSAGE_PROCESSED, Message
from mailbot.intake.parking import charge_failure, claim
from mailbot.intake.pool import (
    Analyse,
    AnalysisPool,
    InFlight,
    analyse_archived,
    kill_workers,
    workers_can_start,
)

if TYPE_CHECKING:
    from mailbot.intake.facts import MessageFacts
    from mailbot.intake.sink import FactsSink

log = logging.getLogger(__name__)

RECORD_BATCH = 25  # results recorded per commit
COMMIT_TRIES = 3  # attempts to commit a batch that clashes with another writer
POLL_SECONDS = 1.0  # the recorder looks at the clock this often while it waits
GRACE_SECONDS = 10.0  # after killing a pool, how long a future may take to learn of it


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

    def __init__(self, cfg: Config, sessions: sessionmaker[Session], sink: FactsSink,
                 *, workers: int | None = None, analyse: Analyse = analyse_archived) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.sink = sink
        n = cfg.intake.workers if workers is None else workers
        self.pool = AnalysisPool(n if n > 0 else (os.cpu_count() or 1), str(cfg.archive_dir),
                                 str(cfg.rules_dir), analyse)
        # Submitted and not yet recorded, oldest first; guarded by _cond.
        self._queue: deque[InFlight] = deque()
        self._busy: set[int] = set()  # their row ids, until recorded
        self._cond = threading.Condition()
        self._recorder: threading.Thread | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._parked: list[int] = []  # parked, not yet moved to the failed folder
        self._alone: cf.ProcessPoolExecutor | None = None  # see _one_by_one
        self.analysis_timeout = float(cfg.intake.analysis_timeout_seconds)
        self.report = ProcessReport()

    def start(self) -> None:
        """Start the parse workers now (a pool forks them on its first task only)."""
        self.pool.start()

    def close(self) -> None:
        """Stop the recorder and the pool; what is still in flight stays `archived` for the
        next run (its workers are killed rather than waited for: one might never finish)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            in_flight = bool(self._busy)
            if self._alone is not None:
                kill_workers(self._alone)  # a re-analysis one by one
        self.pool.close(kill=in_flight)
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
        futures = [self.pool.submit(row_id, sha or "") for row_id, sha in sorted(rows)]
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
        oldest_since: tuple[InFlight, float] | None = None  # (the oldest job, since when)
        killed: InFlight | None = None  # the job whose workers were killed
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
                batch: list[InFlight] = []
                if not oldest.future.done():
                    if overdue < 0:
                        continue
                    if overdue < GRACE_SECONDS:
                        if killed is not oldest:
                            killed = oldest
                            log.warning("analysis of message row %s runs over %.0f s: stopping"
                                        " its workers", oldest.row_id, self.analysis_timeout)
                            kill_workers(oldest.pool)
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
    def _record(self, results: list[InFlight]) -> None:
        ok: list[tuple[int, MessageFacts]] = []
        broke: list[InFlight] = []
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
            opened = self.record_results(ok)
            self.report.processed += len(ok)
            self.report.cases_opened += opened
        except Exception:  # noqa: BLE001 - find the one that fails, keep the others
            log.warning("recording a batch of %d failed; retrying one by one", len(ok),
                        exc_info=True)
            for row_id, facts in ok:
                try:
                    opened = self.record_results([(row_id, facts)])
                    self.report.processed += 1
                    self.report.cases_opened += opened
                except Exception as exc:  # noqa: BLE001
                    self._fail(row_id, exc)

    def record_results(self, items: list[tuple[int, MessageFacts]]) -> int:
        """Record and commit; a unique-key clash with another writer (a staff command
        chaining onto the same audit row, a case number taken meanwhile) is no fault of
        these messages: read the database again and retry, a few times."""
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                with self.sessions() as s:
                    opened = self._store(s, items)
                    crash_point("during_processing")
                    s.commit()
                    crash_point("after_cases_commit")
                return opened
            except IntegrityError:
                if attempt == COMMIT_TRIES:
                    raise
                log.info("recording clashed with another writer; again (%d)", attempt)
        raise AssertionError("unreachable")

    def _store(self, s: Session, items: list[tuple[int, MessageFacts]]) -> int:
        claimed = claim(s, [i for i, _ in items])
        rows = {m.id: m for m in s.scalars(select(Message).where(Message.id.in_(claimed)))}
        todo: list[tuple[Message, MessageFacts]] = []
        for row_id, facts in items:
            row = rows.get(row_id)
            if row is None:
                continue  # recorded meanwhile (another pass, `mailbot reprocess`) or reset
            mark_processed(row, facts)
            todo.append((row, facts))
        return self.sink.record(s, todo) if todo else 0

    def _one_by_one(self, jobs: list[InFlight]) -> list[tuple[int, MessageFacts]]:
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
        lone = self.pool.lone  # forkserver: this thread is not the only one
        alone: cf.ProcessPoolExecutor | None = None
        try:
            for job in jobs:
                try:
                    with self._cond:  # submitted under the lock: close() kills what starts
                        if self._closing:
                            break  # the rest stay `archived`, uncharged
                        alone = self._alone = alone or lone()
                        fut = self.pool.submit_alone(alone, job.sha256)
                    facts = fut.result(timeout=self.analysis_timeout)
                except (BrokenProcessPool, cf.TimeoutError) as exc:
                    kill_workers(alone)
                    alone.shutdown(wait=False, cancel_futures=True)
                    with self._cond:
                        if self._closing:
                            break  # killed by close(), not by this message
                        alone = self._alone = lone()  # a probe first
                    if not workers_can_start(alone):
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
        self.report.failed += 1
        if charge_failure(self.sessions, row_id, exc, self.cfg.intake.max_attempts):
            self.report.parked.append(row_id)
            with self._cond:
                self._parked.append(row_id)


def mark_processed(row: Message, facts: MessageFacts) -> None:
    """What intake itself keeps of an analysed message (the sink records the rest)."""
    row.kind = facts.kind
    if facts.subject:
        row.subject = facts.subject  # fully decoded, where ingest had only the header
    row.reply_address = (facts.reply_address or "")[:320] or None
    row.no_reply_reason = facts.no_reply_reason
    row.status = MESSAGE_PROCESSED
    row.processed_at = now()
