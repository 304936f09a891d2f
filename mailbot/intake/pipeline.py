"""One mailbox into the sink, one call per cycle: fetch, archive, record, analyse, park.

Rows go to the analysis pool as soon as they are committed; the processor's recorder thread
hands the results to the sink while intake goes on with the next batch. Moving mail out of
the inbox never holds processing up (moves.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from mailbot.clock import now
from mailbot.config import Config
from mailbot.intake.ingest import IngestReport, ingest
from mailbot.intake.models import MailboxState
from mailbot.intake.moves import MoveFailures, park_in_mailbox
from mailbot.intake.pool import Analyse, analyse_archived
from mailbot.intake.processor import Processor, ProcessReport
from mailbot.intake.sink import FactsSink
from mailbot.mailbox.base import MailSource

log = logging.getLogger(__name__)


@dataclass
class IntakeReport:
    intake: IngestReport = field(default_factory=IngestReport)
    processing: ProcessReport = field(default_factory=ProcessReport)
    move_error: str | None = None  # the mailbox's current move failure, if any


class IntakePipeline:
    """The mailbox, the analysis pool and the sink, driven by `cycle()`."""

    def __init__(self, cfg: Config, sessions: sessionmaker[Session], source: MailSource,
                 sink: FactsSink, *, analyse: Analyse = analyse_archived) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.source = source
        self.processor = Processor(cfg, sessions, sink, analyse=analyse)
        self.move_failures = MoveFailures()
        self.park_failures = MoveFailures()  # parked mail to the failed folder, logged apart

    def _last_sweep(self) -> object:
        with self.sessions() as s:
            state = s.get(MailboxState, self.source.identity)
            return state.last_sweep_at if state is not None else None

    def sweep_due(self) -> bool:
        """A full UID sweep (not just the new UIDs) is due: first run, or sweep_seconds on."""
        last = self._last_sweep()
        return last is None or now() - last >= timedelta(seconds=self.cfg.intake.sweep_seconds)

    def wait_seconds(self) -> float:
        """Until the next sweep is due, and never longer than the IDLE renewal period."""
        last = self._last_sweep()
        until_sweep = float(self.cfg.intake.sweep_seconds)
        if last is not None:
            until_sweep -= (now() - last).total_seconds()  # type: ignore[operator]
        return max(1.0, min(until_sweep, float(self.cfg.intake.idle_renew_seconds)))

    def cycle(self, *, full_sweep: bool | None = None,
              should_stop: Callable[[], bool] | None = None) -> IntakeReport:
        """Everything waiting: archived and recorded, analysed and handed to the sink, the
        ones that failed too often parked (and moved aside where the mailbox lets us).

        `should_stop` is asked between batches: a stop request takes no new mail, and what
        was already submitted is still recorded (the step in hand)."""
        report = IntakeReport()
        proc = self.processor
        proc.begin_cycle()
        proc.submit_pending()  # left over from a crash, a reprocess or a failed cycle
        try:
            self.source.open()
            sweep = self.sweep_due() if full_sweep is None else full_sweep
            report.intake = ingest(self.cfg, self.sessions, self.source, full_sweep=sweep,
                                   on_committed=proc.submit, start_workers=proc.start,
                                   move_failures=self.move_failures,
                                   should_stop=should_stop)
        except Exception:
            # The mailbox failed meanwhile: what was archived is processed all the same.
            try:
                proc.drain()
            except Exception:  # noqa: BLE001 - the mailbox's error is the one to report
                log.exception("recording after a failed intake also failed")
            raise
        proc.drain()
        report.processing = proc.report
        report.move_error = self.move_failures.error
        parked = proc.take_parked()  # this cycle's, and any an interrupted cycle left
        if parked:
            try:
                _, again = park_in_mailbox(self.cfg, self.sessions, self.source, parked,
                                           self.park_failures)
            except Exception:
                proc.return_parked(parked)  # e.g. the database is gone: next cycle
                raise
            proc.return_parked(again)
        return report

    def close(self) -> None:
        self.processor.close()
        self.source.close()
