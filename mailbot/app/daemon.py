"""The daemon: the mail path at once when mail arrives, periodic jobs when they fall due.

`run_once` runs every job once, in CONTRACTS.md's order, and returns. `run_forever` runs them
all at start, then waits in the mailbox's `wait_for_changes` (IMAP IDLE where offered; a
Maildir is looked at every second) until new mail arrives or the next periodic job falls due
(app/schedule.py, apscheduler's triggers): new mail runs the mail path (mail, staff marks,
issuance, outbox), so it is answered within a second or two; a due job runs with what it
leads to (a staff mark to issuance and the outbox). A job that cannot reach its server or
database makes the daemon reconnect with backoff; SIGTERM/SIGINT take no new work, finish the
step in hand, and end a wait (IDLE, poll, reconnect backoff) within a second. Every step is
transactional, so stopping (or being killed) anywhere loses nothing: the next start picks up
from the database.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailbot.app.analysis import analyse_and_judge
from mailbot.app.jobs import JOBS
from mailbot.app.judging import case_recorder
from mailbot.app.notices import app_sessions
from mailbot.app.schedule import Schedule
from mailbot.config import Config
from mailbot.db import make_engine
from mailbot.intake.ingest import IngestReport
from mailbot.intake.pipeline import IntakePipeline
from mailbot.intake.processor import ProcessReport
from mailbot.mailbox.base import MailboxError, MailSource
from mailbot.mailbox.maildir import WATCH_SECONDS, MaildirSource
from mailbot.outbox.sender import next_attempt

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_MAX = 300.0
# `run --once` gives an unreachable mailbox one more try (after about a second), not the
# daemon's patient six: someone (or cron) waits for the answer, and the next run tries again.
ONCE_RECONNECTS = 1
NEEDS_MAILBOX = frozenset({"mailbox"})  # jobs skipped when the mail job found it unreachable
# New mail runs these; a staff mark found leads on to issuance and the outbox.
MAIL_PATH = ("mail", "mailbox", "issuance", "outbox")
LEADS_TO = {"marks": ("mailbox", "issuance", "outbox"), "outbox": ("outbox",),
            "expiry": ("expiry", "outbox"),
            "digest": ("digest", "outbox")}
MIN_WAIT = 0.2  # seconds: a due job is run now, not in a busy loop



class Shutdown(BaseException):
    """Raised in the main thread to leave a blocking wait (IDLE, poll, backoff) at once."""


@dataclass
class CycleReport:
    intake: IngestReport = field(default_factory=IngestReport)
    processing: ProcessReport = field(default_factory=ProcessReport)
    errors: list[str] = field(default_factory=list)  # jobs that could not do their work
    summaries: dict[str, str] = field(default_factory=dict)  # job name -> what it did
    seconds: dict[str, float] = field(default_factory=dict)  # job name -> wall time it took
    move_error: str | None = None  # the mailbox refuses to move mail (no failure of the run)
    stopped: bool = False  # a stop request ended the cycle before every job ran


class Daemon:
    def __init__(self, cfg: Config, *, source: MailSource | None = None,
                 engine: Engine | None = None, once: bool = False,
                 still_held: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        # The one-instance lock (app/instance.py): a daemon that lost it stops, exit 1.
        self.still_held = still_held
        self._told_how = False
        self._stop = threading.Event()
        self.mailbox_down = False  # this cycle's mail job could not reach the mailbox
        self.polling_marks = False  # the marks job runs for the flag poll alone (app/schedule)
        self._waiting = 0  # depth of nested waits (IDLE, and the mailbox's backoff inside it)
        self._own_engine = engine is None
        self._heap_frozen = False  # see started()
        self.engine = engine or make_engine(cfg.database_url)
        # Its commits turn the notices of case changes into outbox rows (app/notices.py).
        self.sessions: sessionmaker[Session] = app_sessions(cfg, self.engine)
        if source is None:
            from mailbot.mailbox.url import source_from_config

            retries = {"max_retries": ONCE_RECONNECTS} if once else {}
            source = source_from_config(cfg, sleep=self.sleep, **retries)
        self.source = source
        self.intake = IntakePipeline(cfg, self.sessions, source,
                                     case_recorder(cfg),
                                     analyse=analyse_and_judge)

    def started(self) -> None:
        """Start-up is done: keep what it built (modules, the engine, compiled templates and
        statements) out of later collections.

        A full collection walks every object the process holds, holding the GIL: two of them
        cost ~0.2 s of a 600-message `run --once` (bench/intake.py), stalling intake, the
        archiving thread and the recorder alike. Forked parse workers share more pages too.
        Only the young generations are collected first (a full collection of a large heap
        takes long itself); `close` gives the objects back to the collector.
        """
        if not self._heap_frozen:
            gc.collect(1)
            gc.freeze()
            self._heap_frozen = True

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> None:
        """Every wait of the daemon (and of its mailbox): ends at once on a stop request."""
        with self._wait():
            if self._stop.wait(seconds):
                raise Shutdown()

    @contextmanager
    def _wait(self) -> Iterator[None]:
        self._waiting += 1
        try:
            if self._stop.is_set():  # after counting: a signal from now on raises at once
                raise Shutdown()
            yield
        finally:
            self._waiting -= 1

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current step", signum)
        self._stop.set()
        if self._waiting:
            raise Shutdown()

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- one cycle --------------------------------------------------------------------------
    def cycle(self, *, full_sweep: bool | None = None,
              only: Collection[str] | None = None) -> CycleReport:
        """Every job once (or the jobs named in `only`), mail first, in JOBS' order; a job
        that fails is reported and the others still run."""
        report = CycleReport()
        self.mailbox_down = False
        if only is None:
            self.polling_marks = False

        def mail(_daemon: Daemon) -> None:
            got = self.intake.cycle(full_sweep=full_sweep, should_stop=lambda: self.stopping)
            report.intake, report.processing = got.intake, got.processing
            report.move_error = got.move_error
            report.stopped = got.intake.stopped

        for name, job in [("mail", mail), *JOBS]:
            if only is not None and name not in only:
                continue
            if self.stopping:
                report.stopped = True
                break
            if name in NEEDS_MAILBOX and self.mailbox_down:
                continue  # the mail job could not reach it: no second wait for a reconnect
            started = time.perf_counter()
            try:
                summary = job(self)
                if summary:
                    report.summaries[name] = summary
            except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the rest
                if name == "mail" and isinstance(exc, MailboxError):
                    self.mailbox_down = True
                log.warning("job %s failed: %s: %s", name, type(exc).__name__, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                report.errors.append(f"{name}: {exc}")
            finally:
                report.seconds[name] = time.perf_counter() - started
        if only is not None and "mail" not in only:
            return report
        i, p = report.intake, report.processing
        log.info("cycle: listed %d, new %d, duplicate %d, oversize %d, moved %d, not moved %d;"
                 " processed %d, cases opened %d, failed %d, parked %d", i.listed, i.archived,
                 i.duplicates, i.oversize, i.moved, i.move_failed, p.processed, p.cases_opened,
                 p.failed, len(p.parked))
        return report

    def run_once(self) -> CycleReport:
        self.started()
        try:
            with self._signals():
                return self.cycle()
        except Shutdown:
            return CycleReport(stopped=True)
        finally:
            self.close()

    # -- the loop ---------------------------------------------------------------------------
    def run_forever(self) -> int:
        backoff = BACKOFF_START
        self.schedule = Schedule.for_config(self.cfg)
        self.started()
        try:
            with self._signals():
                report = self.cycle()  # everything once at start
                self._schedule_outbox()
                while not self.stopping:
                    if self.still_held is not None and not self.still_held():
                        log.error("the one-instance lock was lost (the database session ended"
                                  " or the lock file was removed): stopping")
                        return 1
                    self._tell_how_mail_is_noticed()
                    if report.errors:
                        # A server or the database is out of reach: reconnect after a while.
                        log.warning("trying again in %.0f s", backoff)
                        self.source.close()
                        self.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        report = self.cycle()
                        continue
                    backoff = BACKOFF_START
                    with self._wait():
                        changed = self.source.wait_for_changes(self.wait_seconds())
                    names = self.due_jobs(mail=changed)
                    report = self.cycle(only=names) if names else CycleReport()
                    self._schedule_outbox()
        except Shutdown:
            pass
        finally:
            self.close()
        log.info("stopped cleanly")
        return 0

    def _tell_how_mail_is_noticed(self) -> None:
        """Once, after the first connection: IDLE, or polling every N s."""
        if self._told_how or self.mailbox_down:
            return
        self._told_how = True
        if isinstance(self.source, MaildirSource):
            log.info("new mail noticed by looking at the Maildir every %g s", WATCH_SECONDS)
            return
        try:
            idle = self.source.supports_idle()
        except Exception:  # noqa: BLE001 - only informative; the next cycle reports the mailbox
            return
        seconds = float(getattr(self.source, "poll_seconds", 0))
        log.info("new mail noticed by %s", "IDLE" if idle else f"polling every {seconds:g} s")

    def _schedule_outbox(self) -> None:
        """Wake for the outbox's next retry (a temporary SMTP failure's backoff)."""
        try:
            with self.sessions() as s:
                self.schedule.set_due("outbox", next_attempt(s))
        except Exception as exc:  # noqa: BLE001 - the database is checked by the next cycle
            log.debug("outbox's next attempt unknown: %s", exc)

    def due_jobs(self, *, mail: bool) -> set[str]:
        """What to run now: the mail path after new mail (or when intake's sweep is due),
        and each periodic job that fell due, with what it leads to."""
        names: set[str] = set(MAIL_PATH) if mail or self.intake.sweep_due() else set()
        self.polling_marks = not names  # only the flag poll: skip unchanged folders
        for job in self.schedule.due():
            names.update(LEADS_TO.get(job, (job,)))
        return names

    def wait_seconds(self) -> float:
        """How long to wait for mail: until intake's next sweep or the next periodic job
        (a staff mark within [mailbox_staff] flag_poll_seconds: IDLE on the inbox does not
        tell of a flag set in 已处理), whichever comes first."""
        wait = self.intake.wait_seconds()
        schedule = getattr(self, "schedule", None) or Schedule.for_config(self.cfg)
        until_job = schedule.seconds_until_next()
        if until_job is not None:
            wait = min(wait, max(MIN_WAIT, until_job))
        return wait

    def close(self) -> None:
        self.intake.close()
        if self._own_engine:
            self.engine.dispose()
        if self._heap_frozen:
            gc.unfreeze()
            self._heap_frozen = False
