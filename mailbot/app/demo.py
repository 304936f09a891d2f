"""`mailbot demo`: the whole desk once, on the embedded defaults, in a folder of its own.

The sample applicants (demo_applicants.py) mail the Maildir inbox: one complete application,
one missing a material, one with an RSA request. The daemon runs as `mailbot run --once` does
(its first-start steps too: templates and font, folders, schema, the soft test CA); a staff
member confirms and approves the complete one through the workflow calls and the app's
sessions that `cases confirm` and `cases approve` use; the daemon issues and delivers. The
holder then mails a revocation of that certificate, staff approve it, and the daemon revokes
the pair and writes the CRL. The configuration is built here (the embedded defaults rooted in
the demo folder, written out as its mailbot.toml): never the operator's file or ./var.
"""

from __future__ import annotations

import mailbox
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from asn1crypto import x509
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailbot.app.daemon import CycleReport, Daemon
from mailbot.app.demo_applicants import (
    APPLICANTS,
    COMPLETE,
    MISSING,
    application_mail,
    revocation_mail,
)
from mailbot.app.notices import app_sessions
from mailbot.app.outbox_job import check_outbox, make_transport
from mailbot.app.workspace import init_workspace, prepare_ca, toml_value
from mailbot.cases import workflow
from mailbot.cases.models import AuditEntry, Case
from mailbot.cases.register import KIND_NAMES, STATE_LABELS
from mailbot.config import Config
from mailbot.db import make_engine
from mailbot.intake.models import Message
from mailbot.mailbox.url import maildir_path
from mailbot.outbox.context import NOTICE_FILENAME
from mailbot.outbox.models import SENT, OutboxMessage
from mailbot.outbox.sentences import load_sentences
from mailbot.outbox.transport import FileTransport, eml_name
from mailbot.pki.ca import ca_certificate
from mailbot.pki.crl import verify_crl
from mailbot.pki.models import IssuedCertificate

STAFF = "演示员"  # the staff member who confirms and approves, as `--by 演示员`
CONFIG_NAME = "mailbot.toml"
# The demo CA's key stays in clear (a test CA), never under the operator's passphrase.
PASSPHRASE_ENV = "MAILBOT_DEMO_CA_KEY_PASSPHRASE"
ISSUED_FILES = ("sign.cer", "env.cer", "envprivatekey", NOTICE_FILENAME)
TEMPLATE_NAMES = {"acknowledgement": "acknowledgement 受理回执", "incomplete": "incomplete 补正通知",
                  "issued": "issued 证书签发", "revoked": "revoked 注销结果"}


class DemoRefused(Exception):
    """The demo cannot start here (its folder is not new); one line for the terminal."""

    def __init__(self, message: str, zh: str) -> None:
        super().__init__(message)
        self.zh = zh


class DemoFailed(RuntimeError):
    """A step of the demo did not end as the desk should; the message says which."""


@dataclass
class CaseSummary:
    ref: str
    kind: str
    state: str
    company: str
    path: list[str]  # the states it went through, in order (its audit rows)
    applicant: str  # the slug of the demo applicant whose mail opened it


@dataclass
class MailSummary:
    ref: str
    template: str
    to: list[str]
    state: str
    path: Path | None  # the .eml the `file:` delivery wrote
    asks: list[str] = field(default_factory=list)  # an incomplete notice: what to fix


@dataclass
class DemoResult:
    folder: Path
    config_path: Path
    ca_made: str | None = None
    ca_cert_path: Path | None = None
    outbox_dir: Path | None = None
    cases: list[CaseSummary] = field(default_factory=list)
    mails: list[MailSummary] = field(default_factory=list)
    issued_dir: Path | None = None
    issued_files: dict[str, Path] = field(default_factory=dict)
    issued_serials: dict[str, str] = field(default_factory=dict)  # "sign"/"enc" -> hex
    revoked: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, serial, reason)
    crl_path: Path | None = None
    crl_serials: list[str] = field(default_factory=list)  # lower-case hex, as verify_crl reads
    crl_ok: bool = False
    seconds: float = 0.0

    def case(self, applicant: str, kind: str = "new") -> CaseSummary:
        return next(c for c in self.cases if c.applicant == applicant and c.kind == kind)


# -- the folder and the configuration ------------------------------------------------------------
def demo_folder(target: Path | None) -> Path:
    """A new temporary folder, or `target` when it does not exist yet or is empty."""
    if target is None:
        return Path(tempfile.mkdtemp(prefix="mailbot-demo-")).resolve()
    folder = target.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise DemoRefused(f"demo: {folder} exists and is not a folder; name a new one",
                          "演示目录名已被文件占用")
    if folder.is_dir() and any(folder.iterdir()):
        raise DemoRefused(f"demo: {folder} exists and is not empty; name a new or empty folder",
                          "演示目录已存在且不为空")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def demo_config(folder: Path) -> Config:
    """The embedded defaults rooted in the demo folder (never a file the operator named)."""
    cfg = Config()
    cfg.base_dir = str(folder)
    cfg.ca.key_passphrase_env = PASSPHRASE_ENV
    return cfg


def write_config_file(cfg: Config, folder: Path) -> Path:
    """mailbot.toml naming what the demo used, so `mailbot --config FILE …` finds it all."""
    path = folder / CONFIG_NAME
    path.write_text(
        "# Written by `mailbot demo`: the embedded defaults, under this folder.\n"
        f"[paths]\nvar_dir = {toml_value(cfg.paths.var_dir)}\n"
        f"[mailbox]\nurl = {toml_value(cfg.mailbox.url)}\n"
        f"[smtp]\nurl = {toml_value(cfg.smtp.url)}\n"
        f"[ca]\nkey_passphrase_env = {toml_value(cfg.ca.key_passphrase_env)}\n",
        encoding="utf-8")
    return path


# -- the desk ------------------------------------------------------------------------------------
class Desk:
    """The demo's workspace: drop mail, run the daemon once, act as staff, read the outcome."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.engine = make_engine(cfg.database_url)
        self.sessions: sessionmaker[Session] = app_sessions(cfg, self.engine)
        maildir = maildir_path(cfg)
        if maildir is None:
            raise DemoFailed(f"the demo needs a Maildir inbox, not {cfg.mailbox.url}")
        self.inbox = mailbox.Maildir(str(maildir), create=False)
        transport = make_transport(cfg)
        if not isinstance(transport, FileTransport):
            raise DemoFailed(f"the demo needs a file: outbox, not {cfg.smtp.url}")
        self.outbox_dir = transport.folder
        self.sent: dict[str, str] = {}  # Message-ID of each applicant's mail -> its slug

    def close(self) -> None:
        self.engine.dispose()

    def drop(self, raw: bytes, message_id: str, slug: str, keep: Path) -> None:
        keep.write_bytes(raw)  # the same bytes beside the applicant's files, for `inspect`
        self.inbox.add(raw)  # into new/, as a delivery agent puts it
        self.sent[message_id] = slug

    def run_once(self) -> CycleReport:
        """One `mailbot run --once`: every job once, mail first."""
        report = Daemon(self.cfg, once=True).run_once()
        if report.stopped:
            raise KeyboardInterrupt
        if report.errors:
            raise DemoFailed("run --once: " + "; ".join(report.errors))
        return report

    def staff_approves(self, ref: str, by: str = STAFF) -> None:
        """`cases confirm REF --by NAME`, then `cases approve REF --by NAME`: each one
        transaction on the app's sessions (which queue the mail), through the workflow."""
        policy_ = workflow.Policy.from_config(self.cfg.cases)
        for step in ("confirm", "approve"):
            with self.sessions() as s:
                case = workflow.case_for_update(s, ref)
                if case is None:
                    raise DemoFailed(f"no such case: {ref}")
                if step == "confirm":
                    workflow.confirm(s, case, by=by)
                else:
                    workflow.approve(s, case, by=by, policy=policy_)
                s.commit()

    def case_of(self, message_id: str) -> Case:
        with self.sessions() as s:
            case = s.scalars(select(Case).join(Message, Message.case_id == Case.id)
                             .where(Message.message_id == message_id)).first()
            if case is None:
                raise DemoFailed(f"the mail {message_id} opened no case")
            s.expunge(case)
            return case

    def eml_of(self, row: OutboxMessage) -> Path | None:
        return self.outbox_dir / eml_name(bytes(row.raw)) if row.state == SENT and row.raw \
            else None

    def delivered_file(self, ref: str, template: str) -> Path:
        """The .eml the `file:` delivery wrote for the case's mail of that template."""
        with self.sessions() as s:
            row = s.scalars(select(OutboxMessage).where(
                OutboxMessage.case_ref == ref, OutboxMessage.template == template)).first()
            path = self.eml_of(row) if row is not None else None
        if path is None or not path.is_file():
            raise DemoFailed(f"{ref}: no {template} mail was delivered")
        return path

    def collect(self, result: DemoResult) -> None:
        """Cases, mails and revoked certificates as the database has them now."""
        sentences = load_sentences(self.cfg.templates_dir)
        with self.sessions() as s:
            slugs = {m.case_id: self.sent[m.message_id] for m in s.scalars(select(Message))
                     if m.case_id is not None and m.message_id in self.sent}
            for case in s.scalars(select(Case).order_by(Case.id)):
                path = list(s.scalars(select(AuditEntry.to_state).where(
                    AuditEntry.case_id == case.id, AuditEntry.to_state.is_not(None))
                    .order_by(AuditEntry.id)))
                result.cases.append(CaseSummary(case.ref, case.kind, case.state,
                                                case.company or "", path,
                                                slugs.get(case.id, "")))
            for row in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)):
                # the sentences the notice itself says, from the findings it was rendered with
                asks = (sentences.to_fix((row.context or {}).get("findings") or [])
                        if row.template == "incomplete" else [])
                result.mails.append(MailSummary(row.case_ref or "-", row.template,
                                                list(row.to_addrs), row.state,
                                                self.eml_of(row), asks))
            for cert in s.scalars(select(IssuedCertificate).where(
                    IssuedCertificate.revoked_at.is_not(None)).order_by(IssuedCertificate.id)):
                result.revoked.append((cert.kind, cert.serial, cert.revocation_reason or ""))


def extract_issued(eml: Path, folder: Path) -> dict[str, Path]:
    """The issued mail's attachments saved as files, as the applicant saves them."""
    msg = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert isinstance(msg, EmailMessage)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for part in msg.iter_attachments():
        name = Path(part.get_filename() or "").name  # never a folder taken from the mail
        data = part.get_payload(decode=True)
        if name and isinstance(data, bytes):
            (folder / name).write_bytes(data)
            out[name] = folder / name
    missing = [n for n in ISSUED_FILES if n not in out]
    if missing:
        raise DemoFailed(f"the issued mail {eml} lacks {', '.join(missing)}")
    return out


def serial_of(der: bytes) -> str:
    """A certificate's serial as upper-case hex (what the form's 序号 carries)."""
    return f"{x509.Certificate.load(der).serial_number:X}"


# -- the run -------------------------------------------------------------------------------------
def run_demo(target: Path | None = None, *, say: Callable[[str], None] = print) -> DemoResult:
    """The whole demo in a new folder (module docstring); `say` gets a line per step."""
    started = time.monotonic()
    folder = demo_folder(target)
    cfg = demo_config(folder)
    result = DemoResult(folder, write_config_file(cfg, folder))
    say(f"demo folder / 演示目录: {folder}")
    # The first start of `mailbot run`: templates and font, folders, schema, soft test CA.
    check_outbox(cfg)
    init_workspace(cfg)
    result.ca_made = prepare_ca(cfg)
    result.ca_cert_path = cfg.var_path(cfg.ca.cert_path)
    if result.ca_made:
        say(f"  {result.ca_made} / 已创建测试 CA")
    people = folder / "applicants"
    desk = Desk(cfg)
    result.outbox_dir = desk.outbox_dir
    try:
        first: dict[str, str] = {}
        for who in APPLICANTS:
            raw, mid = application_mail(cfg, who, people / who.slug)
            desk.drop(raw, mid, who.slug, people / who.slug / "application.eml")
            first[who.slug] = mid
        say(f"1. {len(APPLICANTS)} applications mailed to the inbox / 申请邮件投入收件箱: "
            f"{maildir_path(cfg)}/new")
        opened = desk.run_once().processing.cases_opened
        say(f"2. run --once: {opened} cases opened and answered / 新建 {opened} 个案件并回复")

        ref = desk.case_of(first[COMPLETE.slug]).ref
        desk.staff_approves(ref)
        say(f"3. {STAFF} confirmed {ref} by phone and approved it / 电话确认并审核通过")
        desk.run_once()
        result.issued_dir = folder / "issued"
        result.issued_files = extract_issued(desk.delivered_file(ref, "issued"),
                                             result.issued_dir)
        sign_der = result.issued_files["sign.cer"].read_bytes()
        result.issued_serials = {"sign": serial_of(sign_der), "enc": serial_of(
            result.issued_files["env.cer"].read_bytes())}
        say(f"4. run --once: {ref} issued and mailed to {COMPLETE.form_email} / 已签发并发送")

        revoke_dir = people / f"{COMPLETE.slug}-revoke"
        raw, mid = revocation_mail(cfg, COMPLETE, sign_der, result.issued_serials["sign"],
                                   revoke_dir)
        desk.drop(raw, mid, COMPLETE.slug, revoke_dir / "revocation.eml")
        desk.run_once()
        revoke_ref = desk.case_of(mid).ref
        desk.staff_approves(revoke_ref)
        desk.run_once()
        say(f"5. the holder mailed a revocation ({revoke_ref}), {STAFF} approved it, run --once"
            " revoked the pair / 持有人申请注销, 审核通过, 已注销")
        desk.collect(result)
    finally:
        desk.close()
    result.crl_path = cfg.var_path(cfg.ca.crl_path)
    if result.crl_path.is_file():
        check = verify_crl(result.crl_path.read_bytes(), ca_certificate(cfg))
        result.crl_ok = check.ok
        result.crl_serials = [serial for serial, _at, _reason in check.revoked]
    result.seconds = time.monotonic() - started
    return result


# -- the printed summary -------------------------------------------------------------------------
def summary_lines(r: DemoResult) -> list[str]:
    """The short bilingual summary printed after the steps."""
    q = shlex.quote
    lines = ["", f"Cases / 案件 ({len(r.cases)}):"]
    for c in r.cases:
        lines.append(f"  {c.ref}  {c.kind:<6} {KIND_NAMES.get(c.kind, '')}  {c.state} "
                     f"{STATE_LABELS.get(c.state, '')}  {c.company}  ({' > '.join(c.path)})")
    lines += ["", f"Mail sent / 已发邮件, one .eml each in {r.outbox_dir}:"]
    for m in r.mails:
        lines.append(f"  {m.ref}  {TEMPLATE_NAMES.get(m.template, m.template)} -> "
                     f"{', '.join(m.to)}  {m.path.name if m.path else '[' + m.state + ']'}")
        lines += [f"      asks for / 要求补正: {text}" for text in m.asks]
    if r.issued_dir is not None:
        roles = {"sign.cer": "sign", "env.cer": "enc"}
        lines += ["", f"Issued / 已签发: the mail's attachments saved in {r.issued_dir}:"]
        lines += [f"  {name}" + (f"  serial {r.issued_serials[roles[name]]}" if name in roles
                                 else "") for name in r.issued_files]
    reasons = ", ".join(sorted({reason for _k, _s, reason in r.revoked}))
    lines += ["", "Revoked / 已注销: " + ("; ".join(f"{k} {s.upper()}" for k, s, _r in r.revoked)
                                          or "none / 无") + (f" ({reasons})" if reasons else "")]
    verdict = "signature OK / 签名有效" if r.crl_ok else "NOT verified / 未通过验证"
    lines.append(f"CRL / 证书撤销列表: {r.crl_path} ({len(r.crl_serials)} serials, {verdict})")
    lines.append(f"CA certificate / CA 证书: {r.ca_cert_path}")
    issued = r.issued_dir or r.folder / "issued"
    key = r.folder / "applicants" / COMPLETE.slug / "sign.key.pem"
    incomplete = r.folder / "applicants" / MISSING.slug / "application.eml"
    conf = f"mailbot --config {q(str(r.config_path))}"
    lines += ["", "Look further / 进一步查看:",
              f"  {conf} cases list",
              f"  {conf} cases show {r.cases[0].ref if r.cases else 'REF'}",
              f"  {conf} ca crl --verify {q(str(r.crl_path))}",
              f"  mailbot inspect {q(str(incomplete))}",
              f"  openssl verify -vfyopt distid:1234567812345678 -CAfile {q(str(r.ca_cert_path))}"
              f" {q(str(issued / 'sign.cer'))} {q(str(issued / 'env.cer'))}",
              f"  mailbot envelope open --key {q(str(key))} --cert {q(str(issued / 'env.cer'))}"
              f" --out enc.key.pem {q(str(issued / 'envprivatekey'))}",
              "", f"done in {r.seconds:.1f} s / 用时 {r.seconds:.1f} 秒"]
    return lines
