"""The reply path end to end (issue 10): mail in, `run --once`, mail out over a real aiosmtpd.

Each test drops real applications (tests/support/mailbuilders.py) into the Maildir inbox, runs
the daemon once in-process (Daemon(cfg, once=True).run_once(), or `mailbot run --once` through
the CLI's main) on the frozen clock, and reads what the SMTP server accepted with Python's
email parser (and ripmime, and OpenSSL for the certificates and the envelope). Every test runs
on SQLite and, when MAILBOT_TEST_DATABASE_URL is set, on PostgreSQL. The Sent copy in Dovecot
is in test_replies_imap.py.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from pathlib import Path

import pytest
from asn1crypto import pem, x509
from pypdf import PdfReader
from sqlalchemy import select

from mailbot import clock
from mailbot.cases.models import AuditEntry, CaseFinding
from mailbot.intake.models import Message as MessageRow
from mailbot.outbox.models import FAILED, QUEUED, SENT, SUPPRESSED, OutboxMessage
from mailbot.pki.ca import init_ca
from tests.support import replies as replies_support
from tests.support.mailbuilders import Att, Mail, bounce, build, jpeg, make_rsa_csr, make_sm2, plain
from tests.support.pki_issue import assert_envelope_opens_with_openssl, openssl
from tests.support.replies import (
    HOTLINE,
    NOTICE_PDF,
    OUR_ADDRESS,
    ReplyDesk,
    Sent,
    application,
    base64_text,
    names_compat32,
    names_ripmime,
    revocation,
)

pytestmark = pytest.mark.timeout(180)

ORG = "厦门回执测试科技有限公司"
FORM_ADDRESS = "cert@example.cn"
APPLICANT = "zhangsan@example.com.cn"
TAG = re.compile(r"\[(XM-\d{4}-\d{4})\]")


# -- fixtures ----------------------------------------------------------------------------------
smtp_module = replies_support.smtp_module  # fixtures (an argument would shadow an import)
smtp = replies_support.smtp


@pytest.fixture
def desk(tmp_path, db_url, engine, smtp, frozen_clock) -> ReplyDesk:
    return ReplyDesk(tmp_path, db_url, engine, smtp)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, object]:
    """Applicant requests made by OpenSSL (once per module: key generation is the slow part)."""
    d = tmp_path_factory.mktemp("replies-keys")
    wrong = d / "wrong"
    wrong.mkdir()
    openssl("genpkey", "-algorithm", "SM2", "-out", "k.pem", cwd=wrong)
    # OpenSSL 3 signs with an empty SM2 ID unless told: the request's signature is wrong
    openssl("req", "-new", "-key", "k.pem", "-sm3", "-utf8", "-subj",
            f"/C=CN/O={ORG}/CN={ORG}", "-out", "r.csr", cwd=wrong)
    return {"rsa": make_rsa_csr(d / "rsa", ORG), "wrong_id": (wrong / "r.csr").read_bytes()}


def sm2_request(tmp_path: Path, name: str, org: str = ORG):
    """A fresh applicant key and its valid request (standard SM2 ID, CN = the company)."""
    return make_sm2(tmp_path / name, org)


def only(mails: list[Sent]) -> Sent:
    assert len(mails) == 1, [(m.rcpt, m.subject) for m in mails]
    return mails[0]


def finding_codes(desk: ReplyDesk, case_id: int) -> set[str]:
    with desk.sessions() as s:
        return set(s.scalars(select(CaseFinding.code).where(CaseFinding.case_id == case_id)))


def templates(desk: ReplyDesk, *where) -> list[str]:
    return [r.template for r in desk.outbox(*where)]


# -- 1. acknowledgement and incomplete notice ----------------------------------------------------
def test_complete_application_gets_one_acknowledgement_to_its_reply_to(desk, tmp_path) -> None:
    req = sm2_request(tmp_path, "a")
    desk.deliver(application(ORG, csr_pem=req.csr_pem, message_id="<app.1@example.com.cn>",
                             headers=[("Reply-To", "证书办理 <office@example.com.cn>")]))
    desk.run()
    case = desk.case_of("<app.1@example.com.cn>")
    assert case.state == "awaiting_confirmation"
    ack = only(desk.mails())
    assert ack.rcpt == ["office@example.com.cn"]  # Reply-To, not From
    assert ack.delivery.mail_from == OUR_ADDRESS
    assert TAG.findall(ack.subject) == [case.ref]
    assert ack.header("In-Reply-To") == "<app.1@example.com.cn>"
    assert ack.header("References") == "<app.1@example.com.cn>"
    assert re.fullmatch(rf"<{case.ref}\.[^@<>\s]+@189\.cn>", ack.header("Message-ID") or "")
    assert ack.header("Auto-Submitted") == "auto-replied"
    assert ack.header("X-Mailbot-Loop") == OUR_ADDRESS
    for body in (ack.text, ack.html):
        assert HOTLINE in body and case.ref in body
    assert "补正" not in ack.text  # the acknowledgement, not the incomplete notice
    assert templates(desk) == ["acknowledgement"]
    desk.run()  # nothing new: nothing more
    assert desk.mails() == []


def test_incomplete_application_gets_one_notice_naming_each_fix(desk, tmp_path, keys) -> None:
    # Wrong wording in the subject (subject_format, for staff only), two scans missing, an RSA
    # request; and a second application whose SM2 request was signed with an empty SM2 ID.
    desk.deliver(application(ORG, csr_pem=keys["rsa"], message_id="<app.rsa@example.com.cn>",
                             subject=f"{ORG} 证书申请", drop=("经办人身份证.jpg", "营业执照.pdf")))
    desk.deliver(application(ORG, csr_pem=keys["wrong_id"], sender="李四 <lisi@example.com.cn>",
                             message_id="<app.id@example.com.cn>"))
    desk.run()
    rsa_case = desk.case_of("<app.rsa@example.com.cn>")
    id_case = desk.case_of("<app.id@example.com.cn>")
    assert rsa_case.state == id_case.state == "incomplete"
    sent = desk.mails()
    mails = {m.rcpt[0]: m for m in sent}
    assert len(sent) == 2 and set(mails) == {APPLICANT, "lisi@example.com.cn"}  # to the senders
    assert templates(desk, OutboxMessage.case_id == rsa_case.id) == ["incomplete"]
    assert templates(desk, OutboxMessage.case_id == id_case.id) == ["incomplete"]

    rsa = mails[APPLICANT]
    assert TAG.findall(rsa.subject) == [rsa_case.ref]
    assert rsa.header("In-Reply-To") == "<app.rsa@example.com.cn>"
    assert rsa.header("Auto-Submitted") == "auto-replied"
    for body in (rsa.text, rsa.html):
        assert "缺少经办人身份证明复印件" in body
        assert "缺少营业执照或其他主体资质证明复印件" in body
        assert "RSA" in body and "2022 年 7 月 1 日" in body
        assert HOTLINE in body
    assert "缺少法定代表人" not in rsa.text  # only what is missing
    wrong = mails["lisi@example.com.cn"]
    assert TAG.findall(wrong.subject) == [id_case.ref]
    for body in (wrong.text, wrong.html):
        assert "标准用户标识 1234567812345678" in body and "distid:1234567812345678" in body
        assert "缺少" not in body
    # staff saw the subject's wording; the applicant is never asked to fix it
    assert "subject_format" in finding_codes(desk, rsa_case.id)
    for mail in mails.values():
        for body in (mail.text, mail.html):
            assert "邮件主题未按" not in body and "企业名称+数字证书申办" not in body
            assert "subject" not in body.lower()


# -- 2. issuance: the certificates, the envelope and the notice to the form's address -----------
class Pair:
    """What assert_envelope_opens_with_openssl reads: the envelope and env.cer."""

    def __init__(self, envelope: bytes, enc_cert: bytes) -> None:
        self.envelope, self.enc_cert = envelope, enc_cert


def verify_with_openssl(tmp: Path, chain_pem: str, *ders: bytes) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "ca.pem").write_text(chain_pem)
    for n, der in enumerate(ders):
        (tmp / f"c{n}.pem").write_bytes(pem.armor("CERTIFICATE", der))
        res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", "ca.pem",
                      f"c{n}.pem", cwd=tmp)
        assert res.stdout.decode().strip() == f"c{n}.pem: OK"


def pdf_text(data: bytes) -> str:
    return "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)


def issue_one(desk: ReplyDesk, tmp_path: Path, name: str, *, email: str = FORM_ADDRESS,
              sender: str = f"张三 <{APPLICANT}>") -> tuple[str, Sent, object]:
    """An application through intake, approved by staff, issued and mailed: (ref, the issued
    mail, the applicant's request material)."""
    req = sm2_request(tmp_path, name)
    mid = f"<{name}@example.com.cn>"
    desk.deliver(application(ORG, csr_pem=req.csr_pem, message_id=mid, sender=sender,
                             email=email))
    desk.run()
    case = desk.case_of(mid)
    assert case.state == "awaiting_confirmation"
    ack = only(desk.mails())
    assert ack.rcpt == [sender.split("<")[-1].rstrip(">")]
    desk.approve(case.ref)
    desk.run()
    return case.ref, only(desk.mails()), req


def test_issued_mail_goes_to_the_forms_address_with_the_pair_the_envelope_and_the_notice(
        desk, tmp_path) -> None:
    ca = init_ca(desk.cfg)
    ref, issued, req = issue_one(desk, tmp_path, "issue")
    # to the form's 邮件地址 only, never to the sender
    assert issued.rcpt == [FORM_ADDRESS]
    assert issued.header("To") == FORM_ADDRESS and APPLICANT not in issued.raw.decode("ascii")
    assert TAG.findall(issued.subject) == [ref]
    assert issued.header("Auto-Submitted") == "auto-replied"
    assert re.fullmatch(rf"<{ref}\.[^@<>\s]+@189\.cn>", issued.header("Message-ID") or "")
    assert issued.header("In-Reply-To") == "<issue@example.com.cn>"

    names = ["sign.cer", "env.cer", "envprivatekey", NOTICE_PDF]
    files = issued.files()
    assert list(files) == names  # Python's email package (RFC 2231 filename*)
    assert [n for n, _f in names_compat32(issued.raw)] == names  # the RFC 2047 name= of old
    assert [f for _n, f in names_compat32(issued.raw)] == names  # clients; compat32's 2231
    ripped = names_ripmime(issued.raw, tmp_path / "ripmime")
    if ripped is not None:  # a third, independent MIME parser
        assert ripped == files

    # DER by default; both verify with OpenSSL against the CA; sign.cer is the applicant's key
    sign, enc = (x509.Certificate.load(files[n]) for n in ("sign.cer", "env.cer"))
    assert files["sign.cer"][0] == 0x30 and files["env.cer"][0] == 0x30
    verify_with_openssl(tmp_path / "verify", ca.chain_pem(), files["sign.cer"], files["env.cer"])
    (tmp_path / "s.pem").write_bytes(pem.armor("CERTIFICATE", files["sign.cer"]))
    assert openssl("x509", "-in", "s.pem", "-noout", "-pubkey", cwd=tmp_path).stdout == \
        openssl("pkey", "-in", str(tmp_path / "issue" / "k.pem"), "-pubout").stdout
    # the envelope opens with the applicant's signing key by OpenSSL alone, to env.cer's key
    assert_envelope_opens_with_openssl(Pair(files["envprivatekey"], files["env.cer"]),
                                       tmp_path / "issue" / "k.pem", tmp_path / "issue")

    # the notice: extractable text with the company and both serials
    text = pdf_text(files[NOTICE_PDF])
    assert ORG in text and ref in text and "国家信任源" in text
    flat = re.sub(r"[\s:]", "", text).upper()
    for name, cert in (("sign.cer", sign), ("env.cer", enc)):
        assert f"{cert.serial_number:X}" in flat
        assert hashlib.new("sm3", files[name]).hexdigest().upper() in flat  # SM3 fingerprint
        not_after = cert["tbs_certificate"]["validity"]["not_after"].native
        assert not_after.astimezone(clock.SHANGHAI).strftime("%Y-%m-%d") in text
    assert desk.case_of("<issue@example.com.cn>").state == "delivered"
    assert templates(desk) == ["acknowledgement", "issued"]
    desk.run()
    assert desk.mails() == []


def test_base64_certificates_by_configuration(desk, tmp_path) -> None:
    desk.configure(cert_encoding="base64")
    init_ca(desk.cfg)
    _ref, issued, _req = issue_one(desk, tmp_path, "b64")
    files = issued.files()
    for name in ("sign.cer", "env.cer"):
        der = base64_text(files[name])
        assert x509.Certificate.load(der).subject.native["organization_name"] == ORG
    assert files["envprivatekey"][0] == 0x30  # the envelope stays DER unless told


# -- 3. revocation ------------------------------------------------------------------------------
def test_revocation_result_with_the_notice_goes_to_the_forms_address(desk, tmp_path) -> None:
    init_ca(desk.cfg)
    _ref, issued, _req = issue_one(desk, tmp_path, "torevoke")
    files = issued.files()
    sign, enc = (x509.Certificate.load(files[n]) for n in ("sign.cer", "env.cer"))
    desk.deliver(revocation(ORG, cert_der=files["sign.cer"], serial=f"{sign.serial_number:X}",
                            message_id="<revoke@example.com.cn>", email="revoke@example.cn"))
    desk.run()
    case = desk.case_of("<revoke@example.com.cn>")
    assert (case.kind, case.state) == ("revoke", "awaiting_confirmation")
    ack = only(desk.mails())
    assert ack.rcpt == [APPLICANT] and "注销" in ack.text
    desk.approve(case.ref)
    desk.run()
    revoked = only(desk.mails())
    assert revoked.rcpt == [revoked.header("To")] == ["revoke@example.cn"]
    assert TAG.findall(revoked.subject) == [case.ref]
    assert revoked.header("Auto-Submitted") == "auto-replied"
    assert list(revoked.files()) == [NOTICE_PDF]
    assert [f for _n, f in names_compat32(revoked.raw)] == [NOTICE_PDF]
    text = pdf_text(revoked.files()[NOTICE_PDF]).replace(" ", "").upper()
    for cert in (sign, enc):
        assert f"{cert.serial_number:X}" in text
        assert f"{cert.serial_number:X}" in revoked.text.replace(" ", "").upper()
    assert desk.case_of("<revoke@example.com.cn>").state == "delivered"
    assert templates(desk, OutboxMessage.case_id == case.id) == ["acknowledgement", "revoked"]


# -- 4. loop safety -----------------------------------------------------------------------------
def null_return_path(raw: bytes) -> bytes:
    head, sep, rest = raw.partition(b"\r\n")
    assert head.startswith(b"Return-Path:")
    return b"Return-Path: <>" + sep + rest


def test_automatic_mail_bounces_null_senders_and_our_own_address_get_no_mail(
        desk, tmp_path) -> None:
    req = sm2_request(tmp_path, "loop")
    ours = f"厦门邮件中心 <{OUR_ADDRESS}>"
    desk.deliver(plain("自动回复: 休假", "我正在休假。", message_id="<auto.1@example.com.cn>",
                       headers=[("Auto-Submitted", "auto-replied")]))
    desk.deliver(plain("Automatic reply: hello", "I am out of the office.",
                       message_id="<auto.2@example.com.cn>", headers=[("X-Autoreply", "yes")]))
    # a bounce from MAILER-DAEMON (multipart/report, no Auto-Submitted) of some other mail
    desk.deliver(bounce(plain("你好", "一封普通邮件", message_id="<orig.1@example.com.cn>"),
                        auto_submitted=False))
    # a person-looking mail with a null Return-Path, and an application with one
    desk.deliver(null_return_path(plain("请问办公时间", "请问几点上班？",
                                        message_id="<null.1@example.com.cn>")))
    desk.deliver(null_return_path(application(ORG, csr_pem=req.csr_pem,
                                              message_id="<null.app@example.com.cn>")))
    # mail from our own address: unrelated, and an application
    desk.deliver(plain("测试", "自己发给自己", from_addr=ours, message_id="<own.1@189.cn>"))
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "own").csr_pem, sender=ours,
                             message_id="<own.app@189.cn>"))
    report = desk.run()
    assert report.processing.processed == 7
    assert desk.mails() == []
    # (intake takes a null Return-Path for a bounce); the application from our own address
    # opened its case all the same, and its acknowledgement was stopped when it was queued
    assert desk.case_of("<own.app@189.cn>").state == "awaiting_confirmation"
    rows = desk.outbox()
    assert sorted(r.template for r in rows) == ["acknowledgement", "unrelated"]
    assert all(r.state == SUPPRESSED and "our own address" in (r.last_error or "") for r in rows)
    desk.run()
    assert desk.mails() == []


def test_unrelated_mail_from_a_person_gets_one_short_notice_a_day(desk, frozen_clock) -> None:
    desk.deliver(plain("请问办公时间", "请问服务大厅几点上班？", message_id="<q.1@example.com.cn>"))
    desk.run()
    notice = only(desk.mails())
    assert notice.rcpt == ["wangwu@example.com.cn"]
    assert not TAG.search(notice.subject)
    assert notice.header("In-Reply-To") == "<q.1@example.com.cn>"
    assert notice.header("Auto-Submitted") == "auto-replied"
    for body in (notice.text, notice.html):
        assert HOTLINE in body and OUR_ADDRESS in body and "数字证书申办" in body
    # a second unrelated mail the same (Beijing) day: nothing
    desk.deliver(plain("再问一下", "周六上班吗？", message_id="<q.2@example.com.cn>"))
    desk.run()
    assert desk.mails() == []
    # still the same day at 23:50 Beijing time: nothing
    local = frozen_clock().astimezone(clock.SHANGHAI)
    frozen_clock.advance(hours=23 - local.hour, minutes=50 - local.minute)
    desk.deliver(plain("还想问", "周日呢？", message_id="<q.3@example.com.cn>"))
    desk.run()
    assert desk.mails() == []
    # 00:10 the next day in Beijing (still the same day in UTC): one notice again
    frozen_clock.advance(minutes=20)
    at = frozen_clock()
    assert at.astimezone(clock.SHANGHAI).hour == 0 and at.astimezone(clock.SHANGHAI).date() > at.date()
    desk.deliver(plain("又来问", "节假日呢？", message_id="<q.4@example.com.cn>"))
    desk.run()
    again = only(desk.mails())
    assert again.rcpt == ["wangwu@example.com.cn"]
    assert again.header("In-Reply-To") == "<q.4@example.com.cn>"


def test_list_and_spam_marked_unrelated_mail_get_no_notice(desk) -> None:
    desk.deliver(plain("[通知] 本周例会", "各位：例会改期。", message_id="<list.1@example.com.cn>",
                       headers=[("List-Id", "同事 <staff.lists.example.com.cn>")]))
    desk.deliver(plain("发票代开", "优惠代开发票", message_id="<spam.1@example.com.cn>",
                       from_addr="推广 <ad@spam.example.com>",
                       headers=[("X-Spam-Flag", "YES")]))
    report = desk.run()
    assert report.processing.processed == 2
    assert desk.mails() == []
    assert desk.outbox() == []


def test_daily_cap_suppresses_the_third_answer_but_not_the_issued_result(desk, tmp_path) -> None:
    desk.configure(daily_cap=2)
    init_ca(desk.cfg)
    me = f"张三 <{FORM_ADDRESS}>"  # the sender is the form's address: results count there too
    req = sm2_request(tmp_path, "cap")
    desk.deliver(application(ORG, csr_pem=req.csr_pem, sender=me, message_id="<cap.1@x.cn>"))
    desk.run()
    assert only(desk.mails()).rcpt == [FORM_ADDRESS]
    for n in (2, 3):
        desk.deliver(application(ORG, csr_pem=None, sender=me, message_id=f"<cap.{n}@x.cn>"))
    desk.run()
    assert only(desk.mails()).rcpt == [FORM_ADDRESS]  # the second answer; the third: none
    st = desk.status()["outbox"]
    assert st["states"] == {SENT: 2, SUPPRESSED: 1}
    [suppressed] = desk.outbox(OutboxMessage.state == SUPPRESSED)
    assert "daily cap of 2" in (suppressed.last_error or "")
    # the certificates go out whatever the cap says
    desk.approve(desk.case_of("<cap.1@x.cn>").ref)
    desk.run()
    issued = only(desk.mails())
    assert issued.rcpt == [FORM_ADDRESS] and "envprivatekey" in issued.files()
    assert desk.status()["outbox"]["states"] == {SENT: 3, SUPPRESSED: 1}


# -- 5. SMTP: temporary and permanent failures, the server down, never twice -------------------
STAFF = "staff@xmport.example.cn"


def section(text: str, title: str) -> str:
    """One numbered section of the digest's text part, up to the next one."""
    start = text.index(title)
    ends = [text.find(mark, start + 1) for mark in ("\n一、", "\n二、", "\n三、", "\n四、", "\n五、",
                                                    "\n六、", "\n——")]
    return text[start:min(e for e in ends if e > start)]


def test_temporary_failure_then_success_on_a_later_run(desk, smtp, frozen_clock,
                                                       tmp_path) -> None:
    smtp.fail_next(1, "451 4.3.0 Try again later", at="DATA")
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "t").csr_pem,
                             message_id="<temp@example.com.cn>"))
    desk.run()  # a temporary failure is no failure of the run
    assert desk.mails() == []
    [row] = desk.outbox()
    assert (row.state, row.attempts) == (QUEUED, 1) and "451" in (row.last_error or "")
    assert desk.status()["outbox"]["states"] == {QUEUED: 1}
    desk.run()  # the backoff has not passed: not tried again
    assert desk.mails() == [] and desk.outbox()[0].attempts == 1
    frozen_clock.advance(seconds=desk.cfg.outbox.backoff_seconds + 1)
    desk.run()
    ack = only(desk.mails())
    [row] = desk.outbox()
    assert (row.state, row.attempts, row.last_error) == (SENT, 2, None)
    assert ack.header("Message-ID") == row.message_id and ack.raw == row.raw  # rendered once
    frozen_clock.advance(days=1)
    desk.run()
    assert desk.mails() == []


def test_permanent_failure_is_failed_in_status_and_told_in_the_staff_digest(
        desk, smtp, frozen_clock, tmp_path) -> None:
    desk.configure(staff_addresses=[STAFF], digest_hour=8)
    assert frozen_clock().astimezone(clock.SHANGHAI).hour >= 8  # past the digest hour
    smtp.refuse(APPLICANT, "550 5.1.1 No such user here")
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "p").csr_pem,
                             message_id="<perm@example.com.cn>"))
    desk.run()  # a permanent failure is no failure of the run either
    ref = desk.case_of("<perm@example.com.cn>").ref
    assert desk.mails() == []
    [failed] = desk.status()["outbox"]["failed"]
    assert (failed["ref"], failed["template"], failed["to"]) == (ref, "acknowledgement",
                                                                  [APPLICANT])
    assert "550" in failed["error"] and failed["attempts"] == 1
    code, out = desk.cli("status")
    assert code == 0 and "failed / 发送失败" in out and ref in out and APPLICANT in out
    desk.run()  # the digest queued after the failure goes out now; the failed mail does not
    digest = only(desk.mails())
    assert digest.rcpt == [STAFF] and not TAG.search(digest.subject)
    told = section(digest.text, "五、发送失败的邮件")
    assert "（1）" in told and ref in told and APPLICANT in told and "550" in told
    # told once: tomorrow's digest does not list it again, and it is never retried
    frozen_clock.advance(days=1)
    desk.run()
    desk.run()
    tomorrow = only(desk.mails())
    assert tomorrow.rcpt == [STAFF]
    assert "（0）" in section(tomorrow.text, "五、发送失败的邮件")
    assert [r.state for r in desk.outbox(OutboxMessage.template == "acknowledgement")] == [FAILED]


def test_smtp_down_fails_the_run_and_the_mail_goes_out_once_it_is_back(
        desk, smtp, frozen_clock, tmp_path) -> None:
    smtp.stop()
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "d").csr_pem,
                             message_id="<down@example.com.cn>"))
    code, out = desk.cli("run", "--once")
    assert code == 1, out
    assert "cases opened 1" in out  # the mail was handled all the same
    [row] = desk.outbox()
    assert row.state == QUEUED and row.attempts == 1
    smtp.start()
    frozen_clock.advance(seconds=desk.cfg.outbox.backoff_seconds + 1)
    code, out = desk.cli("run", "--once")
    assert code == 0, out
    assert "sent 1" in out
    ack = only(desk.mails())
    assert ack.rcpt == [APPLICANT] and ack.header("Message-ID") == row.message_id
    assert desk.status()["outbox"]["states"] == {SENT: 1}


def test_accepted_mail_is_never_sent_again_across_runs(desk, smtp, frozen_clock,
                                                       tmp_path) -> None:
    busy = {"left": 1}

    def hook(stage: str, _envelope: object, address: str | None) -> str | None:
        if stage == "RCPT" and address == "lisi@example.com.cn" and busy["left"]:
            busy["left"] -= 1
            return "452 4.2.2 Mailbox busy, try later"
        return None

    smtp.hook = hook
    for n, sender in enumerate(("张三 <zhangsan@example.com.cn>", "李四 <lisi@example.com.cn>",
                                "王五 <wangwu@example.com.cn>")):
        desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, f"n{n}").csr_pem,
                                 sender=sender, message_id=f"<never.{n}@example.com.cn>"))
    desk.run()
    first = desk.mails()
    assert sorted(m.rcpt[0] for m in first) == ["wangwu@example.com.cn", APPLICANT]
    for step in ({"seconds": 61}, {"minutes": 15}, {"hours": 2}, {"days": 1}):
        frozen_clock.advance(**step)
        desk.run()
    assert [m.rcpt for m in desk.mails()] == [["lisi@example.com.cn"]]  # only the deferred one
    assert Counter(d.message_id for d in smtp.deliveries) == Counter(
        r.message_id for r in desk.outbox())  # three rows, each accepted exactly once
    assert {r.state for r in desk.outbox()} == {SENT}


# -- 7. a bounce of one of our replies -----------------------------------------------------------
def test_bounce_of_our_reply_joins_its_case_and_is_in_the_staff_digest(
        desk, smtp, frozen_clock, tmp_path) -> None:
    desk.configure(staff_addresses=[STAFF], digest_hour=8)
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "bb").csr_pem,
                             message_id="<bounced@example.com.cn>"))
    desk.run()
    case = desk.case_of("<bounced@example.com.cn>")
    ack = only(desk.mails())  # today's digest is queued after it, sent by the next run
    assert ack.rcpt == [APPLICANT]
    # the applicant's server returns our acknowledgement (a DSN quoting it whole)
    desk.deliver(bounce(ack.raw))
    desk.run()
    assert [m.rcpt for m in desk.mails()] == [[STAFF]]  # today's digest; nothing to the bounce
    with desk.sessions() as s:
        kind, case_id, reason = s.execute(
            select(MessageRow.kind, MessageRow.case_id, MessageRow.no_reply_reason)
            .where(MessageRow.message_id == "<dsn.20260105093100@189.cn>")).one()
        audit = list(s.scalars(select(AuditEntry.action).where(AuditEntry.case_id == case.id)))
    assert (kind, case_id, reason) == ("bounce", case.id, "bounce")
    assert "bounce" in audit
    assert desk.case_of("<bounced@example.com.cn>").state == case.state  # state unchanged
    # the next morning's digest tells staff
    local = frozen_clock().astimezone(clock.SHANGHAI)
    frozen_clock.advance(hours=24 - local.hour + 8, minutes=30 - local.minute)
    assert frozen_clock().astimezone(clock.SHANGHAI).hour == 8
    desk.run()
    desk.run()
    digest = only(desk.mails())
    assert digest.rcpt == [STAFF]
    told = section(digest.text, "六、退信")
    assert "（1）" in told and case.ref in told and "MAILER-DAEMON@189.cn" in told
    assert case.ref in section(digest.text, "二、等待工作人员处理")


# -- replies, rejection, expiry ---------------------------------------------------------------
def test_a_reply_bringing_the_missing_scan_gets_one_acknowledgement(desk, tmp_path) -> None:
    req = sm2_request(tmp_path, "r")
    desk.deliver(application(ORG, csr_pem=req.csr_pem, message_id="<first@example.com.cn>",
                             drop=("经办人身份证.jpg",)))
    desk.run()
    notice = only(desk.mails())
    case = desk.case_of("<first@example.com.cn>")
    assert case.state == "incomplete" and "缺少经办人身份证明复印件" in notice.text
    ours = notice.header("Message-ID")
    desk.deliver(build(Mail(subject=f"回复：{notice.subject}", message_id="<second@example.com.cn>",
                            in_reply_to=ours, references=f"<first@example.com.cn> {ours}",
                            attachments=[Att("经办人身份证.jpg", jpeg(650, b"handler"),
                                             "image/jpeg")])))
    desk.run()
    assert desk.case_of("<second@example.com.cn>").id == case.id  # the reply joined the case
    assert desk.case_of("<first@example.com.cn>").state == "awaiting_confirmation"
    ack = only(desk.mails())
    assert ack.rcpt == [APPLICANT] and TAG.findall(ack.subject) == [case.ref]
    assert ack.header("In-Reply-To") == "<second@example.com.cn>"  # answers the reply
    assert "补正" not in ack.text and HOTLINE in ack.text
    assert templates(desk, OutboxMessage.case_id == case.id) == ["incomplete", "acknowledgement"]


def test_an_application_a_filter_marked_as_spam_is_answered_all_the_same(desk, tmp_path) -> None:
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "s").csr_pem,
                             message_id="<spammy@example.com.cn>",
                             headers=[("X-Spam-Flag", "YES"), ("List-Id", "<x.example.com.cn>")]))
    desk.run()
    ack = only(desk.mails())
    assert ack.rcpt == [APPLICANT] and ack.header("In-Reply-To") == "<spammy@example.com.cn>"


def test_rejection_and_expiry_are_told_to_the_sender(desk, frozen_clock, tmp_path) -> None:
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "rj").csr_pem,
                             message_id="<rej@example.com.cn>"))
    desk.deliver(application(ORG, csr_pem=None, sender="李四 <lisi@example.com.cn>",
                             message_id="<exp@example.com.cn>"))
    desk.run()
    assert len(desk.mails()) == 2
    rejected = desk.case_of("<rej@example.com.cn>")
    code, out = desk.cli("cases", "reject", rejected.ref, "--by", "张三",
                         "--reason", "营业执照复印件未加盖公章")
    assert code == 0, out
    desk.run()
    mail = only(desk.mails())
    assert mail.rcpt == [APPLICANT] and TAG.findall(mail.subject) == [rejected.ref]
    assert "营业执照复印件未加盖公章" in mail.text and "营业执照复印件未加盖公章" in mail.html
    frozen_clock.advance(days=desk.cfg.cases.incomplete_expiry_days + 1)
    desk.run()  # expiry is a due job, after the outbox: its notice goes out on the next run
    expired = desk.case_of("<exp@example.com.cn>")
    assert expired.state == "expired"
    desk.run()
    mail = only(desk.mails())
    assert mail.rcpt == ["lisi@example.com.cn"] and TAG.findall(mail.subject) == [expired.ref]
    assert mail.header("In-Reply-To") == "<exp@example.com.cn>"
    assert "数字证书申请文件" in mail.text  # what was still missing


def test_the_case_is_delivered_only_once_the_server_took_the_certificates(
        desk, smtp, frozen_clock, tmp_path) -> None:
    init_ca(desk.cfg)
    req = sm2_request(tmp_path, "dl")
    desk.deliver(application(ORG, csr_pem=req.csr_pem, message_id="<dl@example.com.cn>"))
    desk.run()
    assert only(desk.mails()).rcpt == [APPLICANT]
    desk.approve(desk.case_of("<dl@example.com.cn>").ref)
    smtp.fail_next(1, "421 4.7.0 Too many connections, try later", at="MAIL")
    desk.run()
    assert desk.mails() == []
    assert desk.case_of("<dl@example.com.cn>").state == "issued"  # issued, not yet delivered
    frozen_clock.advance(seconds=desk.cfg.outbox.backoff_seconds + 1)
    desk.run()
    issued = only(desk.mails())
    assert issued.rcpt == [FORM_ADDRESS] and "sign.cer" in issued.files()
    assert desk.case_of("<dl@example.com.cn>").state == "delivered"


def test_our_own_mail_coming_back_without_auto_submitted_is_not_answered(desk, tmp_path) -> None:
    desk.deliver(application(ORG, csr_pem=sm2_request(tmp_path, "lp").csr_pem,
                             message_id="<lp@example.com.cn>"))
    desk.run()
    ack = only(desk.mails())
    # a redirect on the applicant's side (a forwarding rule, a resender) sends our own
    # acknowledgement back: its Message-ID and our X-Mailbot-Loop kept, From rewritten,
    # Auto-Submitted and X-Auto-Response-Suppress dropped
    lines = [line for line in ack.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")]
    kept = [b"From: zhangsan@example.com.cn" if line.startswith(b"From:") else line
            for line in lines if not line.startswith((b"Auto-Submitted:",
                                                       b"X-Auto-Response-Suppress:"))]
    assert any(line.startswith(b"X-Mailbot-Loop: ") for line in kept)
    desk.deliver(b"\r\n".join(kept) + b"\r\n\r\n" + ack.raw.split(b"\r\n\r\n", 1)[1])
    desk.run()
    assert desk.mails() == []
