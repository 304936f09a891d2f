"""The reply path end to end (issue 10): applications in, the daemon once, mail out over real SMTP.

`ReplyDesk` is one configuration (a TOML file the CLI reads too), a Maildir or IMAP inbox, the
test database and an aiosmtpd server (tests/support/smtp.py). `run()` is one daemon cycle
in-process (so the frozen clock holds); `cli(...)` is `mailbot --config FILE ...` in-process
(exit code and stdout). `mails()` gives what the SMTP server accepted since the last call,
parsed. The fixtures `smtp_module` and `smtp` share one aiosmtpd per test module and check,
after each test, that no message was accepted twice.

Applications are built with tests/support/mailbuilders.py as real clients write them; the
form's values pass every rule (valid 机构代码 and 身份证 check characters, mobile numbers), so
a complete application waits for the phone call and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import mailbox
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailbot.app.daemon import CycleReport, Daemon
from mailbot.app.notices import app_sessions
from mailbot.cases import workflow
from mailbot.cases.models import Case
from mailbot.cli import main
from mailbot.config import Config
from mailbot.intake.models import Message as MessageRow
from mailbot.outbox.models import OutboxMessage
from mailbot.rules.validators import resident_id_check_digit
from tests.support.mailbuilders import Att, Mail, build, jpeg, make_form, pdf
from tests.support.smtp import Delivery, SmtpServer


# -- fixtures (a test module takes them with `smtp_module = replies.smtp_module`, ...) ----------
@pytest.fixture(scope="module")
def smtp_module() -> Iterator[SmtpServer]:
    """One aiosmtpd per test module; `smtp` hands it to each test running and empty."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_module: SmtpServer) -> Iterator[SmtpServer]:
    smtp_module.start()  # a test that stopped it may have failed before starting it again
    smtp_module.clear()
    yield smtp_module
    # Whatever the test did: no mail was ever accepted twice.
    twice = [m for m, n in Counter(d.message_id for d in smtp_module.deliveries).items() if n > 1]
    smtp_module.clear()
    assert not twice, f"accepted more than once: {twice}"

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
NOTICE_PDF = "中国电子口岸数字证书申请受理告知书.pdf"
HOTLINE = "0592-5653395"
OUR_ADDRESS = "xmport@189.cn"
ORG_CODE = "91350200MA2Y00000K"  # a valid GB 32100 check character, Xiamen region


def resident_id(first17: str) -> str:
    """An 18-digit 居民身份证 number with its GB 11643 (ISO 7064 MOD 11-2) check character."""
    return first17 + resident_id_check_digit(first17)


def form_fields(org: str, email: str, **changes: str) -> dict[str, str]:
    """《申请表》 values that pass every form rule."""
    return {"applicant_org": org, "org_code": ORG_CODE, "email": email,
            "legal_rep_name": "陈海天", "legal_rep_phone": "13805921234",
            "legal_rep_id_type": "居民身份证", "legal_rep_id_no": resident_id("35020319700101123"),
            "handler_name": "林小明", "handler_phone": "13905920000",
            "handler_id_type": "居民身份证", "handler_id_no": resident_id("35020319920202123"),
            "crypto_cert_no": "GM003312220230456", "common_name": org, **changes}


def materials(fields: dict[str, str], *, kind: str = "new") -> list[Att]:
    """The form and the scans (no request or certificate): what every application carries."""
    return [Att("中国电子口岸数字证书申请表.docx", make_form(fields, kind=kind), DOCX),
            Att("营业执照.pdf", pdf(900, b"licence"), "application/pdf"),
            Att("法定代表人身份证.jpg", jpeg(700, b"legal"), "image/jpeg"),
            Att("经办人身份证.jpg", jpeg(650, b"handler"), "image/jpeg"),
            Att("商用密码产品认证证书.pdf", pdf(800, b"gm"), "application/pdf")]


def application(org: str, *, csr_pem: bytes | None, message_id: str,
                sender: str = "张三 <zhangsan@example.com.cn>", email: str = "cert@example.cn",
                subject: str | None = None, headers: list[tuple[str, str]] | None = None,
                drop: tuple[str, ...] = ()) -> bytes:
    """A 新办 application as Foxmail writes it; `drop`: attachment file names left out."""
    atts = [a for a in materials(form_fields(org, email)) if a.filename not in drop]
    if csr_pem is not None:
        atts.append(Att("server.csr", csr_pem, "application/octet-stream", "ascii"))
    return build(Mail(subject=subject or f"{org}+数字证书申办", from_addr=sender,
                      attachments=atts, message_id=message_id, headers=headers or []))


def revocation(org: str, *, cert_der: bytes, serial: str, message_id: str,
               sender: str = "张三 <zhangsan@example.com.cn>",
               email: str = "cert@example.cn") -> bytes:
    """A 注销 application: the form (注销 ticked, the serial), the scans, the certificate."""
    f = form_fields(org, email, revoke_serial=serial, crypto_cert_no="", common_name="")
    atts = materials(f, kind="revoke")[:4]
    atts.append(Att("sign.cer", cert_der, "application/x-x509-ca-cert", "ascii"))
    return build(Mail(subject=f"{org}+数字证书注销", from_addr=sender, attachments=atts,
                      message_id=message_id))


# -- the configuration ----------------------------------------------------------------------------
SECTIONS = ("mailbox", "database", "paths", "intake", "smtp", "cases", "mailbox_staff", "outbox")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def write_full_config(path: Path, cfg: Config) -> Path:
    """Every key of the sections the reply path reads ([ca] left at its defaults)."""
    lines: list[str] = []
    for name in SECTIONS:
        section = getattr(cfg, name)
        assert is_dataclass(section)
        lines.append(f"[{name}]")
        lines += [f"{f.name} = {_toml(getattr(section, f.name))}" for f in fields(section)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- mail as the applicant's client reads it --------------------------------------------------------
@dataclass
class Sent:
    """One mail the SMTP server accepted, parsed."""

    delivery: Delivery
    msg: EmailMessage

    @property
    def raw(self) -> bytes:
        return self.delivery.data

    @property
    def rcpt(self) -> list[str]:
        return self.delivery.rcpt_tos

    @property
    def subject(self) -> str:
        return str(self.msg["Subject"])

    def header(self, name: str) -> str | None:
        value = self.msg[name]
        return None if value is None else str(value)

    @property
    def text(self) -> str:
        part = self.msg.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.msg.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    def files(self) -> dict[str, bytes]:
        """Attachment name -> bytes, as Python's email package (policy default) reads them."""
        out: dict[str, bytes] = {}
        for part in self.msg.iter_attachments():
            name = part.get_filename()
            assert name is not None
            out[name] = part.get_payload(decode=True)
        return out


def parse(delivery: Delivery) -> Sent:
    msg = BytesParser(policy=policy.default).parsebytes(delivery.data)
    assert isinstance(msg, EmailMessage)
    return Sent(delivery, msg)


def names_compat32(raw: bytes) -> list[tuple[str | None, str | None]]:
    """(Content-Type name, Content-Disposition filename) of each attachment, read the old way:
    compat32 and email.header for the RFC 2047 `name=`, get_filename for RFC 2231."""
    msg: Message = BytesParser().parsebytes(raw)  # compat32
    out = []
    for part in msg.walk():
        if part.get_content_disposition() != "attachment":
            continue
        name = part.get_param("name")
        if isinstance(name, tuple):  # an RFC 2231 value: not what this reader looks at
            name = None
        decoded = str(make_header(decode_header(name))) if name else None
        out.append((decoded, part.get_filename()))
    return out


def names_ripmime(raw: bytes, workdir: Path) -> dict[str, bytes] | None:
    """The files `ripmime` writes for the message (None when it is not installed)."""
    if shutil.which("ripmime") is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "mail.eml").write_bytes(raw)
    out = workdir / "out"
    out.mkdir()
    subprocess.run(["ripmime", "-i", str(workdir / "mail.eml"), "-d", str(out),
                    "--no-nameless", "--overwrite"], check=True, capture_output=True, timeout=60)
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def base64_text(data: bytes) -> bytes:
    """DER from a Base64 attachment (lines of text, no PEM armour)."""
    text = data.decode("ascii")
    assert "-----" not in text and set(text) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n")
    return base64.b64decode("".join(text.split()), validate=True)


# -- the desk ------------------------------------------------------------------------------------
class ReplyDesk:
    """A configuration, its inbox, the database and the SMTP server (module docstring)."""

    def __init__(self, tmp_path: Path, db_url: str, engine: Engine, smtp: SmtpServer, *,
                 mailbox_url: str = "maildir:mail", smtp_url: str | None = None,
                 **outbox: Any) -> None:
        from tests.support.intake import make_config

        self.tmp, self.engine, self.smtp = tmp_path, engine, smtp
        cfg = make_config(tmp_path, db_url, mailbox_url, workers=1)
        cfg.smtp.url = smtp_url or smtp.url()
        cfg.mailbox.our_address = cfg.smtp.from_address = OUR_ADDRESS
        self.config_path = tmp_path / "mailbot.toml"
        self.cfg = cfg
        self.configure(**outbox)
        self.maildir: mailbox.Maildir | None = None
        if mailbox_url.startswith("maildir:"):
            self.cfg.var_dir.mkdir(parents=True, exist_ok=True)
            self.maildir = mailbox.Maildir(str(self.cfg.var_path(mailbox_url[len("maildir:"):])),
                                           create=True)
        self._seen = 0

    def configure(self, **outbox: Any) -> None:
        """Set [outbox] keys, write the file and load it again (what the CLI reads)."""
        for key, value in outbox.items():
            setattr(self.cfg.outbox, key, value)
        write_full_config(self.config_path, self.cfg)
        self.cfg = Config.load(self.config_path)
        self.sessions = app_sessions(self.cfg, self.engine)

    # -- in and out --------------------------------------------------------------------------
    def deliver(self, raw: bytes) -> None:
        assert self.maildir is not None, "an IMAP desk: append to the Dovecot user"
        self.maildir.add(raw)

    def run(self, *, errors: bool = False) -> CycleReport:
        """One daemon cycle (`run --once` in-process); no job may fail unless `errors`."""
        report = Daemon(self.cfg, engine=self.engine, once=True).run_once()
        if not errors:
            assert report.errors == [], report.errors
        return report

    def cli(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--config", str(self.config_path), *args])
        return code, out.getvalue()

    def status(self) -> dict[str, Any]:
        code, out = self.cli("status", "--json")
        assert code == 0, out
        return json.loads(out)

    def mails(self) -> list[Sent]:
        """What the SMTP server accepted since the last call."""
        got = self.smtp.deliveries
        new, self._seen = got[self._seen:], len(got)
        return [parse(d) for d in new]

    # -- the database ------------------------------------------------------------------------
    def case_of(self, message_id: str) -> Case:
        with self.sessions() as s:
            case_id = s.scalar(select(MessageRow.case_id).where(
                MessageRow.message_id == message_id))
            assert case_id is not None, f"no case for {message_id}"
            case = s.get(Case, case_id)
            assert case is not None
            s.expunge(case)
            return case

    def outbox(self, *where: Any) -> list[OutboxMessage]:
        with self.sessions() as s:
            rows = list(s.scalars(select(OutboxMessage).where(*where).order_by(OutboxMessage.id)))
            s.expunge_all()
            return rows

    def approve(self, ref: str, by: str = "张三") -> None:
        """Staff: phone confirmation done, approved (the CLI, as staff type it)."""
        for action in ("confirm", "approve"):
            code, out = self.cli("cases", action, ref, "--by", by)
            assert code == 0, out

    def override_all(self, ref: str) -> None:
        with self.sessions() as s:
            case = workflow.case_for_update(s, ref)
            assert case is not None
            for code in sorted({f.code for f in workflow.blocking_findings(case)}):
                workflow.override(s, case, code, by="测试员", reason="seen on paper")
            s.commit()
