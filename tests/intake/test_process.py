"""Processing: archived rows become facts and cases; a failing message is retried, then parked."""

from __future__ import annotations

import mailbox
import os
import threading
import time

import pytest
from sqlalchemy import select

from mailbot.app.reprocess import reprocess
from mailbot.cases.models import Case
from mailbot.cases.recorder import CaseRecorder
from mailbot.db import session_factory
from mailbot.intake import archive, pool, processor
from mailbot.intake.ingest import ingest
from mailbot.intake.models import (
    MESSAGE_ARCHIVED,
    MESSAGE_PARKED,
    MESSAGE_PROCESSED,
    Message,
    ProcessingFailure,
)
from mailbot.intake.moves import park_in_mailbox
from mailbot.intake.pool import analyse_archived
from mailbot.intake.processor import Processor, ProcessReport
from mailbot.mailbox.url import source_from_config
from tests.support.intake import make_config, make_mail

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def maildir_env(tmp_path, db_url, engine):
    (tmp_path / "var").mkdir()
    md = mailbox.Maildir(str(tmp_path / "var" / "mail"), create=True)
    cfg = make_config(tmp_path, db_url, "maildir:mail", max_attempts=3)
    source = source_from_config(cfg)
    source.open()
    return cfg, session_factory(engine), source, md


def _rows(sessions) -> list[Message]:
    with sessions() as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def test_rows_become_cases_in_arrival_order(maildir_env) -> None:
    cfg, sessions, source, md = maildir_env
    for i in range(4):
        md.add(make_mail(subject=f"厦门公司{i}+数字证书申办"))
    md.add(make_mail(subject="周末聚餐"))
    ingest(cfg, sessions, source)
    with Processor(cfg, sessions, CaseRecorder()) as proc:
        report = proc.run_pending()
    assert (report.processed, report.cases_opened, report.failed) == (5, 4, 0)
    rows = _rows(sessions)
    assert all(r.status == MESSAGE_PROCESSED and r.facts is not None for r in rows)
    assert [r.kind for r in rows] == ["new"] * 4 + ["unrelated"]
    with sessions() as s:
        cases = list(s.scalars(select(Case).order_by(Case.ref)))
    assert [c.company for c in cases] == [f"厦门公司{i}" for i in range(4)]
    with Processor(cfg, sessions, CaseRecorder()) as proc:  # nothing left: a second pass does nothing
        assert proc.run_pending().processed == 0


def test_failing_message_is_parked_and_never_blocks_the_others(maildir_env) -> None:
    cfg, sessions, source, md = maildir_env
    for i in range(3):
        md.add(make_mail(subject=f"厦门公司{i}+数字证书申办"))
    ingest(cfg, sessions, source)
    bad = _rows(sessions)[0]
    # The archived copy is damaged (disk trouble): reading it fails the hash check.
    path = archive.archive_path(cfg.archive_dir, bad.sha256)
    good_bytes = path.read_bytes()
    path.write_bytes(good_bytes[:-10])
    for attempt in range(1, 4):
        with Processor(cfg, sessions, CaseRecorder()) as proc:
            report = proc.run_pending()
        assert report.failed == 1
        assert report.processed == (2 if attempt == 1 else 0)
        with sessions() as s:
            row = s.get(Message, bad.id)
            assert row.attempts == attempt and "corrupt" in row.last_error
            assert row.status == (MESSAGE_PARKED if attempt == 3 else MESSAGE_ARCHIVED)
    assert report.parked == [bad.id]
    with sessions() as s:
        failures = s.scalars(select(ProcessingFailure).where(
            ProcessingFailure.message_row_id == bad.id)).all()
        assert len(failures) == 3
    # Parked: nothing more happens to it, and staff find it in the failed folder.
    with Processor(cfg, sessions, CaseRecorder()) as proc:
        assert proc.run_pending().failed == 0
    assert park_in_mailbox(cfg, sessions, source, [bad.id]) == (1, [])
    assert len(md.get_folder(cfg.intake.failed_folder).keys()) == 1
    assert len(md.get_folder(cfg.intake.processed_folder).keys()) == 2
    # Repaired, then `reprocess` turns it into its case.
    path.write_bytes(good_bytes)
    reset, unknown, rep = reprocess(cfg, [str(bad.id)])
    assert reset == [bad.id] and unknown == [] and rep.processed == 1 and rep.cases_opened == 1
    with sessions() as s:
        row = s.get(Message, bad.id)
        assert row.status == MESSAGE_PROCESSED and row.attempts == 0 and row.case_id is not None


def test_missing_archive_file_parks_after_max_attempts(maildir_env) -> None:
    cfg, sessions, source, md = maildir_env
    cfg.intake.max_attempts = 1
    md.add(make_mail(message_id="<lost@example.cn>"))
    md.add(make_mail())
    ingest(cfg, sessions, source)
    lost = _rows(sessions)[0]
    archive.archive_path(cfg.archive_dir, lost.sha256).unlink()
    with Processor(cfg, sessions, CaseRecorder()) as proc:
        report = proc.run_pending()
    assert report.parked == [lost.id] and report.processed == 1
    reset, unknown, rep = reprocess(cfg, ["lost@example.cn", "<nobody@example.cn>"])
    assert reset == [lost.id] and unknown == ["<nobody@example.cn>"]
    assert rep.failed == 1 and rep.parked == [lost.id]  # still missing: parked again


def test_parked_imap_message_is_found_again_in_the_processed_folder(tmp_path, db_url, engine,
                                                                    dovecot_user) -> None:
    """IMAP gives a moved message a new UID; parking finds it by Message-ID and size."""
    from mailbot.app.daemon import Daemon

    cfg = make_config(tmp_path, db_url, dovecot_user.url, max_attempts=1)
    dovecot_user.append(make_mail(message_id="<park-me@example.cn>",
                                  subject="厦门搁置有限公司+数字证书申办"))
    dovecot_user.append(make_mail(message_id="<fine@example.cn>",
                                  subject="厦门正常有限公司+数字证书申办"))
    sessions = session_factory(engine)
    daemon = Daemon(cfg, engine=engine)
    daemon.source.open()
    ingest(cfg, sessions, daemon.source)  # archived and moved to 已处理, not processed yet
    assert dovecot_user.uids("INBOX") == [] and len(dovecot_user.uids("已处理")) == 2
    bad = next(r for r in _rows(sessions) if r.message_id == "<park-me@example.cn>")
    archive.archive_path(cfg.archive_dir, bad.sha256).write_bytes(b"damaged")
    report = daemon.cycle()
    daemon.close()
    assert report.processing.parked == [bad.id] and report.processing.processed == 1
    assert len(dovecot_user.uids("已处理")) == 1 and len(dovecot_user.uids("处理失败")) == 1
    c = dovecot_user.client()
    c.select_folder("处理失败", readonly=True)
    uid = c.search("ALL")[0]
    assert b"park-me@example.cn" in c.fetch([uid], ["BODY.PEEK[HEADER]"])[uid][b"BODY[HEADER]"]
    c.logout()


_ANALYSE = analyse_archived  # the real one, also in a worker that imports this module anew


def _analyse_or_die(archive_dir: str, sha256: str, rules_dir: str):  # type: ignore[no-untyped-def]
    """Stands in for the worker's analysis: a POISON message kills its worker outright, as an
    out-of-memory kill or a crash in C code would."""
    if b"POISON" in archive.load(archive_dir, sha256):
        os._exit(1)
    return _ANALYSE(archive_dir, sha256, rules_dir)


def test_worker_killed_by_a_message_is_survived_and_the_message_parked(
        maildir_env, monkeypatch) -> None:
    cfg, sessions, source, md = maildir_env
    cfg.intake.max_attempts = 2
    md.add(make_mail(subject="厦门毒药有限公司+数字证书申办", body="POISON"))
    for i in range(6):
        md.add(make_mail(subject=f"厦门公司{i}+数字证书申办"))
    ingest(cfg, sessions, source)
    with Processor(cfg, sessions, CaseRecorder(), workers=2, analyse=_analyse_or_die) as proc:
        for _ in range(8):  # passes of the daemon's cycles, one Processor as in run_forever
            proc.report = ProcessReport()
            proc.run_pending()
            if not any(r.status == MESSAGE_ARCHIVED for r in _rows(sessions)):
                break
    rows = _rows(sessions)
    poison = rows[0]
    assert poison.status == MESSAGE_PARKED and "parse worker died while analysing this message" in poison.last_error
    assert all(r.status == MESSAGE_PROCESSED for r in rows[1:])
    with sessions() as s:
        assert len(s.scalars(select(Case)).all()) == 6


def _analyse_or_hang(archive_dir: str, sha256: str, rules_dir: str):  # type: ignore[no-untyped-def]
    """Stands in for the worker's analysis: a SLOW message never finishes."""
    if b"SLOW" in archive.load(archive_dir, sha256):
        threading.Event().wait()
    return _ANALYSE(archive_dir, sha256, rules_dir)


def test_analysis_that_never_ends_is_stopped_and_parked(maildir_env, monkeypatch) -> None:
    cfg, sessions, source, md = maildir_env
    cfg.intake.max_attempts = 1
    cfg.intake.analysis_timeout_seconds = 1
    md.add(make_mail(subject="厦门挂起有限公司+数字证书申办", body="SLOW"))
    for i in range(3):
        md.add(make_mail(subject=f"厦门公司{i}+数字证书申办"))
    ingest(cfg, sessions, source)
    with Processor(cfg, sessions, CaseRecorder(), workers=2, analyse=_analyse_or_hang) as proc:
        report = proc.run_pending()
        assert proc.take_parked() == [report.parked[0]] and proc.take_parked() == []
    rows = _rows(sessions)
    assert rows[0].status == MESSAGE_PARKED and "did not finish within 1 s" in rows[0].last_error
    assert all(r.status == MESSAGE_PROCESSED for r in rows[1:]) and report.processed == 3


def _die_on_start() -> None:
    os._exit(3)


def test_workers_that_cannot_start_charge_nobody(maildir_env, monkeypatch) -> None:
    cfg, sessions, source, md = maildir_env
    monkeypatch.setattr(pool, "worker_init", _die_on_start)
    for i in range(3):
        md.add(make_mail(subject=f"厦门公司{i}+数字证书申办"))
    ingest(cfg, sessions, source)
    with Processor(cfg, sessions, CaseRecorder(), workers=2) as proc, \
            pytest.raises(RuntimeError, match="cannot start"):
        proc.run_pending()
    assert all(r.status == MESSAGE_ARCHIVED and r.attempts == 0 for r in _rows(sessions))


def test_clash_with_another_audit_writer_is_retried_not_charged(maildir_env, monkeypatch,
                                                                db_url) -> None:
    """PostgreSQL: a staff command chains onto the audit head our batch has just read."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite writers take turns: the head is read under the write lock")
    from mailbot.cases import audit

    cfg, sessions, source, md = maildir_env
    md.add(make_mail(subject="厦门冲突有限公司+数字证书申办"))
    ingest(cfg, sessions, source)
    real_head, clashes = audit._head, []

    def head_then_someone_else_appends(session):  # type: ignore[no-untyped-def]
        head = real_head(session)
        if len(clashes) < 2 and session.info.get("clasher") is None:  # twice in a row
            clashes.append(head)
            with sessions() as other:
                other.info["clasher"] = True
                audit.append_audit(other, actor="张三", action="note", reason="meanwhile")
                other.commit()
        return head

    monkeypatch.setattr(audit, "_head", head_then_someone_else_appends)
    with Processor(cfg, sessions, CaseRecorder()) as proc:
        report = proc.run_pending()
    assert len(clashes) == 2 and report.processed == 1 and report.failed == 0
    with sessions() as s:
        assert audit.verify_chain(s).ok
        assert _rows(sessions)[0].attempts == 0


def test_closing_with_an_analysis_in_flight_does_not_wait_for_it(maildir_env,
                                                                monkeypatch) -> None:
    """Stopping the daemon must not hang on a worker that never finishes; the row waits."""
    cfg, sessions, source, md = maildir_env
    md.add(make_mail(subject="厦门挂起有限公司+数字证书申办", body="SLOW"))
    ingest(cfg, sessions, source)
    proc = Processor(cfg, sessions, CaseRecorder(), workers=1, analyse=_analyse_or_hang)
    proc.submit_pending()
    proc.close()  # the analysis runs on (time limit 300 s): close kills the worker
    assert [(r.status, r.attempts) for r in _rows(sessions)] == [(MESSAGE_ARCHIVED, 0)]


def _analyse_die_or_hang(archive_dir: str, sha256: str, rules_dir: str):  # type: ignore[no-untyped-def]
    raw = archive.load(archive_dir, sha256)
    if b"POISON" in raw:
        os._exit(1)
    if b"SLOW" in raw:
        threading.Event().wait()
    return _ANALYSE(archive_dir, sha256, rules_dir)


def _wait_for(condition, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_closing_during_the_one_by_one_search_charges_nobody_else(maildir_env,
                                                                  monkeypatch) -> None:
    """A worker died; while the messages it held are re-analysed one by one (one of them
    hangs), the daemon is stopped: close returns at once and the hanging one is not charged."""
    cfg, sessions, source, md = maildir_env
    md.add(make_mail(subject="厦门毒药有限公司+数字证书申办", body="POISON"))
    md.add(make_mail(subject="厦门挂起有限公司+数字证书申办", body="SLOW"))
    ingest(cfg, sessions, source)
    proc = Processor(cfg, sessions, CaseRecorder(), workers=1, analyse=_analyse_die_or_hang)
    proc.submit_pending()
    _wait_for(lambda: _rows(sessions)[0].attempts == 1)  # the killer found and charged
    proc.close()
    poison, slow = _rows(sessions)
    assert "died while analysing" in poison.last_error
    assert (slow.status, slow.attempts) == (MESSAGE_ARCHIVED, 0)


def test_two_passes_at_once_record_a_message_once(maildir_env, monkeypatch) -> None:
    """The daemon and `mailbot reprocess` recording the same row at the same moment."""
    cfg, sessions, source, md = maildir_env
    md.add(make_mail(subject="厦门并发有限公司+数字证书申办"))
    ingest(cfg, sessions, source)
    row = _rows(sessions)[0]
    facts = analyse_archived(str(cfg.archive_dir), row.sha256, str(cfg.rules_dir))
    first_inside, release = threading.Event(), threading.Event()

    def hold_first(name: str) -> None:  # the first pass stops just before its commit
        if name == "during_processing" and not first_inside.is_set():
            first_inside.set()
            release.wait(30)

    monkeypatch.setattr(processor, "crash_point", hold_first)
    opened: list[int] = []
    one, two = Processor(cfg, sessions, CaseRecorder()), Processor(cfg, sessions, CaseRecorder())
    t1 = threading.Thread(target=lambda: opened.append(one.record_results([(row.id, facts)])))
    t1.start()
    assert first_inside.wait(30)
    t2 = threading.Thread(target=lambda: opened.append(two.record_results([(row.id, facts)])))
    t2.start()
    time.sleep(0.3)  # let the second pass reach the row while the first holds it
    release.set()
    t1.join(60)
    t2.join(60)
    assert sorted(opened) == [0, 1]
    with sessions() as s:
        assert len(s.scalars(select(Case)).all()) == 1
