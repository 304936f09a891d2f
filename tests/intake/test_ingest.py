"""Ingestion against a real Dovecot (and a Maildir): archive, record, commit, then move."""

from __future__ import annotations

import mailbox

import pytest
from sqlalchemy import func, select

from mailbot.db import session_factory
from mailbot.intake import archive
from mailbot.intake.ingest import ingest, read_headers
from mailbot.intake.models import (
    MESSAGE_ARCHIVED,
    MESSAGE_DUPLICATE,
    MESSAGE_OVERSIZE,
    MailboxState,
    Message,
)
from mailbot.intake.moves import MoveFailures
from mailbot.mailbox.base import MailboxError
from mailbot.mailbox.url import source_from_config
from tests.support.intake import (
    BrokenMoveSource,
    WatchedMoveSource,
    make_config,
    make_mail,
)

PROCESSED = "已处理"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def imap_env(tmp_path, db_url, engine, dovecot_user):
    cfg = make_config(tmp_path, db_url, dovecot_user.url)
    source = source_from_config(cfg)
    source.open()
    yield cfg, session_factory(engine), source, dovecot_user
    source.close()


def _rows(sessions) -> list[Message]:
    with sessions() as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def test_read_headers_cheaply() -> None:
    raw = make_mail(message_id="<abc@example.cn>", subject="回复：厦门某某公司+数字证书申办")
    h = read_headers(raw)
    assert h.message_id == "<abc@example.cn>"
    assert h.subject == "回复：厦门某某公司+数字证书申办"
    assert h.from_addr == "applicant@example.cn"
    assert h.date is not None and h.date.utcoffset().total_seconds() == 0
    junk = read_headers(b"\x00\xff garbage without headers")
    assert junk.message_id is None


def test_messages_recorded_archived_then_moved(imap_env) -> None:
    cfg, sessions, source, user = imap_env
    raws = [make_mail(subject=f"厦门公司{i}+数字证书申办") for i in range(3)]
    uids = [user.append(r) for r in raws]
    report = ingest(cfg, sessions, source)
    assert (report.listed, report.archived, report.moved) == (3, 3, 3)
    rows = _rows(sessions)
    assert [r.uid for r in rows] == uids
    for row, raw in zip(rows, raws, strict=True):
        assert row.status == MESSAGE_ARCHIVED and row.moved_at is not None
        assert row.sha256 == archive.sha256_hex(raw) and row.size == len(raw)
        assert archive.load(cfg.archive_dir, row.sha256) == raw
        assert row.uidvalidity == source.uidvalidity() and row.source == source.identity
    assert user.uids("INBOX") == []
    assert len(user.uids(PROCESSED)) == 3
    assert all("\\Seen" not in f for f in user.flags(PROCESSED).values())  # BODY.PEEK[]
    with sessions() as s:
        assert s.get(MailboxState, source.identity).last_uid == max(uids)
    # Nothing new: a second poll records nothing.
    again = ingest(cfg, sessions, source)
    assert again.archived == 0 and len(_rows(sessions)) == 3


def test_move_happens_only_after_the_commit(imap_env, engine) -> None:
    cfg, sessions, source, user = imap_env
    for i in range(4):
        user.append(make_mail(subject=f"公司{i}+数字证书申办"))
    seen: list[int] = []

    def before_move(refs) -> None:
        # A separate connection sees only committed data.
        with session_factory(engine)() as s:
            committed = {m.uid for m in s.scalars(select(Message))}
        assert {r.uid for r in refs} <= committed
        seen.extend(r.uid for r in refs)

    cfg.intake.fetch_batch = 2
    ingest(cfg, sessions, WatchedMoveSource(source, before_move))
    assert len(seen) == 4 and user.uids("INBOX") == []


def test_recorded_but_not_moved_is_moved_again_not_recorded_again(imap_env) -> None:
    """The server refuses the move: everything is recorded all the same, the failure is
    reported, and the next run (listing the same UIDs again) moves without recording twice."""
    cfg, sessions, source, user = imap_env
    cfg.intake.fetch_batch = 1  # a later batch's success must not skip an earlier failure
    for i in range(3):
        user.append(make_mail(subject=f"公司{i}+数字证书申办"))
    failures = MoveFailures()
    report = ingest(cfg, sessions, BrokenMoveSource(source), move_failures=failures)
    assert (report.archived, report.moved, report.move_failed) == (3, 0, 3)
    assert "Quota exceeded" in (report.move_error or "") and failures.error == report.move_error
    rows = _rows(sessions)
    assert len(rows) == 3 and all(r.moved_at is None for r in rows)
    assert len(user.uids("INBOX")) == 3
    with sessions() as s:
        assert s.get(MailboxState, source.identity).last_uid == 0
    report = ingest(cfg, sessions, source, move_failures=failures)
    assert (report.archived, report.duplicates, report.moved, report.move_failed) == (0, 0, 3, 0)
    assert failures.error is None  # the failure is over
    rows = _rows(sessions)
    assert len(rows) == 3 and all(r.moved_at is not None for r in rows)
    assert user.uids("INBOX") == [] and len(user.uids(PROCESSED)) == 3


class _FetchFailsAfter(WatchedMoveSource):
    """A real source whose FETCH fails after `good` batches (the connection drops)."""

    def __init__(self, inner, good: int) -> None:
        super().__init__(inner, lambda refs: None)
        self.good = good

    def fetch(self, refs):
        if self.good == 0:
            raise MailboxError("connection reset by peer")
        self.good -= 1
        return self._inner.fetch(refs)


def test_a_fetch_failing_midway_still_records_and_moves_what_came_before(imap_env) -> None:
    """Batches are archived in a thread while the next is fetched: when that next FETCH
    fails, the batch in hand is still recorded and moved before the error is raised, and
    the rest waits in the inbox for the next run."""
    cfg, sessions, source, user = imap_env
    cfg.intake.fetch_batch = 1
    for i in range(3):
        user.append(make_mail(subject=f"厦门流水{i}有限公司+数字证书申办"))
    with pytest.raises(MailboxError, match="connection reset"):
        ingest(cfg, sessions, _FetchFailsAfter(source, good=2))
    rows = _rows(sessions)
    assert len(rows) == 2 and all(r.moved_at is not None for r in rows)
    assert len(user.uids("INBOX")) == 1 and len(user.uids(PROCESSED)) == 2
    report = ingest(cfg, sessions, source)
    assert (report.archived, report.moved) == (1, 1)
    assert user.uids("INBOX") == [] and len(_rows(sessions)) == 3


def test_dedupe_on_message_id_and_bytes(imap_env) -> None:
    cfg, sessions, source, user = imap_env
    first = make_mail(message_id="<same@example.cn>")
    user.append(first)
    ingest(cfg, sessions, source)
    user.append(first)  # the very same bytes again
    user.append(make_mail(message_id="<same@example.cn>", body="resent, other bytes"))
    user.append(first.replace(b"<same@example.cn>", b"<other@example.cn>"))  # new Message-ID
    # A fresh session, as each `run --once` has: a long-lived selected session learns of mail
    # added by others only after the server's next EXISTS (IDLE in the daemon).
    source.close()
    source.open()
    report = ingest(cfg, sessions, source)
    assert (report.archived, report.duplicates) == (1, 2)
    rows = _rows(sessions)
    assert [r.status for r in rows] == [MESSAGE_ARCHIVED, MESSAGE_DUPLICATE, MESSAGE_DUPLICATE,
                                        MESSAGE_ARCHIVED]
    assert rows[1].duplicate_of_id == rows[0].id and rows[2].duplicate_of_id == rows[0].id
    assert rows[3].message_id == "<other@example.cn>" and rows[3].duplicate_of_id is None
    assert user.uids("INBOX") == [] and len(user.uids(PROCESSED)) == 4


def test_same_bytes_without_message_id_dedupe_on_sha256(imap_env) -> None:
    cfg, sessions, source, user = imap_env
    raw = make_mail().replace(b"Message-ID:", b"X-Old-Message-ID:")
    user.append(raw)
    user.append(raw)
    report = ingest(cfg, sessions, source)
    assert (report.archived, report.duplicates) == (1, 1)
    rows = _rows(sessions)
    assert rows[0].message_id is None and rows[1].duplicate_of_id == rows[0].id


def test_uidvalidity_change_is_absorbed_by_dedupe(imap_env, dovecot) -> None:
    cfg, sessions, source, user = imap_env
    raw = make_mail(message_id="<kept@example.cn>")
    user.append(raw)
    ingest(cfg, sessions, source)
    old_uv = source.uidvalidity()
    # The same message reappears in the inbox, and the server renumbers the inbox.
    user.append(raw)
    user.append(make_mail(message_id="<fresh@example.cn>"))
    source.close()
    res = dovecot.doveadm("mailbox", "update", "-u", user.username,
                          "--uid-validity", str(old_uv + 1000), "INBOX")
    assert res.returncode == 0, res.stderr
    source.open()
    assert source.uidvalidity() == old_uv + 1000
    report = ingest(cfg, sessions, source)
    assert report.uidvalidity_reset
    assert (report.archived, report.duplicates) == (1, 1)
    with sessions() as s:
        originals = s.scalar(select(func.count()).select_from(Message).where(
            Message.message_id == "<kept@example.cn>", Message.status == MESSAGE_ARCHIVED))
        assert originals == 1
        assert s.get(MailboxState, source.identity).uidvalidity == old_uv + 1000
    assert user.uids("INBOX") == []


def test_oversize_left_on_server_and_recorded_once(imap_env) -> None:
    cfg, sessions, source, user = imap_env
    cfg.intake.max_message_bytes = 4000
    big_uid = user.append(make_mail(pad=10_000))
    user.append(make_mail())
    report = ingest(cfg, sessions, source)
    assert (report.archived, report.oversize) == (1, 1)
    assert user.uids("INBOX") == [big_uid]
    for _ in range(2):  # later polls and full sweeps do not record it again
        assert ingest(cfg, sessions, source, full_sweep=True).oversize == 0
    rows = [r for r in _rows(sessions) if r.status == MESSAGE_OVERSIZE]
    assert len(rows) == 1 and rows[0].uid == big_uid and rows[0].sha256 is None
    assert rows[0].size > 4000 and user.uids("INBOX") == [big_uid]


def test_keyword_fallback_where_move_is_missing(imap_env) -> None:
    cfg, sessions, source, user = imap_env
    uids = [user.append(make_mail()) for _ in range(2)]
    nomove = source_from_config(cfg, use_move=False)  # as on a server without MOVE/UIDPLUS
    nomove.open()
    report = ingest(cfg, sessions, nomove)
    assert report.archived == 2
    flags = user.flags("INBOX")
    assert sorted(flags) == uids
    assert all(cfg.intake.processed_keyword in f for f in flags.values())
    assert PROCESSED not in user.folders()
    again = ingest(cfg, sessions, nomove, full_sweep=True)
    assert again.archived == 0 and again.duplicates == 0 and len(_rows(sessions)) == 2
    nomove.close()


def test_maildir_source(tmp_path, db_url, engine) -> None:
    md_path = tmp_path / "var" / "mail"
    md_path.parent.mkdir(parents=True)
    md = mailbox.Maildir(str(md_path), create=True)
    raws = [make_mail(subject=f"公司{i}+数字证书申办") for i in range(3)]
    keys = [md.add(r) for r in raws]
    md.add(raws[0])  # a second copy of the same bytes
    cfg = make_config(tmp_path, db_url, "maildir:mail")
    sessions = session_factory(engine)
    source = source_from_config(cfg)
    source.open()
    report = ingest(cfg, sessions, source)
    assert (report.archived, report.duplicates, report.moved) == (3, 1, 4)
    rows = _rows(sessions)
    assert {r.source_key for r in rows[:3]} | {rows[3].source_key} >= set(keys)
    assert all(r.uid is None and r.moved_at is not None for r in rows)
    assert list(md.keys()) == []
    assert len(md.get_folder(PROCESSED).keys()) == 4
    assert ingest(cfg, sessions, source).listed == 0


def test_big_imap_message_is_streamed_into_the_archive(imap_env, monkeypatch) -> None:
    from mailbot.intake import ingest as ingest_module

    cfg, sessions, source, user = imap_env
    monkeypatch.setattr(ingest_module, "STREAM_OVER", 20_000)
    monkeypatch.setattr(ingest_module, "STREAM_PIECE", 7_000)  # many pieces, a short last one
    big = make_mail(message_id="<big@example.cn>", body="\n".join(["x" * 70] * 720) + "\nend")
    small = make_mail()
    user.append(small)
    user.append(big)
    user.append(big)  # the same bytes again: streamed, then recognised as a duplicate
    report = ingest(cfg, sessions, source)
    assert (report.archived, report.duplicates, report.moved) == (2, 1, 3)
    rows = _rows(sessions)
    assert rows[1].message_id == "<big@example.cn>" and rows[1].size == len(big)
    assert archive.load(cfg.archive_dir, rows[1].sha256) == big
    assert rows[1].subject == "厦门测试科技有限公司+数字证书申办"
    assert not [p for p in cfg.archive_dir.rglob(".tmp-*")]


def test_the_first_batch_is_small_then_full_batches_within_the_byte_cap() -> None:
    """The parse workers wait for the first commit: it holds FIRST_BATCH messages; later
    batches hold `count`, and none goes over the byte cap (a bigger message goes alone)."""
    from mailbot.intake.ingest import FIRST_BATCH, _batches
    from mailbot.mailbox.base import MessageRef

    refs = [MessageRef(key=str(i), uid=i, size=10) for i in range(1, 131)]
    sizes = [len(b) for b in _batches(refs, 50, 10**9)]
    assert sizes == [FIRST_BATCH, 50, 50, 130 - FIRST_BATCH - 100]
    assert [len(b) for b in _batches(refs[:5], 50, 10**9)] == [5]
    assert [len(b) for b in _batches(refs[:30], 3, 10**9)] == [3] * 10  # count below it
    big = [MessageRef(key="a", uid=1, size=60), MessageRef(key="b", uid=2, size=60),
           MessageRef(key="c", uid=3, size=10)]
    assert [[r.key for r in b] for b in _batches(big, 50, 100)] == [["a"], ["b", "c"]]
