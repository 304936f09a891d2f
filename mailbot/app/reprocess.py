"""`mailbot reprocess`: parked messages back to `archived`, then analysed and recorded again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, or_, select

from mailbot.app.analysis import analyse_and_judge
from mailbot.app.judging import case_recorder
from mailbot.app.notices import app_sessions
from mailbot.config import Config
from mailbot.db import make_engine
from mailbot.intake.models import MESSAGE_ARCHIVED, MESSAGE_PARKED, Message
from mailbot.intake.processor import Processor, ProcessReport

# progress(done, total, what): called from a watcher thread while the messages are processed
Progress = Callable[[int, int, str], None]
PROGRESS_SECONDS = 0.5  # how often the watcher reads the count (the printer throttles further)


def reprocess(cfg: Config, targets: list[str], *, all_parked: bool = False,
              engine: Engine | None = None, progress: Progress | None = None
              ) -> tuple[list[int], list[str], ProcessReport]:
    """Put parked messages back to `archived` (attempts reset) and process them.

    targets: message row ids or Message-IDs (with or without <>). Returns (row ids reset,
    targets not found or not parked, the processing report). `progress`, when given, hears
    how many of them are done while they are processed, and once at the end.
    """
    eng = engine or make_engine(cfg.database_url)
    sessions = app_sessions(cfg, eng)  # answers to the reprocessed mail are queued
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
        sink = case_recorder(cfg)
        with Processor(cfg, sessions, sink, analyse=analyse_and_judge) as proc:
            proc.submit(reset)
            with _watching(proc, len(reset), progress):
                proc.drain()
            report = proc.report
    if engine is None:
        eng.dispose()
    return sorted(reset), unknown, report


@contextmanager
def _watching(proc: Processor, total: int, progress: Progress | None) -> Iterator[None]:
    """Tell `progress` every PROGRESS_SECONDS how many of `total` messages are done (recorded
    or failed), and once more when the block ends."""
    if progress is None:
        yield
        return

    def done() -> int:
        report = proc.report
        return min(report.processed + report.failed, total)

    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(PROGRESS_SECONDS):
            progress(done(), total, "messages")

    watcher = threading.Thread(target=watch, name="mailbot-reprocess-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
    progress(done(), total, "messages")
