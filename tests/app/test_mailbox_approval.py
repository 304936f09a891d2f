"""Staff approve and reject in their mail client (issue 9, item 5: Mailbox), against Dovecot.

The red flag on the application mail in 已处理 (or in INBOX with the processed keyword), or
the mail moved to 已确认, approves; moved to 退回 it is rejected with the configured reason.
Each mark counts once (a keyword on the message, set after the database), as one approval
by the mailbox actor; a refused mark is recorded once and stays visible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailbot.app.daemon import Daemon
from mailbot.app.mailbox_staff import (
    REFUSED_ACTION,
    MailboxMarks,
    check_settings,
    mailbox_job,
)
from mailbot.app.status import collect_status
from mailbot.cases import workflow
from mailbot.cases.audit import verify_chain
from mailbot.cases.models import AuditEntry, Case
from mailbot.config import Config, ConfigError
from mailbot.db import session_factory
from mailbot.intake.models import Message
from mailbot.mailbox.maildir import MaildirSource
from tests.support.dovecot import DovecotUser
from tests.support.intake import NoMoveSource, make_config, make_mail

pytestmark = pytest.mark.timeout(120)

STAFF = "李四"
APPROVED, REJECTED, REFUSED = "$MailbotApproved", "$MailbotRejected", "$MailbotRefused"


@pytest.fixture(autouse=True)
def only_the_mailbox_job(monkeypatch) -> None:
    """The mail and the staff marks only: issuance (which needs a CA and a request) and the
    later jobs have their own tests."""
    import mailbot.app.daemon

    monkeypatch.setattr(mailbot.app.daemon, "JOBS", [("mailbox", mailbox_job)])


def test_the_mailbox_job_runs_first_after_the_mail() -> None:
    from mailbot.app.jobs import JOBS

    assert JOBS[0] == ("mailbox", mailbox_job)


# -- helpers ---------------------------------------------------------------------------------
def _cycle(cfg: Config, engine: Engine, source: Any = None) -> Daemon:
    """One daemon cycle (mail, then the jobs: staff marks first); a fresh daemon each time,
    as a restart would make it."""
    daemon = Daemon(cfg, engine=engine, source=source)
    try:
        report = daemon.cycle()
    finally:
        daemon.close()
    assert report.errors == [], report.errors
    return daemon


def _sessions(engine: Engine):
    return session_factory(engine)


def _case(engine: Engine, mid: str) -> Case:
    with _sessions(engine)() as s:
        case_id = s.scalar(select(Message.case_id).where(Message.message_id == mid))
        assert case_id is not None, f"no case for {mid}"
        case = s.get(Case, case_id)
        assert case is not None
        s.expunge(case)
        return case


def _audit(engine: Engine, ref: str) -> list[tuple[str, str, str | None, str | None, str]]:
    """(actor, action, to_state, reason, via) of a case's audit rows after opening."""
    with _sessions(engine)() as s:
        rows = s.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.to_state,
                                AuditEntry.reason, AuditEntry.via)
                         .join(Case, Case.id == AuditEntry.case_id)
                         .where(Case.ref == ref,
                                AuditEntry.action.not_in(("open", "intake_check", "override",
                                                          "reassess")))
                         .order_by(AuditEntry.id)).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _make_approvable(engine: Engine, ref: str) -> None:
    """Staff override every blocking finding (a test mail has no attachments), so the case
    waits for the phone confirmation."""
    with _sessions(engine)() as s:
        case = workflow.case_for_update(s, ref)
        assert case is not None
        for code in sorted({f.code for f in workflow.blocking_findings(case)}):
            workflow.override(s, case, code, by="测试员", reason="test: materials seen on paper")
        s.commit()
        assert case.state == "awaiting_confirmation", case.state


def _application(cfg: Config, engine: Engine, user: DovecotUser | None, company: str,
                 *, approvable: bool = True, source: Any = None,
                 deliver: Callable[[bytes], None] | None = None) -> tuple[str, str]:
    """An application mail through intake: (Message-ID, case ref)."""
    mid = f"<app.{time.monotonic_ns()}@example.cn>"
    raw = make_mail(subject=f"{company}+数字证书申办", message_id=mid)
    if deliver is not None:
        deliver(raw)
    else:
        assert user is not None
        user.append(raw)
    _cycle(cfg, engine, source)
    ref = _case(engine, mid).ref
    if approvable:
        _make_approvable(engine, ref)
    return mid, ref


def _uid(user: DovecotUser, folder: str, mid: str) -> int:
    c = user.client()
    c.select_folder(folder)
    [uid] = c.search(["HEADER", "Message-ID", mid])
    user._drop(c)
    return uid


def _flag(user: DovecotUser, folder: str, mid: str, flag: str = "\\Flagged",
          *, remove: bool = False) -> None:
    """What staff do in their client: set (or clear) the red flag."""
    uid = _uid(user, folder, mid)
    c = user.client()
    c.select_folder(folder)
    (c.remove_flags if remove else c.add_flags)([uid], [flag])
    user._drop(c)


def _move(user: DovecotUser, source: str, mid: str, target: str) -> None:
    """What staff do in their client: drag the mail to another folder."""
    uid = _uid(user, source, mid)
    c = user.client()
    if not c.folder_exists(target):
        c.create_folder(target)
    c.select_folder(source)
    c.move([uid], target)
    user._drop(c)


def _flags_of(user: DovecotUser, folder: str, mid: str) -> set[str]:
    return user.flags(folder)[_uid(user, folder, mid)]


@pytest.fixture
def cfg(tmp_path: Path, db_url: str, dovecot_user: DovecotUser) -> Config:
    return make_config(tmp_path, db_url, dovecot_user.url)


# -- approval by flag and by folder, rejection by folder --------------------------------------
def test_a_flag_on_a_bounce_of_the_case_approves_nothing(cfg, engine, dovecot_user) -> None:
    """A bounce joins the case of the reply it returns, but it does not stand for the case."""
    from tests.support.mailbuilders import bounce

    mid, ref = _application(cfg, engine, dovecot_user, "厦门退信科技有限公司")
    ours = make_mail(subject=f"[{ref}] 受理回执", message_id=f"<{ref}.abc123@189.cn>")
    dovecot_user.append(bounce(ours))
    _cycle(cfg, engine)
    with _sessions(engine)() as s:
        kinds = dict(s.execute(select(Message.message_id, Message.kind)
                               .where(Message.case_id == _case(engine, mid).id)).all())
    assert kinds.get("<dsn.20260105093100@189.cn>") == "bounce"  # joined the case
    _flag(dovecot_user, "已处理", "<dsn.20260105093100@189.cn>")
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "awaiting_confirmation"
    assert [a[1] for a in _audit(engine, ref)] == ["bounce"]  # and no approval


def test_the_red_flag_in_processed_approves_once(cfg, engine, dovecot_user) -> None:
    mid, ref = _application(cfg, engine, dovecot_user, "厦门红旗科技有限公司")
    # mailbot made the staff folders, so the client shows them
    assert {"已确认", "退回"} <= set(dovecot_user.folders())
    _flag(dovecot_user, "已处理", mid)
    _cycle(cfg, engine)
    case = _case(engine, mid)
    assert case.state == "approved" and case.confirmed_by == "mailbox"
    assert _audit(engine, ref) == [("mailbox", "approve", "approved",
                                    "confirmed by phone and approved", "mailbox")]
    assert {"\\Flagged", APPROVED} <= _flags_of(dovecot_user, "已处理", mid)
    _cycle(cfg, engine)  # the flag is still set: it counted once
    assert len(_audit(engine, ref)) == 1
    with _sessions(engine)() as s:
        assert verify_chain(s).ok


def test_moving_to_confirmed_approves(cfg, engine, dovecot_user) -> None:
    mid, ref = _application(cfg, engine, dovecot_user, "厦门确认贸易有限公司")
    _move(dovecot_user, "已处理", mid, "已确认")
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "approved"
    assert _audit(engine, ref)[0][:2] == ("mailbox", "approve")
    assert APPROVED in _flags_of(dovecot_user, "已确认", mid)
    # flagged as well, and moved: still one mark's worth (the keyword moved with it)
    _flag(dovecot_user, "已确认", mid)
    _move(dovecot_user, "已确认", mid, "已处理")
    _cycle(cfg, engine)
    assert len(_audit(engine, ref)) == 1


def test_moving_to_returned_rejects_with_the_configured_reason(cfg, engine,
                                                              dovecot_user) -> None:
    cfg.cases.reject_reason = "退回：营业执照不清晰"
    mid, ref = _application(cfg, engine, dovecot_user, "厦门退回物流有限公司",
                            approvable=False)
    _move(dovecot_user, "已处理", mid, "退回")
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "rejected"
    assert _audit(engine, ref) == [("mailbox", "reject", "rejected", "退回：营业执照不清晰",
                                    "mailbox")]
    assert REJECTED in _flags_of(dovecot_user, "退回", mid)
    _cycle(cfg, engine)
    assert len(_audit(engine, ref)) == 1


def test_a_configured_keyword_instead_of_the_flag(cfg, engine, dovecot_user) -> None:
    cfg.mailbox_staff.approve_flag = "$label1"  # Thunderbird's "Important" tag
    mid, _ref = _application(cfg, engine, dovecot_user, "厦门标签电子有限公司")
    _flag(dovecot_user, "已处理", mid)  # the red flag means nothing now
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "awaiting_confirmation"
    _flag(dovecot_user, "已处理", mid, "$label1")
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "approved"


# -- refusals ----------------------------------------------------------------------------------
def test_refused_while_a_blocking_finding_is_open(cfg, engine, dovecot_user, caplog,
                                                  capsys, tmp_path) -> None:
    mid, ref = _application(cfg, engine, dovecot_user, "厦门缺件机械有限公司", approvable=False)
    assert _case(engine, mid).state == "incomplete"
    _flag(dovecot_user, "已处理", mid)
    caplog.set_level("INFO", logger="mailbot.app.mailbox_staff")
    _cycle(cfg, engine)
    _cycle(cfg, engine)  # and a restart later: still one refusal
    assert _case(engine, mid).state == "incomplete"
    rows = _audit(engine, ref)
    assert [r[:2] + (r[4],) for r in rows] == [("mailbox", REFUSED_ACTION, "mailbox")]
    assert f"flag in 已处理 on {mid}:" in (rows[0][3] or "")
    assert len([r for r in caplog.records if "was not taken" in r.getMessage()]) == 1
    flags = _flags_of(dovecot_user, "已处理", mid)
    assert REFUSED in flags and APPROVED not in flags  # the client can show it
    st = collect_status(cfg)
    [open_refusal] = st["mailbox_refusals"]
    assert open_refusal["ref"] == ref and open_refusal["state"] == "incomplete"
    from mailbot.cli import main
    from tests.support.intake import write_config

    capsys.readouterr()
    assert main(["--config", str(write_config(tmp_path / "status.toml", cfg)), "status"]) == 0
    text = capsys.readouterr().out
    assert f"{ref} (incomplete)" in text.split("were refused")[1]  # the status text shows it

    # Staff fix it, clear the flag and set it again: a new mark, and it goes through.
    _make_approvable(engine, ref)
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "awaiting_confirmation"  # no old flag approves
    _flag(dovecot_user, "已处理", mid, remove=True)
    _cycle(cfg, engine)
    assert REFUSED not in _flags_of(dovecot_user, "已处理", mid)
    _flag(dovecot_user, "已处理", mid)
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "approved"
    assert {APPROVED} <= _flags_of(dovecot_user, "已处理", mid)
    assert collect_status(cfg)["mailbox_refusals"] == []


def test_a_refused_flag_then_moved_to_returned_rejects(cfg, engine, dovecot_user) -> None:
    mid, ref = _application(cfg, engine, dovecot_user, "厦门改判纺织有限公司", approvable=False)
    _flag(dovecot_user, "已处理", mid)
    _cycle(cfg, engine)
    assert REFUSED in _flags_of(dovecot_user, "已处理", mid)
    _move(dovecot_user, "已处理", mid, "退回")  # a new mark, though the keyword came along
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "rejected"
    flags = _flags_of(dovecot_user, "退回", mid)
    assert REJECTED in flags and REFUSED not in flags


def test_a_flag_on_mail_that_opened_no_case_is_ignored(cfg, engine, dovecot_user,
                                                       caplog) -> None:
    mid = "<notice.1@example.cn>"
    dovecot_user.append(make_mail(subject="关于端午节放假的通知", message_id=mid,
                                  body="各单位：端午节放假三天。"))
    _cycle(cfg, engine)
    with _sessions(engine)() as s:
        assert s.scalar(select(Message.case_id).where(Message.message_id == mid)) is None
    _flag(dovecot_user, "已处理", mid)
    unknown = "<never.seen@example.cn>"
    dovecot_user.append(make_mail(message_id=unknown), folder="已确认")
    caplog.set_level("INFO", logger="mailbot.app.mailbox_staff")
    daemon = Daemon(cfg, engine=engine)  # one run, two cycles: noted once per run
    try:
        assert daemon.cycle().errors == [] and daemon.cycle().errors == []
    finally:
        daemon.close()
    notes = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(notes) == 2 and any("opened no case" in n for n in notes)
    assert any("not a mail mailbot has recorded" in n for n in notes)
    assert _flags_of(dovecot_user, "已处理", mid) & {APPROVED, REFUSED} == set()
    with _sessions(engine)() as s:
        assert s.scalars(select(Case)).all() == []


# -- the two-person rule -----------------------------------------------------------------------
def test_two_person_rule_one_mailbox_and_one_cli_approval(cfg, engine, dovecot_user) -> None:
    cfg.cases.approvals_required = 2
    mid, ref = _application(cfg, engine, dovecot_user, "厦门双签科技有限公司")
    _flag(dovecot_user, "已处理", mid)
    _cycle(cfg, engine)
    assert _case(engine, mid).state == "awaiting_confirmation"
    assert _audit(engine, ref) == [("mailbox", "approve", None,
                                    "confirmed by phone and approved (1 of 2)", "mailbox")]
    # Another mark by mailbox (moved to 已确认 as well) is no second person.
    _move(dovecot_user, "已处理", mid, "已确认")
    _cycle(cfg, engine)
    assert len(_audit(engine, ref)) == 1
    assert _case(engine, mid).state == "awaiting_confirmation"
    with _sessions(engine)() as s:
        case = workflow.case_for_update(s, ref)
        assert case is not None
        workflow.approve(s, case, by=STAFF, via="cli",
                         policy=workflow.Policy.from_config(cfg.cases))
        s.commit()
    assert _case(engine, mid).state == "approved"
    assert [r[:3] for r in _audit(engine, ref)] == [("mailbox", "approve", None),
                                                    (STAFF, "approve", "approved")]


# -- counted once: across cycles, restarts and a crash before the keyword ---------------------
class CrashBeforeKeyword:
    """A real source whose first add_keyword dies, as a kill after the commit would."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def add_keyword(self, refs: Any, keyword: str) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("killed before the keyword")
        self._inner.add_keyword(refs, keyword)


@pytest.mark.parametrize("required", [1, 2])
def test_a_crash_between_the_database_and_the_keyword_counts_once(cfg, engine, dovecot_user,
                                                                  required: int) -> None:
    from mailbot.mailbox.url import source_from_config

    cfg.cases.approvals_required = required
    mid, ref = _application(cfg, engine, dovecot_user, f"厦门断电{required}有限公司")
    _flag(dovecot_user, "已处理", mid)
    crashing = CrashBeforeKeyword(source_from_config(cfg))
    daemon = Daemon(cfg, engine=engine, source=crashing)
    try:
        report = daemon.cycle()
    finally:
        daemon.close()
    assert crashing.crashed and any("killed" in e for e in report.errors)
    assert APPROVED not in _flags_of(dovecot_user, "已处理", mid)
    _cycle(cfg, engine)  # the restart: found done in the case, only the keyword is set
    assert len(_audit(engine, ref)) == 1
    assert APPROVED in _flags_of(dovecot_user, "已处理", mid)
    assert _case(engine, mid).state == ("approved" if required == 1
                                        else "awaiting_confirmation")


# -- other servers and sources -----------------------------------------------------------------
def test_under_the_namespace_prefix(tmp_path, db_url, engine, dovecot_prefixed_user) -> None:
    user = dovecot_prefixed_user
    cfg = make_config(tmp_path, db_url, user.url)
    flagged, _ = _application(cfg, engine, user, "厦门前缀一有限公司")
    moved, _ = _application(cfg, engine, user, "厦门前缀二有限公司")
    assert {"INBOX.已确认", "INBOX.退回"} <= set(user.folders())
    _flag(user, "INBOX.已处理", flagged)
    _move(user, "INBOX.已处理", moved, "INBOX.已确认")
    _cycle(cfg, engine)
    assert _case(engine, flagged).state == "approved"
    assert _case(engine, moved).state == "approved"
    assert APPROVED in _flags_of(user, "INBOX.已确认", moved)


def test_flag_in_inbox_with_the_processed_keyword(cfg, engine, dovecot_user) -> None:
    """A server without MOVE: mailbot left the mail in INBOX with the processed keyword."""
    from mailbot.mailbox.url import source_from_config

    def source() -> NoMoveSource:
        return NoMoveSource(source_from_config(cfg))

    mid, ref = _application(cfg, engine, dovecot_user, "厦门无移动有限公司", source=source())
    assert "$MailbotProcessed" in _flags_of(dovecot_user, "INBOX", mid)
    # A flag on mail mailbot has not processed (no keyword) is no mark.
    other = "<fresh@example.cn>"
    dovecot_user.append(make_mail(message_id=other), flags=("\\Flagged",))
    _flag(dovecot_user, "INBOX", mid)
    marks = MailboxMarks(cfg, _sessions(engine), source_from_config(cfg))
    assert [m.where for m in marks.marks()] == ["flag in INBOX"]
    marks.source.close()
    _cycle(cfg, engine, source())
    assert _case(engine, mid).state == "approved"
    assert APPROVED in _flags_of(dovecot_user, "INBOX", mid)


def test_maildir_flags_and_folders(tmp_path, db_url, engine) -> None:
    """The embedded Maildir: flags live in file names, keywords in dovecot-keywords."""
    cfg = make_config(tmp_path, db_url, "maildir:mail")
    root = tmp_path / "var" / "mail"
    md = MaildirSource(root)
    md.open()

    def deliver(raw: bytes) -> None:
        md.append("INBOX", raw)

    flagged, _ = _application(cfg, engine, None, "厦门目录一有限公司", deliver=deliver)
    moved, _ = _application(cfg, engine, None, "厦门目录二有限公司", deliver=deliver)
    returned, _ = _application(cfg, engine, None, "厦门目录三有限公司", deliver=deliver,
                               approvable=False)
    by_mid = {md.message_ids([r])[r]: r for r in md.list_folder("已处理")}
    md.add_flags([by_mid[flagged]], ["\\Flagged"])
    md.move([by_mid[moved]], "已确认")
    md.move([by_mid[returned]], "退回")
    _cycle(cfg, engine)
    assert [_case(engine, m).state for m in (flagged, moved, returned)] == \
        ["approved", "approved", "rejected"]
    [f] = md.marked("已处理", having=["\\Flagged"])
    assert APPROVED in f.flags
    assert APPROVED in md.list_folder("已确认")[0].flags
    assert REJECTED in md.list_folder("退回")[0].flags
    _cycle(cfg, engine)
    with _sessions(engine)() as s:
        assert len(s.scalars(select(AuditEntry).where(AuditEntry.via == "mailbox")).all()) == 3


# -- watching: the daemon sees a flag within flag_poll_seconds --------------------------------
@pytest.mark.timeout(90)
def test_the_daemon_sees_a_flag_within_the_poll_interval(cfg, engine, dovecot_user) -> None:
    cfg.mailbox_staff.flag_poll_seconds = 1
    cfg.intake.sweep_seconds = 3600
    mid, _ref = _application(cfg, engine, dovecot_user, "厦门守望科技有限公司")
    daemon = Daemon(cfg, engine=engine)
    assert daemon.wait_seconds() <= 1.0
    runner = threading.Thread(target=daemon.run_forever, daemon=True)
    runner.start()
    try:
        time.sleep(1.5)  # in IDLE on the inbox by now
        flagged_at = time.monotonic()
        _flag(dovecot_user, "已处理", mid)
        while _case(engine, mid).state != "approved":
            assert time.monotonic() - flagged_at < 15, "the flag was not seen"
            time.sleep(0.2)
    finally:
        stop_at = time.monotonic()
        daemon.request_stop()
        runner.join(timeout=10)
    assert not runner.is_alive()
    assert time.monotonic() - stop_at < 5  # the wait ended within a second or so


def test_wait_is_not_capped_when_flag_polling_is_off(cfg, engine) -> None:
    cfg.mailbox_staff.flag_poll_seconds = 0
    daemon = Daemon(cfg, engine=engine)
    try:
        assert daemon.wait_seconds() == daemon.intake.wait_seconds()
    finally:
        daemon.close()


@pytest.mark.parametrize(("key", "value"), [("approve_flag", "\\Recent"),
                                            ("approved_keyword", "has space"),
                                            ("refused_keyword", "\\Flagged"),
                                            ("reject_folder", "已确认"),
                                            ("flag_poll_seconds", -1)])
def test_settings_that_cannot_work_are_refused(key: str, value: object) -> None:
    cfg = Config()
    setattr(cfg.mailbox_staff, key, value)
    with pytest.raises(ConfigError, match=key):
        check_settings(cfg)


def test_the_frequent_poll_searches_only_when_a_watched_folder_changed(cfg, engine,
                                                                       dovecot_user) -> None:
    """With CONDSTORE (Dovecot has it) a poll whose STATUS of 已处理, 已确认 and 退回 is
    unchanged does no search; a flag set by staff changes 已处理's HIGHESTMODSEQ."""
    mid, _ref = _application(cfg, engine, dovecot_user, "厦门守静科技有限公司")
    daemon = Daemon(cfg, engine=engine)
    searches: list[str] = []
    real = daemon.source.marked

    def counting(folder: str, **kw: Any) -> Any:
        searches.append(folder)
        return real(folder, **kw)

    daemon.source.marked = counting  # type: ignore[method-assign]
    marks = MailboxMarks(cfg, daemon.sessions, daemon.source)
    try:
        marks.run(if_changed=True)  # the first look searches and remembers the folders
        first = len(searches)
        assert first > 0
        marks.run(if_changed=True)
        assert len(searches) == first  # nothing changed: no search at all
        _flag(dovecot_user, "已处理", mid)
        report = marks.run(if_changed=True)
        assert len(report.approved) == 1 and len(searches) > first
    finally:
        daemon.close()
    assert _case(engine, mid).state == "approved"
