"""The Sent copy (issue 10): the mailbox on the real Dovecot fixture, SMTP on aiosmtpd.

Every mail the SMTP server accepted is APPENDed, \\Seen, to the \\Sent special-use folder
(已发送 on the test server), byte for byte what SMTP carried; with `file:` delivery there is
no copy; an APPEND the server refuses is retried on the clock, never resends the mail and
never fails the run. On SQLite and, when configured, PostgreSQL.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailbot import clock
from mailbot.outbox.models import (
    COPY_DONE,
    COPY_FAILED,
    COPY_NONE,
    COPY_PENDING,
    SENT,
    OutboxMessage,
)
from mailbot.pki.ca import init_ca
from tests.support import replies as replies_support
from tests.support.dovecot import DovecotUser
from tests.support.mailbuilders import make_sm2, plain
from tests.support.replies import ReplyDesk, application

pytestmark = pytest.mark.timeout(180)

ORG = "厦门已发送测试有限公司"
SENT_FOLDER = "已发送"  # the test server's \Sent special-use folder
APPLICANT = "zhangsan@example.com.cn"  # the builders' sender

smtp_module = replies_support.smtp_module  # fixtures (an argument would shadow an import)
smtp = replies_support.smtp


def sent_copies(user: DovecotUser) -> dict[str, tuple[bytes, set[str]]]:
    """Message-ID -> (the stored bytes, flags) of every message in 已发送."""
    c = user.client()
    try:
        if not c.folder_exists(SENT_FOLDER):
            return {}
        c.select_folder(SENT_FOLDER, readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS"]) if uids else {}
    finally:
        user._drop(c)
    out = {}
    for item in data.values():
        raw = item[b"BODY[]"]
        head = raw.split(b"\r\n\r\n", 1)[0]
        [mid] = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                 if line.lower().startswith(b"message-id:")]
        out[mid] = (raw, {f.decode() if isinstance(f, bytes) else f for f in item[b"FLAGS"]})
    return out


def sent_dir(user: DovecotUser) -> Path:
    """The Maildir folder Dovecot keeps 已发送 in (modified UTF-7 name)."""
    c = user.client()
    try:
        c.select_folder(SENT_FOLDER)  # auto = create: made on the disk when first opened
    finally:
        user._drop(c)
    path = user.maildir / ("." + SENT_FOLDER.encode("utf-7").decode("ascii")
                           .replace("+", "&").replace("/", ","))
    assert path.is_dir(), sorted(p.name for p in user.maildir.iterdir())
    return path


def writable(folder: Path, yes: bool) -> None:
    """Make Dovecot (running as vmail) unable, or able again, to store mail in `folder`."""
    for d in (folder, folder / "tmp", folder / "new", folder / "cur"):
        if d.is_dir():
            os.chmod(d, 0o700 if yes else 0o500)


@pytest.fixture
def desk(tmp_path, db_url, engine, smtp, dovecot_user, frozen_clock) -> ReplyDesk:
    return ReplyDesk(tmp_path, db_url, engine, smtp, mailbox_url=dovecot_user.url)


def test_each_sent_mail_is_appended_seen_to_the_sent_folder_byte_for_byte(
        desk, dovecot_user, tmp_path) -> None:
    desk.configure(sent_folder="发件箱")  # the server's \Sent folder comes first
    init_ca(desk.cfg)
    req = make_sm2(tmp_path / "k", ORG)
    dovecot_user.append(application(ORG, csr_pem=req.csr_pem, message_id="<s.1@example.com.cn>"))
    dovecot_user.append(plain("请问办公时间", "几点上班？", message_id="<s.2@example.com.cn>"))
    desk.run()
    first = desk.mails()
    assert sorted(m.template for m in desk.outbox()) == ["acknowledgement", "unrelated"]
    desk.approve(desk.case_of("<s.1@example.com.cn>").ref)
    desk.run()
    mails = first + desk.mails()
    assert len(mails) == 3 and "envprivatekey" in mails[-1].files()
    copies = sent_copies(dovecot_user)
    assert sorted(copies) == sorted(m.header("Message-ID") for m in mails)
    for mail in mails:
        raw, flags = copies[mail.header("Message-ID")]
        assert raw == mail.raw  # what SMTP carried, byte for byte
        assert "\\Seen" in flags
    assert "发件箱" not in dovecot_user.folders()
    assert {(r.state, r.copy_state) for r in desk.outbox()} == {(SENT, COPY_DONE)}
    assert desk.status()["outbox"]["copies_pending"] == 0
    desk.run()  # nothing copied twice
    assert len(sent_copies(dovecot_user)) == 3


def test_no_sent_copy_with_file_delivery(tmp_path, db_url, engine, smtp, dovecot_user,
                                         frozen_clock) -> None:
    desk = ReplyDesk(tmp_path, db_url, engine, smtp, mailbox_url=dovecot_user.url,
                     smtp_url="file:outbox")
    dovecot_user.append(plain("请问办公时间", "几点上班？", message_id="<f.1@example.com.cn>"))
    desk.run()
    [row] = desk.outbox()
    assert (row.state, row.copy_state) == (SENT, COPY_NONE)
    [eml] = list((desk.cfg.var_dir / "outbox").glob("*.eml"))
    assert eml.read_bytes() == row.raw
    assert smtp.deliveries == []
    assert sent_copies(dovecot_user) == {}


def test_a_refused_append_is_retried_never_resends_and_never_fails_the_run(
        desk, dovecot_user, frozen_clock, tmp_path) -> None:
    folder = sent_dir(dovecot_user)
    writable(folder, False)
    try:
        dovecot_user.append(application(ORG, csr_pem=make_sm2(tmp_path / "k", ORG).csr_pem,
                                        message_id="<r.1@example.com.cn>"))
        code, out = desk.cli("run", "--once")
        assert code == 0, out
        assert "Sent copy failed" in out
        [ack] = desk.mails()
        [row] = desk.outbox()
        assert (row.state, row.copy_state, row.copy_attempts) == (SENT, COPY_PENDING, 1)
        assert "append to 已发送" in (row.copy_error or "")  # the server said NO
        assert desk.status()["outbox"]["copies_pending"] == 1
        desk.run()  # not due yet
        frozen_clock.advance(seconds=desk.cfg.outbox.backoff_seconds + 1)
        code, out = desk.cli("run", "--once")
        assert code == 0, out
        assert desk.outbox()[0].copy_attempts == 2
        assert desk.mails() == [] and sent_copies(dovecot_user) == {}
    finally:
        writable(folder, True)
    frozen_clock.advance(seconds=2 * desk.cfg.outbox.backoff_seconds + 1)
    desk.run()
    [row] = desk.outbox()
    assert (row.state, row.copy_state, row.attempts) == (SENT, COPY_DONE, 1)
    assert desk.mails() == []  # the mail itself went out once
    copies = sent_copies(dovecot_user)
    assert list(copies) == [ack.header("Message-ID")] and copies[row.message_id][0] == ack.raw


def test_a_sent_copy_given_up_is_shown_in_status_and_the_staff_digest(
        desk, dovecot_user, frozen_clock, tmp_path) -> None:
    desk.configure(max_attempts=2, staff_addresses=["staff@xmport.example.cn"], digest_hour=8)
    folder = sent_dir(dovecot_user)
    writable(folder, False)
    try:
        dovecot_user.append(application(ORG, csr_pem=make_sm2(tmp_path / "k", ORG).csr_pem,
                                        message_id="<g.1@example.com.cn>"))
        for _ in range(2):  # the first try, then the last one after the backoff
            code, out = desk.cli("run", "--once")
            assert code == 0, out
            frozen_clock.advance(seconds=desk.cfg.outbox.backoff_seconds + 1)
        ref = desk.case_of("<g.1@example.com.cn>").ref
        [failed] = desk.status()["outbox"]["copy_failed"]
        assert failed["ref"] == ref and "append to 已发送" in failed["copy_error"]
        [row] = desk.outbox(OutboxMessage.case_ref == ref)
        assert (row.state, row.copy_state, row.attempts) == (SENT, COPY_FAILED, 1)
        # the next morning's digest tells staff (while the folder still refuses)
        local = frozen_clock().astimezone(clock.SHANGHAI)
        frozen_clock.advance(hours=24 - local.hour + 8, minutes=30 - local.minute)
        desk.run()
        desk.run()
    finally:
        writable(folder, True)
    mails = desk.mails()
    assert [m.rcpt for m in mails].count([APPLICANT]) == 1
    digest = mails[-1]
    assert digest.rcpt == ["staff@xmport.example.cn"]
    faults = digest.text[digest.text.index("四、故障"):digest.text.index("五、")]
    assert "未能把已发邮件存入“已发送”" in faults and ref in faults
    frozen_clock.advance(days=1)
    desk.run()  # given up: never tried again, and the mail is never sent again
    assert desk.outbox(OutboxMessage.case_ref == ref)[0].copy_attempts == 2
    assert [m for m in desk.mails() if m.rcpt == [APPLICANT]] == []
