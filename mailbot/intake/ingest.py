"""Mailbox -> archive + database, then (only then) out of the inbox.

Per batch: fetch raw bytes (BODY.PEEK[]), write each to the content-addressed archive, record a
`Message` row (duplicates of an earlier Message-ID or of the same bytes recorded as such),
COMMIT, and only after the commit move the batch to the processed folder (or set the processed
keyword where MOVE is missing). A crash anywhere repeats at most the move: a listed message
whose (source, UIDVALIDITY, UID) is already recorded is just moved again. A move the server
refuses leaves the batch in the inbox, recorded and processed all the same; the highest UID
read stays below it, so the next run lists it again and tries the move again (moves.py).
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailbot.clock import now
from mailbot.config import Config
from mailbot.faults import crash_point
from mailbot.intake import archive, mime
from mailbot.intake.models import (
    MESSAGE_ARCHIVED,
    MESSAGE_DUPLICATE,
    MESSAGE_OVERSIZE,
    MailboxState,
    Message,
)
from mailbot.intake.moves import MoveFailures, move_processed
from mailbot.mailbox.base import MailSource, MessageRef
from mailbot.refs import clean_message_id

log = logging.getLogger(__name__)

# Fetch batches are cut at this many bytes too, so one batch never holds much more than this.
BATCH_BYTES = 16 * 1024 * 1024
# The first batch of a run is this small: analysis starts after its commit.
FIRST_BATCH = 10
# Header blocks longer than this are cut before parsing (the real parse happens in analysis).
MAX_HEADER_BYTES = 256 * 1024
# IMAP messages over this size are fetched in pieces of STREAM_PIECE bytes (bounded memory).
STREAM_OVER = 4 * 1024 * 1024
STREAM_PIECE = 2 * 1024 * 1024
_BLANK_LINE = re.compile(rb"\n\r?\n")  # stops at the first one, unlike two find() calls


@dataclass
class IngestReport:
    listed: int = 0
    archived: int = 0  # new messages recorded for processing
    duplicates: int = 0
    oversize: int = 0
    moved: int = 0  # includes re-moves of messages recorded before a crash
    move_failed: int = 0  # recorded (and processed) but left in the inbox: the mailbox refused
    move_error: str | None = None
    stopped: bool = False  # a stop request ended the run between two batches
    uidvalidity_reset: bool = False
    new_row_ids: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    batch: list[MessageRef]
    fetch: list[MessageRef] = field(default_factory=list)  # to fetch and record
    small: list[MessageRef] = field(default_factory=list)  # of those, fetched whole
    to_move: list[MessageRef] = field(default_factory=list)
    move_ids: list[int] = field(default_factory=list)
    moved: bool = False  # to_move went to the processed folder (its record waits, see _finish)


# What a batch's archiving gives: the (ref, row to record) pairs.
_Archived = list[tuple[MessageRef, Message]]


@dataclass
class HeaderFacts:
    message_id: str | None
    subject: str | None
    from_addr: str | None
    date: datetime | None


def read_headers(raw: bytes) -> HeaderFacts:
    """Message-ID, Subject, From and Date from the header block only (cheap; never raises)."""
    try:
        fields, _defects = mime.parse_headers(raw[:_header_end(raw)])
    except Exception:  # noqa: BLE001 - malformed headers are analysis's business
        return HeaderFacts(None, None, None, None)

    def text(name: str) -> str | None:
        value = mime.first_header(fields, name)
        return mime.decode_header(value) if value is not None else None

    mid = clean_message_id(text("message-id"))
    subject = text("subject")
    from_addr = None
    try:
        from_addr = email.utils.parseaddr(text("from") or "")[1] or None
    except Exception:  # noqa: BLE001
        pass
    date = None
    try:
        raw_date = text("date")
        if raw_date:
            date = email.utils.parsedate_to_datetime(raw_date)
            date = date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)
    except Exception:  # noqa: BLE001
        date = None
    return HeaderFacts(mid, subject, (from_addr or "")[:320] or None, date)


def _header_end(raw: bytes) -> int:
    """Where the header block ends: after the first empty line (LF or CRLF endings)."""
    m = _BLANK_LINE.search(raw, 0, MAX_HEADER_BYTES)
    return m.end() if m else min(len(raw), MAX_HEADER_BYTES)


def _batches(refs: Sequence[MessageRef], count: int, max_bytes: int) -> Iterable[list[MessageRef]]:
    """Batches of `count` messages (at most `max_bytes`), the first smaller: the parse
    workers wait for the first commit, so it comes early."""
    batch: list[MessageRef] = []
    size = 0
    limit = min(count, FIRST_BATCH)
    for ref in refs:
        if batch and (len(batch) >= limit or size + ref.size > max_bytes):
            limit = count
            yield batch
            batch, size = [], 0
        batch.append(ref)
        size += ref.size
    if batch:
        yield batch


class Ingester:
    """Reads one source into the archive and the `messages` table."""

    def __init__(self, cfg: Config, sessions: sessionmaker[Session], source: MailSource,
                 *, on_committed: Callable[[list[int]], None] | None = None,
                 move_failures: MoveFailures | None = None,
                 start_workers: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        # Called before the archiving thread starts: the parse pool forks its workers while
        # this is the process's only thread (a fork beside other threads needs a forkserver).
        self.start_workers = start_workers
        self.sessions = sessions
        self.source = source
        self.archive_dir = Path(cfg.archive_dir)
        self.on_committed = on_committed  # e.g. hand the new rows to the parse pool at once
        self.move_failures = move_failures or MoveFailures()
        self.by_uid = source.keyed_by_uid  # IMAP: UIDs and UIDVALIDITY; Maildir: file keys
        # The lowest UID whose move failed in this run: last_uid stays below it, so the
        # message is listed (and its move tried) again next cycle.
        self._stuck_uid: int | None = None
        self._recorded_error: str | None = None  # the move failure the state row holds
        self._unrecorded: _Plan | None = None  # the last batch, its move recorded with the next

    # -- the whole run ----------------------------------------------------------------------
    def run(self, *, full_sweep: bool = False,
            should_stop: Callable[[], bool] | None = None) -> IngestReport:
        """Everything waiting; `should_stop` is asked before each batch (each batch is
        committed before it is moved, so stopping between two loses and repeats nothing)."""
        report = IngestReport()
        ident = self.source.identity
        uv = int(self.source.uidvalidity() or 0)
        with self.sessions() as s:
            state = s.get(MailboxState, ident)
            if state is None:
                state = MailboxState(source=ident, uidvalidity=uv, last_uid=0)
                s.add(state)
            elif state.uidvalidity != uv:
                # New UIDVALIDITY: every UID may mean another message now; rescan all and let
                # the Message-ID / sha256 dedupe recognise what was recorded before.
                log.warning("UIDVALIDITY of %s changed %s -> %s: full rescan",
                            ident, state.uidvalidity, uv)
                state.uidvalidity, state.last_uid = uv, 0
                report.uidvalidity_reset = True
            since = 0 if full_sweep else int(state.last_uid or 0)
            self._recorded_error = state.move_error
            if full_sweep:
                state.last_sweep_at = now()
            state.updated_at = now()
            s.commit()
        refs = self.source.list_messages(since_uid=since)
        if self.by_uid:
            refs = sorted((r for r in refs if r.uid > since or full_sweep), key=lambda r: r.uid)
        report.listed = len(refs)
        kw = self.cfg.intake.processed_keyword
        refs = [r for r in refs if kw not in r.flags]  # handled before (keyword fallback)
        self._reconcile_moved(refs, uv, since)
        limit = self.cfg.intake.max_message_bytes
        # A batch is hashed and written to the archive in a thread (hashlib and file writes
        # let go of the GIL) while the next one is fetched; each is then committed and moved
        # in order, here. Nothing of a batch touches the mailbox before its commit.
        pending: tuple[_Plan, Future[_Archived]] | None = None
        if refs and self.start_workers is not None:
            self.start_workers()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailbot-archive") as pool:
            for batch in _batches(refs, max(1, self.cfg.intake.fetch_batch), BATCH_BYTES):
                if should_stop is not None and should_stop():
                    report.stopped = True  # the rest waits for the next run
                    break
                plan = self._plan(batch, uv, limit, report)
                try:
                    archiving = pool.submit(self._archive_all, self._fetch(plan.small), uv)
                except Exception:  # the mailbox failed: what was fetched before is recorded
                    try:
                        self._flush(pending, uv, report)
                    except Exception:  # noqa: BLE001 - the mailbox's error is the one to raise
                        log.exception("recording the batch fetched before the failure failed")
                    raise
                if pending is not None:
                    self._finish(pending[0], uv, pending[1].result(), report)
                pending = (plan, archiving)
            self._flush(pending, uv, report)  # the step in hand, even when asked to stop
        return report

    def _reconcile_moved(self, waiting: list[MessageRef], uv: int, since: int) -> None:
        """Stamp moved_at on recorded rows whose message has left the inbox unrecorded.

        A crash between the mailbox move and the commit of moved_at leaves such rows; the
        listing covers every UID above `since` (all of a Maildir inbox), so a recorded row in
        that range that is not waiting in the inbox any more was moved (or marked) already.
        """
        listed = {r.key for r in waiting}
        with self.sessions() as s:
            q = select(Message).where(Message.source == self.source.identity,
                                      Message.moved_at.is_(None),
                                      Message.status != MESSAGE_OVERSIZE)
            if self.by_uid:
                q = q.where(Message.uidvalidity == uv, Message.uid > since)
            stamp = now()
            gone = [row for row in s.scalars(q)
                    if (row.source_key or str(row.uid or "")) not in listed]
            for row in gone:
                row.moved_at = stamp
                log.info("message row %s left the inbox before its move was recorded", row.id)
            if gone:
                s.commit()

    # -- one batch --------------------------------------------------------------------------
    def _plan(self, batch: list[MessageRef], uv: int, limit: int,
              report: IngestReport) -> _Plan:
        """What to do with each listed message: move again, record as oversize, or fetch."""
        ident = self.source.identity
        plan = _Plan(batch=batch)
        with self.sessions() as s:
            known = self._known(s, uv, batch)
            for ref in batch:
                row = known.get(ref.key)
                if row is not None:
                    if row.status != MESSAGE_OVERSIZE:
                        plan.to_move.append(ref)  # recorded, then a crash before the move
                        plan.move_ids.append(row.id)
                    continue
                if ref.size > limit:
                    s.add(self._oversize_row(ref, uv))
                    report.oversize += 1
                    log.warning("message %s in %s is %d bytes, over the %d-byte limit: left on"
                                " the server for staff / 邮件超过大小限制, 留在服务器上",
                                ref.key, ident, ref.size, limit)
                    continue
                plan.fetch.append(ref)
            if s.new:
                s.commit()  # oversize rows: recorded once, never moved
        plan.small = [r for r in plan.fetch if not self._streams(r)]
        return plan

    def _fetch(self, refs: list[MessageRef]) -> list[tuple[MessageRef, bytes]]:
        return list(self.source.fetch(refs)) if refs else []

    def _flush(self, pending: tuple[_Plan, Future[_Archived]] | None, uv: int,
               report: IngestReport) -> None:
        """Finish the batch in hand, then record the last move."""
        if pending is not None:
            self._finish(pending[0], uv, pending[1].result(), report)
        self._commit_moves(uv, report)

    def _archive_all(self, fetched: list[tuple[MessageRef, bytes]], uv: int) -> _Archived:
        """Write fetched messages to the archive and sync them; the rows to record."""
        written: list[Path] = []
        fresh = [self._archive(ref, uv, raw, written) for ref, raw in fetched]
        fetched.clear()  # the archive holds the bytes now
        archive.sync_paths(written)  # durable before the rows that name them are written
        return fresh

    def _finish(self, plan: _Plan, uv: int, fresh: _Archived, report: IngestReport) -> None:
        """Archive the big ones, record (commit), then move; the order that makes a crash
        harmless."""
        to_move, move_ids = plan.to_move, plan.move_ids
        new_ids: list[int] = []
        written: list[Path] = []
        for ref in plan.fetch:
            if self._streams(ref):
                got = self._archive_streamed(ref, uv, written)
                if got is not None:
                    fresh.append(got)
        # Archive files durable before the rows that name them; synced before the write
        # lock is taken, which the recorder thread waits for.
        archive.sync_paths(written)
        with self.sessions() as s:
            order = {r.key: i for i, r in enumerate(plan.fetch)}
            fresh.sort(key=lambda pair: order[pair[0].key])
            for ref, row in self._dedupe(s, fresh):
                if row.status == MESSAGE_DUPLICATE:
                    report.duplicates += 1
                else:
                    report.archived += 1
                    new_ids.append(row.id)
                to_move.append(ref)
                move_ids.append(row.id)
            before = self._record_moves(s, uv)  # the batch before's move, in this transaction
            s.commit()
        crash_point("after_archive_commit")
        self._moves_committed(before, report)
        if new_ids and self.on_committed is not None:
            self.on_committed(new_ids)
        report.new_row_ids.extend(new_ids)
        moved = bool(to_move) and move_processed(self.cfg, self.source, to_move,
                                                 self.move_failures)
        if to_move and not moved:
            report.move_failed += len(to_move)
            report.move_error = self.move_failures.error
            if self.by_uid:
                low = min(r.uid for r in to_move)
                self._stuck_uid = low if self._stuck_uid is None else min(self._stuck_uid, low)
        crash_point("before_moved_commit")
        # Recorded with the next batch's rows (one transaction, not two: the recorder thread
        # writes meanwhile), or at the end of the run. A kill before that leaves rows whose
        # message left the inbox unrecorded: `_reconcile_moved` stamps them on the next run.
        plan.moved = moved
        self._unrecorded = plan

    def _record_moves(self, s: Session, uv: int) -> _Plan | None:
        """Write the last batch's move (moved_at, the state row) into `s`'s transaction."""
        plan, self._unrecorded = self._unrecorded, None
        if plan is None:
            return None
        moved = plan.moved
        to_move, move_ids = plan.to_move, plan.move_ids
        if move_ids and moved:
            s.execute(update(Message).where(Message.id.in_(move_ids))
                      .values(moved_at=now()).execution_options(synchronize_session=False))
        error = self._recorded_error if not to_move else (None if moved else
                                                              self.move_failures.error)
        if self.by_uid or error != self._recorded_error:
            state = s.get(MailboxState, self.source.identity)
            if state is not None and error != self._recorded_error:
                state.move_error = error  # for `mailbot status`: why mail stays put
                if error is None or state.move_failing_since is None:
                    state.move_failing_since = None if error is None else now()
                self._recorded_error = error
            if self.by_uid and state is not None and state.uidvalidity == uv:
                top = max(r.uid for r in plan.batch)
                if self._stuck_uid is not None:
                    top = min(top, self._stuck_uid - 1)
                if top > state.last_uid:
                    state.last_uid = top
        return plan

    def _moves_committed(self, plan: _Plan | None, report: IngestReport) -> None:
        if plan is None:
            return
        if plan.moved:
            report.moved += len(plan.to_move)
        crash_point("after_move")

    def _commit_moves(self, uv: int, report: IngestReport) -> None:
        """The last batch's move, in a transaction of its own (the run's end)."""
        if self._unrecorded is None:
            return
        with self.sessions() as s:
            plan = self._record_moves(s, uv)
            s.commit()
        self._moves_committed(plan, report)

    def _known(self, s: Session, uv: int, refs: list[MessageRef]) -> dict[str, Message]:
        """Rows already recorded for these refs, by ref.key."""
        ident = self.source.identity
        q = select(Message).where(Message.source == ident)
        if not self.by_uid:
            q = q.where(Message.source_key.in_([r.key for r in refs]))
            return {m.source_key or "": m for m in s.scalars(q)}
        q = q.where(Message.uidvalidity == uv, Message.uid.in_([r.uid for r in refs]))
        return {str(m.uid): m for m in s.scalars(q)}

    def _oversize_row(self, ref: MessageRef, uv: int) -> Message:
        return Message(source=self.source.identity, uidvalidity=uv,
                       uid=ref.uid if self.by_uid else None, source_key=ref.key,
                       size=ref.size, status=MESSAGE_OVERSIZE,
                       last_error=f"over max_message_bytes ({self.cfg.intake.max_message_bytes})")

    def _archive(self, ref: MessageRef, uv: int, raw: bytes,
                 written: list[Path]) -> tuple[MessageRef, Message]:
        """Write the bytes to the archive; the row to record (not yet added to the session)."""
        sha = archive.sha256_hex(raw)
        path, new = archive.write_once(self.archive_dir, raw, sha, durable=False)
        if new:
            written.append(path)
        return ref, self._row(ref, uv, sha, len(raw), raw)

    def _row(self, ref: MessageRef, uv: int, sha: str, size: int, head: bytes) -> Message:
        hdr = read_headers(head)
        return Message(source=self.source.identity, uidvalidity=uv,
                       uid=ref.uid if self.by_uid else None, source_key=ref.key,
                       message_id=hdr.message_id, sha256=sha, size=size,
                       archive_path=archive.relative_path(sha), subject=hdr.subject,
                       from_addr=hdr.from_addr, date_header=hdr.date, status=MESSAGE_ARCHIVED)

    def _streams(self, ref: MessageRef) -> bool:
        """Big IMAP messages are fetched in pieces: imaplib holds ~7 copies of a literal."""
        return ref.size > STREAM_OVER and self.source.streams_large

    def _archive_streamed(self, ref: MessageRef, uv: int,
                          written: list[Path]) -> tuple[MessageRef, Message] | None:
        """Pieces of STREAM_PIECE bytes straight into the archive file (bounded memory)."""
        writer = archive.StreamWriter(self.archive_dir, MAX_HEADER_BYTES)
        try:
            while True:
                piece = self.source.fetch_range(ref, writer.size, STREAM_PIECE)
                if piece is None and writer.size == 0:
                    writer.abort()
                    return None  # vanished meanwhile
                if piece:
                    writer.write(piece)
                if not piece or len(piece) < STREAM_PIECE:
                    break
            sha, path, new = writer.finish()
        except BaseException:
            writer.abort()
            raise
        if new:
            written.append(path)
        return ref, self._row(ref, uv, sha, writer.size, writer.head)

    def _dedupe(self, s: Session, fresh: _Archived) -> _Archived:
        """Mark rows whose Message-ID or bytes were recorded before (or earlier in the batch)
        as duplicates of the first such row; add all rows with one flush."""
        if not fresh:
            return fresh
        mids = {r.message_id for _, r in fresh if r.message_id}
        shas = {r.sha256 for _, r in fresh if r.sha256}
        cond = Message.sha256.in_(shas)
        if mids:
            cond = or_(cond, Message.message_id.in_(mids))
        by_mid: dict[str, int] = {}
        by_sha: dict[str, int] = {}
        for row_id, dup_of, mid, sha in s.execute(
                select(Message.id, Message.duplicate_of_id, Message.message_id, Message.sha256)
                .where(cond).order_by(Message.id.desc())):
            original = dup_of or row_id  # descending: the earliest row wins
            if mid:
                by_mid[mid] = original
            if sha:
                by_sha[sha] = original
        first_mid: dict[str, Message] = {}  # earlier rows of this batch, not yet flushed
        first_sha: dict[str, Message] = {}
        later: list[tuple[Message, Message]] = []
        for ref, row in fresh:
            original = (by_mid.get(row.message_id) if row.message_id else None) \
                or by_sha.get(row.sha256 or "")
            twin = (first_mid.get(row.message_id) if row.message_id else None) \
                or first_sha.get(row.sha256 or "")
            if original is not None:
                row.status, row.duplicate_of_id = MESSAGE_DUPLICATE, original
            elif twin is not None:
                row.status = MESSAGE_DUPLICATE
                later.append((row, twin))
            else:
                if row.message_id:
                    first_mid[row.message_id] = row
                first_sha[row.sha256 or ""] = row
            if row.status == MESSAGE_DUPLICATE:
                log.info("message %s of %s is a duplicate", ref.key, self.source.identity)
        s.add_all([row for _, row in fresh if not any(row is r for r, _ in later)])
        s.flush()  # one INSERT round for the batch; originals get their ids
        for row, twin in later:
            row.duplicate_of_id = twin.id
            s.add(row)
        s.flush()
        return fresh


def ingest(cfg: Config, sessions: sessionmaker[Session], source: MailSource, *,
           full_sweep: bool = False,
           on_committed: Callable[[list[int]], None] | None = None,
           move_failures: MoveFailures | None = None,
           should_stop: Callable[[], bool] | None = None,
           start_workers: Callable[[], None] | None = None) -> IngestReport:
    """Read everything waiting in `source` (the source must be open)."""
    ingester = Ingester(cfg, sessions, source, on_committed=on_committed,
                        move_failures=move_failures, start_workers=start_workers)
    return ingester.run(full_sweep=full_sweep, should_stop=should_stop)
