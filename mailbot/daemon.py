"""The daemon: intake (IDLE or polling), processing, a periodic full UID sweep, other jobs.

`run_once` runs every job once and returns; `run_forever` loops on the mailbox's
`wait_for_changes` (IMAP IDLE where offered), reconnects with backoff when the connection
drops, and stops cleanly on SIGTERM/SIGINT. Every step is transactional, so stopping (or
being killed) anywhere loses nothing: the next start picks up from the database.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailbot.cases.models import MailboxState
from mailbot.clock import now
from mailbot.config import Config
from mailbot.db import make_engine, session_factory
from mailbot.intake.ingest import IngestReport, ingest
from mailbot.intake.process import Processor, ProcessReport, park_in_mailbox
from mailbot.mailbox.base import MailSource

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_MAX = 300.0

# Further jobs (staff flags, issuance, outbox, expiry) register here: fn(daemon) -> None.
# They run once per cycle after intake and processing, each failure logged and contained.
Job = Callable[["Daemon"], None]
EXTRA_JOBS: list[tuple[str, Job]] = []


class _Shutdown(BaseException):
    """Raised by the signal handler to leave a blocking wait (IDLE, sleep) at once."""


@dataclass
class CycleReport:
    intake: IngestReport = field(default_factory=IngestReport)
    processing: ProcessReport = field(default_factory=ProcessReport)
    errors: list[str] = field(default_factory=list)


class Daemon:
    def __init__(self, cfg: Config, *, source: MailSource | None = None,
                 engine: Engine | None = None,
                 sleep: Callable[[float], Any] | None = None) -> None:
        self.cfg = cfg
        self.engine = engine or make_engine(cfg.database_url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        if source is None:
            from mailbot.mailbox.url import source_from_config

            source = source_from_config(cfg)
        self.source = source
        self.processor = Processor(cfg, self.sessions)
        self._stop = threading.Event()
        self._waiting = False
        self._sleep = sleep or self._stop.wait

    # -- one cycle --------------------------------------------------------------------------
    def sweep_due(self) -> bool:
        with self.sessions() as s:
            state = s.get(MailboxState, self.source.identity)
            last = state.last_sweep_at if state is not None else None
        return last is None or now() - last >= timedelta(seconds=self.cfg.intake.sweep_seconds)

    def cycle(self, *, full_sweep: bool | None = None) -> CycleReport:
        """Intake (pipelined into the parse pool), processing, parking, then the other jobs."""
        report = CycleReport()
        proc = self.processor
        proc.begin_cycle()
        proc.submit_pending()  # left over from a crash or a reprocess
        self.source.open()
        sweep = self.sweep_due() if full_sweep is None else full_sweep
        # Rows go to the parse pool as soon as they are committed; the processor's recorder
        # thread turns the results into cases while intake goes on with the next batch.
        report.intake = ingest(self.cfg, self.sessions, self.source, full_sweep=sweep,
                               on_committed=proc.submit)
        proc.drain()
        report.processing = proc.report
        parked = proc.take_parked()  # this cycle's, and any an interrupted cycle left
        if parked:
            try:
                _, again = park_in_mailbox(self.cfg, self.sessions, self.source, parked)
            except Exception:
                proc.return_parked(parked)  # e.g. the database is gone: next cycle
                raise
            proc.return_parked(again)
        for name, job in EXTRA_JOBS:
            try:
                job(self)
            except Exception as exc:  # noqa: BLE001 - one job's failure must not stop intake
                log.exception("job %s failed", name)
                report.errors.append(f"{name}: {exc}")
        i, p = report.intake, report.processing
        log.info("cycle: listed %d, new %d, duplicate %d, oversize %d, moved %d; processed %d,"
                 " cases opened %d, failed %d, parked %d", i.listed, i.archived, i.duplicates,
                 i.oversize, i.moved, p.processed, p.cases_opened, p.failed, len(p.parked))
        return report

    def run_once(self) -> CycleReport:
        try:
            return self.cycle()
        finally:
            self.close()

    # -- the loop ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current step", signum)
        self._stop.set()
        if self._waiting:
            raise _Shutdown()

    def run_forever(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        backoff = BACKOFF_START
        try:
            while not self._stop.is_set():
                try:
                    self.cycle()
                    backoff = BACKOFF_START
                    if self._stop.is_set():
                        break
                    self._waiting = True
                    try:
                        self.source.wait_for_changes(self._wait_seconds())
                    finally:
                        self._waiting = False
                except _Shutdown:
                    break
                except Exception as exc:  # noqa: BLE001 - connection loss, server or DB hiccup
                    log.warning("intake interrupted (%s: %s); reconnecting in %.0f s",
                                type(exc).__name__, exc, backoff)
                    self.source.close()
                    self._waiting = True
                    try:
                        self._sleep(backoff)
                    except _Shutdown:
                        break
                    finally:
                        self._waiting = False
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        log.info("stopped cleanly")
        return 0

    def _wait_seconds(self) -> float:
        """Until the next sweep is due, and never longer than the IDLE renewal period."""
        with self.sessions() as s:
            state = s.get(MailboxState, self.source.identity)
            last = state.last_sweep_at if state is not None else None
        until_sweep = float(self.cfg.intake.sweep_seconds)
        if last is not None:
            until_sweep -= (now() - last).total_seconds()
        return max(1.0, min(until_sweep, float(self.cfg.intake.idle_renew_seconds)))

    def close(self) -> None:
        self.processor.close()
        self.source.close()


def reprocess(cfg: Config, targets: list[str], *, all_parked: bool = False,
              engine: Engine | None = None) -> tuple[list[int], list[str], ProcessReport]:
    """Put parked messages back to `archived` (attempts reset) and process them.

    targets: message row ids or Message-IDs (with or without <>). Returns (row ids reset,
    targets not found or not parked, the processing report).
    """
    from sqlalchemy import or_, select

    from mailbot.cases.models import MESSAGE_ARCHIVED, MESSAGE_PARKED, Message

    eng = engine or make_engine(cfg.database_url)
    sessions = session_factory(eng)
    reset: list[int] = []
    unknown: list[str] = []
    with sessions() as s:
        rows: list[Message] = []
        if all_parked:
            rows.extend(s.scalars(select(Message).where(Message.status == MESSAGE_PARKED)))
        for t in targets:
            cond = [Message.message_id == t, Message.message_id == f"<{t.strip('<>')}>"]
            if t.isdigit():
                cond.append(Message.id == int(t))
            found = [m for m in s.scalars(select(Message).where(or_(*cond)))
                     if m.status == MESSAGE_PARKED]
            if not found:
                unknown.append(t)
            rows.extend(found)
        for row in {r.id: r for r in rows}.values():
            row.status, row.attempts, row.last_error = MESSAGE_ARCHIVED, 0, None
            reset.append(row.id)
        s.commit()
    report = ProcessReport()
    if reset:
        with Processor(cfg, sessions) as proc:
            proc.submit(reset)
            proc.drain()
            report = proc.report
    if engine is None:
        eng.dispose()
    return sorted(reset), unknown, report
