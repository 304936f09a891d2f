"""The daemon end to end, as an operator runs it (issue 11, Tests): Dovecot and aiosmtpd,
`python3 -m mailbot.cli --config FILE run` as a subprocess, the file naming only
`[mailbox] url`, `[smtp] url` and `[database] url` (tests/support/e2e.py).

1. An application APPENDed to INBOX is acknowledged (the acknowledgement arrives at aiosmtpd
   and a copy of it lands in 已发送); the red flag alone, set on the mail in 已处理 by another
   IMAP client as staff would, approves it ("confirmed by phone and approved"); the
   certificates arrive at the form's 邮件地址, verify with OpenSSL, and the envelope opens
   with the applicant's key; a revocation produces a CRL listing both serials (OpenSSL prints
   it; `mailbot ca crl --verify` checks its SM2 signature).
2. Bad input through the whole daemon: malformed, hostile and automatic mail mixed with good
   applications in one inbox: the good ones are acknowledged and their cases opened, the bad
   ones recorded and answered (automatic mail: not), and the daemon keeps serving.

On SQLite and, with MAILBOT_TEST_DATABASE_URL, PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import pem, x509

from tests.support import replies as replies_support
from tests.support.e2e import PROCESSED, Desk, wait_until
from tests.support.mailbuilders import (
    Att,
    Mail,
    bounce,
    build,
    make_rsa_csr,
    make_sm2,
    pdf,
    plain,
    zip_bomb,
)
from tests.support.pki_issue import assert_envelope_opens_with_openssl, openssl
from tests.support.replies import (
    NOTICE_PDF,
    application,
    form_fields,
    materials,
    parse,
    revocation,
)

pytestmark = pytest.mark.timeout(240)

ORG = "厦门端到端测试科技有限公司"
APPLICANT = "zhangsan@example.com.cn"  # the builders' sender
FORM_ADDRESS = "cert@example.cn"  # the form's 邮件地址
TAG = re.compile(r"\[(XM-\d{4}-\d{4})\]")

smtp_module = replies_support.smtp_module  # fixtures (an argument would shadow an import)
smtp = replies_support.smtp


@pytest.fixture
def desk(tmp_path, db_url, dovecot_user, smtp):
    d = Desk(tmp_path / "site", db_url, dovecot_user, smtp)
    yield d
    d.close()


class Pair:
    """What assert_envelope_opens_with_openssl reads: the envelope and env.cer."""

    def __init__(self, envelope: bytes, enc_cert: bytes) -> None:
        self.envelope, self.enc_cert = envelope, enc_cert


def mails_to(smtp, address: str) -> list:
    return [parse(d) for d in smtp.deliveries if address in d.rcpt_tos]


def crl_serials(tmp: Path, crl_der: bytes) -> set[str]:
    """The serials OpenSSL reads in the CRL (it prints SM2 CRLs, though it cannot check them)."""
    (tmp / "ca.crl").write_bytes(crl_der)
    text = openssl("crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text",
                   cwd=tmp).stdout.decode()
    return {s.upper() for s in re.findall(r"Serial Number:\s*([0-9A-Fa-f]+)", text)}


def verify_with_openssl(tmp: Path, ca_pem: Path, *ders: bytes) -> None:
    for n, der in enumerate(ders):
        (tmp / f"c{n}.pem").write_bytes(pem.armor("CERTIFICATE", der))
        res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", str(ca_pem),
                      f"c{n}.pem", cwd=tmp)
        assert res.stdout.decode().strip() == f"c{n}.pem: OK"


def test_application_acknowledged_flag_approves_certificates_delivered_and_revoked(
        desk, dovecot_user, smtp, tmp_path) -> None:
    req = make_sm2(tmp_path / "applicant", ORG)
    key = tmp_path / "applicant" / "k.pem"
    mid = "<e2e.new@example.com.cn>"
    dovecot_user.append(application(ORG, csr_pem=req.csr_pem, message_id=mid,
                                    email=FORM_ADDRESS))
    with desk.running() as daemon:
        def waiting(what, check, timeout=60):
            return wait_until(check, timeout=timeout, what=what, alive=daemon,
                              log=desk.daemon_log)

        # 1. acknowledged, and the acknowledgement copied to 已发送
        [ack] = waiting("the acknowledgement", lambda: mails_to(smtp, APPLICANT))
        case = desk.case_of(mid)
        assert case is not None and case.state == "awaiting_confirmation"
        assert TAG.findall(ack.subject) == [case.ref]
        assert ack.header("In-Reply-To") == mid
        waiting("the Sent copy", lambda: ack.header("Message-ID") in desk.sent_copies())
        assert dovecot_user.uids("INBOX") == [] and len(dovecot_user.uids(PROCESSED)) == 1

        # 2. staff: the phone call made, the red flag set in their own client on the mail in
        # 已处理 -- nothing else (no `mailbot cases` command)
        desk.flag(mid)
        [issued] = waiting("the certificates", lambda: mails_to(smtp, FORM_ADDRESS))
        assert issued.rcpt == [FORM_ADDRESS] and TAG.findall(issued.subject) == [case.ref]
        files = issued.files()
        assert list(files) == ["sign.cer", "env.cer", "envprivatekey", NOTICE_PDF]
        ca_pem = desk.var / "ca" / "ca.pem"
        verify_with_openssl(tmp_path, ca_pem, files["sign.cer"], files["env.cer"])
        (tmp_path / "s.pem").write_bytes(pem.armor("CERTIFICATE", files["sign.cer"]))
        assert openssl("x509", "-in", "s.pem", "-noout", "-pubkey", cwd=tmp_path).stdout == \
            openssl("pkey", "-in", str(key), "-pubout").stdout  # the applicant's own key
        assert_envelope_opens_with_openssl(Pair(files["envprivatekey"], files["env.cer"]), key,
                                           tmp_path / "applicant")
        waiting("delivered", lambda: desk.case_of(mid).state == "delivered")
        shown = desk.cli("cases", "show", case.ref, "--json")
        assert shown.code == 0, shown.err
        [approval] = [a for a in json.loads(shown.out)["audit"] if a["to"] == "approved"]
        assert (approval["actor"], approval["via"]) == ("mailbox", "mailbox")  # the flag
        sign, enc = (x509.Certificate.load(files[n]) for n in ("sign.cer", "env.cer"))

        # 3. the revocation of that certificate: acknowledged, flagged, revoked, CRL published
        rid = "<e2e.revoke@example.com.cn>"
        dovecot_user.append(revocation(ORG, cert_der=files["sign.cer"],
                                       serial=f"{sign.serial_number:X}", message_id=rid,
                                       email=FORM_ADDRESS))
        waiting("the revocation's acknowledgement",
                lambda: len(mails_to(smtp, APPLICANT)) == 2)
        revoke_case = desk.case_of(rid)
        assert revoke_case is not None and revoke_case.state == "awaiting_confirmation"
        desk.flag(rid)
        waiting("the revocation result", lambda: len(mails_to(smtp, FORM_ADDRESS)) == 2)
        waiting("revocation delivered", lambda: desk.case_of(rid).state == "delivered")
    assert daemon.returncode == 0, desk.daemon_log()
    assert "stopped cleanly" in desk.daemon_log()

    crl = (desk.var / "ca" / "ca.crl").read_bytes()
    assert crl_serials(tmp_path, crl) == {f"{sign.serial_number:X}", f"{enc.serial_number:X}"}
    checked = desk.cli("ca", "crl", "--verify", str(desk.var / "ca" / "ca.crl"))
    assert checked.code == 0, checked.out + checked.err
    # every mail once, and each in 已发送 once
    sent = [d.message_id for d in smtp.deliveries]
    assert len(sent) == 4 and Counter(sent).most_common(1)[0][1] == 1
    assert sorted(desk.sent_copies()) == sorted(sent)


# -- bad input through the whole daemon ------------------------------------------------------------


def wrong_charsets(sender: str, message_id: str) -> bytes:
    """Labels that lie: a GBK subject declared UTF-8, a GBK body declared us-ascii, raw 8-bit
    GB18030 in the From name, and a part in a charset that does not exist."""
    subject = "厦门字符集有限公司+数字证书申办".encode("gbk")
    return b"\r\n".join([
        b"From: " + "错误编码".encode("gb18030") + f" <{sender}>".encode(),
        b"To: xmport@189.cn",
        b"Subject: =?utf-8?B?" + base64.b64encode(subject) + b"?=",
        f"Message-ID: {message_id}".encode(),
        b"Date: Mon, 30 Nov 2026 09:30:00 +0800",
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="cs"',
        b"",
        b"--cs",
        b'Content-Type: text/plain; charset="us-ascii"',
        b"Content-Transfer-Encoding: 8bit",
        b"",
        "您好，附件为申请材料。".encode("gbk"),
        b"--cs",
        b'Content-Type: text/plain; charset="x-no-such-charset"',
        b"Content-Transfer-Encoding: quoted-printable",
        b"",
        b"=E4=BD=A0=ZZ=",
        b"--cs--",
        b""])


def malformed(sender: str, message_id: str) -> bytes:
    """An application whose MIME is broken: no closing boundary, base64 that is not, a part
    header cut off, a nested multipart without a boundary, NULs."""
    return b"\r\n".join([
        f"From: {sender}".encode(),
        b"To: xmport@189.cn",
        b"Subject: =?GBK?B?" + base64.b64encode("厦门坏格式有限公司+数字证书申办".encode("gbk"))
        + b"?=",
        f"Message-ID: {message_id}".encode(),
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="b1"',
        b"",
        b"--b1",
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        "附件见下。".encode(),
        b"--b1",
        b'Content-Type: application/pdf; name="=?GBK?B?!!!?="',
        b"Content-Transfer-Encoding: base64",
        b"",
        b"%%%% this is not base64 \x00\x00\xff ====",
        b"--b1",
        b"Content-Type: multipart/alternative",
        b"",
        b"--",
        b"--b1",
        b"Content-Type: application/octet-stream; name=server.csr",
        b"Content-Transfer-Encoding: base64",
        b"Content-Disp",
    ])


@dataclass
class Inbox:
    """What goes into the inbox: Message-ID -> (raw, sender, answered?)."""

    mails: dict[str, tuple[bytes, str, bool]]

    def add(self, mid: str, raw: bytes, sender: str, answered: bool) -> None:
        self.mails[mid] = (raw, sender, answered)


def test_bad_input_through_the_whole_daemon(desk, dovecot_user, smtp, tmp_path) -> None:
    """Malformed, hostile and automatic mail mixed with good applications in one inbox: the
    good ones are acknowledged (cases waiting for the call), every bad one is recorded and
    answered once (automatic mail: never), nothing escapes the archive, and the long-running
    daemon stays up and serves the next application."""
    good = {f"<good.{n}@example.com.cn>": (f"厦门良好{n}科技有限公司", f"good{n}@example.com.cn")
            for n in (1, 2, 3)}
    reqs = {mid: make_sm2(tmp_path / f"g{i}", org) for i, (mid, (org, _s)) in
            enumerate(good.items())}

    def good_mail(mid: str) -> bytes:
        org, sender = good[mid]
        return application(org, csr_pem=reqs[mid].csr_pem, message_id=mid,
                           sender=f"好 <{sender}>", email=f"cert.{sender}")

    inbox = Inbox({})
    first, second, third = good
    inbox.add(first, good_mail(first), good[first][1], True)
    inbox.add("<bad.mime@example.net>", malformed("bad1@example.net", "<bad.mime@example.net>"),
              "bad1@example.net", True)
    inbox.add("<bad.charset@example.net>",
              wrong_charsets("bad2@example.net", "<bad.charset@example.net>"),
              "bad2@example.net", True)
    hostile_org = "厦门恶意附件有限公司"
    inbox.add("<bad.zip@example.net>", build(Mail(
        subject=f"{hostile_org}+数字证书申办", from_addr="坏 <bad3@example.net>",
        message_id="<bad.zip@example.net>",
        attachments=materials(form_fields(hostile_org, "cert.bad3@example.net"))
        + [Att("材料.zip", zip_bomb(hostile_names=True), "application/zip", "ascii"),
           Att("../../../../tmp/mailbot-e2e-traversal.pdf", pdf(400), "application/pdf",
               "ascii"),
           Att("..\\..\\windows\\mailbot-e2e.csr", b"\x00" * 64, "application/pkcs10",
               "ascii")])), "bad3@example.net", True)
    rsa_org = "厦门RSA请求有限公司"
    inbox.add("<bad.rsa@example.net>", application(
        rsa_org, csr_pem=make_rsa_csr(tmp_path / "rsa", rsa_org),
        message_id="<bad.rsa@example.net>", sender="RSA <bad4@example.net>"),
        "bad4@example.net", True)
    inbox.add("<auto.1@example.net>", plain(
        "自动回复: 休假", "我正在休假。", message_id="<auto.1@example.net>",
        from_addr="休假 <away@example.net>", headers=[("Auto-Submitted", "auto-replied")]),
        "away@example.net", False)
    inbox.add("<auto.2@example.net>", plain(
        "Out of Office: 数字证书", "I am away.", message_id="<auto.2@example.net>",
        from_addr="Away <ooo@example.net>",
        headers=[("X-Autoreply", "yes"), ("Precedence", "auto_reply")]), "ooo@example.net",
        False)
    inbox.add("<dsn.20260105093100@189.cn>", bounce(good_mail(first)),
              "MAILER-DAEMON@189.cn", False)
    inbox.add(second, good_mail(second), good[second][1], True)
    for raw, _sender, _answered in inbox.mails.values():
        dovecot_user.append(raw)

    with desk.running() as daemon:
        def waiting(what, check, timeout=90):
            return wait_until(check, timeout=timeout, what=what, alive=daemon,
                              log=desk.daemon_log)

        answered = {s for _r, s, a in inbox.mails.values() if a}
        waiting("every answer", lambda: {d.rcpt_tos[0] for d in smtp.deliveries} >= answered)
        waiting("every mail recorded", lambda: len(
            [m for m in desk.messages() if m.status == "processed"]) == len(inbox.mails))
        # the daemon is still serving: one more application is acknowledged
        dovecot_user.append(good_mail(third))
        waiting("the next acknowledgement",
                lambda: any(good[third][1] in d.rcpt_tos for d in smtp.deliveries))
        assert daemon.poll() is None
    assert daemon.returncode == 0, desk.daemon_log()
    log = desk.daemon_log()
    assert "Traceback" not in log and "stopped cleanly" in log

    # every mail recorded once; nothing parked; the inbox empty
    messages = {m.message_id: m for m in desk.messages()}
    assert set(messages) == set(inbox.mails) | {third}
    assert {m.status for m in messages.values()} == {"processed"}
    assert dovecot_user.uids("INBOX") == []
    # the good ones: acknowledged, their cases waiting for the phone call
    for mid in good:
        case = desk.case_of(mid)
        assert case is not None and case.state == "awaiting_confirmation", (mid, case)
    # one answer per person, none to automatic mail
    to = Counter(d.rcpt_tos[0] for d in smtp.deliveries)
    assert set(to) == answered | {good[third][1]} and max(to.values()) == 1, to
    assert not {"away@example.net", "ooo@example.net", "MAILER-DAEMON@189.cn"} & set(to)
    sent = Counter(d.message_id for d in smtp.deliveries)
    assert max(sent.values()) == 1
    # the hostile application was read, not unpacked into the file system
    for escaped in ("/tmp/mailbot-e2e-escape.pdf", "/tmp/mailbot-e2e-traversal.pdf",
                    "/etc/mailbot-e2e-absolute.jpg"):
        assert not Path(escaped).exists()
    assert not list(tmp_path.rglob("*mailbot-e2e*"))
    # the bad applications: cases opened and told what to fix; automatic mail: kept as such
    templates = {d.rcpt_tos[0]: row.template for d in smtp.deliveries
                 for row in desk.outbox_rows() if row.message_id == d.message_id}
    for mid, (_raw, sender, answered) in inbox.mails.items():
        if mid in good:
            assert templates[sender] == "acknowledgement"
        elif answered:
            assert templates[sender] == "incomplete", mid
            assert desk.case_of(mid).state == "incomplete", mid
        else:
            assert messages[mid].kind in ("auto_reply", "bounce") and messages[mid].case_id is None
    codes = {mid: {f["code"] for f in (messages[mid].facts or {}).get("findings", [])}
             for mid in messages}
    assert "csr_not_sm2" in codes["<bad.rsa@example.net>"]
    assert "attachment_rejected" in codes["<bad.zip@example.net>"]
    rsa = [parse(d) for d in smtp.deliveries if "bad4@example.net" in d.rcpt_tos][0]
    assert "SM2" in rsa.text
