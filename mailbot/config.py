"""Configuration: a TOML file over embedded defaults; secrets may come from the environment."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the allowed forms."""


def shipped_dir(name: str) -> Path:
    """A data folder shipped with the package: "rules", "templates" or "migrations".

    Run from a source checkout (the package beside pyproject.toml), it is that checkout's own
    folder, whatever else is installed; otherwise the package data of the install
    (`mailbot._rules`, ...; see pyproject.toml), so a regular install works from any folder.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    try:
        folder = resources.files(f"mailbot._{name}")
    except ModuleNotFoundError as exc:
        raise ConfigError(f"mailbot's {name}/ folder is missing: install mailbot with pip"
                          " (pip install .)") from exc
    if not isinstance(folder, Path):  # a zipped install: Alembic and globbing need real files
        raise ConfigError(f"mailbot's {name}/ folder is not on the file system ({folder})")
    return folder


DEFAULT_RULES_DIR = shipped_dir("rules")
DEFAULT_TEMPLATES_DIR = shipped_dir("templates")

CA_SIGNERS = ("soft", "sdf")
SMTP_URL_FORMS = ("smtps://", "smtp://", "file:")
ENCODINGS = ("der", "base64")


@dataclass
class MailboxConfig:
    # maildir:PATH, imap://..., imaps://...; a relative maildir path is under paths.var_dir
    url: str = "maildir:mail"
    password_env: str = "MAILBOT_IMAP_PASSWORD"
    our_address: str = "xmport@189.cn"
    timeout_seconds: float = 60.0


@dataclass
class SmtpConfig:
    url: str = "file:outbox"
    password_env: str = "MAILBOT_SMTP_PASSWORD"
    from_address: str = "xmport@189.cn"
    message_id_domain: str = "189.cn"


@dataclass
class DatabaseConfig:
    url: str = ""  # empty: SQLite at paths.var_dir/mailbot.sqlite3
    password_env: str = "MAILBOT_DATABASE_PASSWORD"


@dataclass
class PathsConfig:
    var_dir: str = "var"
    archive_dir: str = ""  # empty: var_dir/archive


@dataclass
class IntakeConfig:
    max_message_bytes: int = 64 * 1024 * 1024
    processed_folder: str = "已处理"
    processed_keyword: str = "$MailbotProcessed"
    failed_folder: str = "处理失败"
    max_attempts: int = 3
    idle_renew_seconds: int = 540  # RFC 2177 asks for a renewal within 29 min; providers cut at ~10
    poll_seconds: int = 60
    sweep_seconds: int = 3600
    fetch_batch: int = 50  # messages per fetch and commit (and at most ~16 MB of them)
    workers: int = 0  # 0: one parse process per core
    analysis_timeout_seconds: int = 300  # one message's analysis; then its worker is stopped


@dataclass
class CaConfig:
    signer: str = "soft"  # soft | sdf
    key_path: str = "ca/ca.key.pem"
    key_passphrase_env: str = "MAILBOT_CA_KEY_PASSPHRASE"
    cert_path: str = "ca/ca.pem"
    chain_path: str = ""
    crl_path: str = "ca/ca.crl"
    crl_url: str = "http://xmport.example.cn/crl/ca.crl"
    crl_next_update_days: int = 7
    validity_years: int = 10
    subject: str = "C=CN,O=中国电子口岸数据中心,CN=mailbot SM2 test CA"
    sdf_library: str = ""
    sdf_key_index: int = 1
    sdf_password_env: str = "MAILBOT_SDF_PASSWORD"
    sdf_sm2_alg_id: int = 0x00020100


@dataclass
class CasesConfig:
    approvals_required: int = 1  # 2: two different staff members must approve
    incomplete_expiry_days: int = 30  # an incomplete case expires this long after it became so; 0: never
    mailbox_actor: str = "mailbox"  # the audit actor of approvals by flag or folder
    reject_reason: str = "退回：申请材料不符合要求"  # for mail moved to 退回


@dataclass
class MailboxStaffConfig:
    """Staff's marks in the mailbox they read (DESIGN.md §3): the red flag on an application
    mail where mailbot left it (the processed folder, or INBOX with the processed keyword),
    or the mail moved to approve_folder (approve) or reject_folder (reject with
    [cases] reject_reason). The *_keyword values are set by mailbot once a mark is handled."""

    enabled: bool = True
    approve_flag: str = "\\Flagged"  # a system flag or a keyword, e.g. "$label1"
    approve_folder: str = "已确认"
    reject_folder: str = "退回"
    flag_poll_seconds: int = 5  # how often the daemon looks at flags and folders; 0: per cycle
    approved_keyword: str = "$MailbotApproved"  # the approval mark was acted on
    rejected_keyword: str = "$MailbotRejected"  # the rejection mark was acted on
    refused_keyword: str = "$MailbotRefused"  # the workflow refused the mark (see the log)


@dataclass
class OutboxConfig:
    """What the applicant receives and how it is sent (issue 10)."""

    cert_encoding: str = "der"  # der (what Windows opens as .cer) | base64
    envelope_encoding: str = "der"  # envprivatekey: der | base64
    daily_cap: int = 20  # mails to one address per day; issued and revocation results exempt
    max_attempts: int = 10  # temporary failures before a row is failed and staff are told
    backoff_seconds: int = 60  # first retry after this; doubled each time
    backoff_max_seconds: int = 3600
    timeout_seconds: float = 60.0  # one SMTP conversation
    sent_copy: bool = True  # APPEND a copy to the mailbox's Sent folder (not with file:)
    sent_folder: str = ""  # empty: the \Sent special-use folder, else 已发送, Sent, …
    staff_addresses: list[str] = field(default_factory=list)  # the daily digest; none: no digest
    digest_hour: int = 8  # local hour of the daily staff digest
    hotline: str = "0592-5653395"
    office_hours: str = "星期一至星期五（法定节假日除外）上午 8:30-11:45，下午 13:30-16:45"
    hall_address: str = "厦门市湖里区象兴一路 11 号海关大楼 7 楼服务大厅"
    notice_font: str = ""  # the 告知书 PDF's CJK font file; empty: Noto Serif CJK SC (fonts-noto-cjk)


@dataclass
class Config:
    mailbox: MailboxConfig = field(default_factory=MailboxConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    ca: CaConfig = field(default_factory=CaConfig)
    cases: CasesConfig = field(default_factory=CasesConfig)
    mailbox_staff: MailboxStaffConfig = field(default_factory=MailboxStaffConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    rules_dir: str = str(DEFAULT_RULES_DIR)  # the shipped rules unless a file names others
    templates_dir: str = str(DEFAULT_TEMPLATES_DIR)
    base_dir: str = "."  # relative paths resolve against the config file's folder (or cwd)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Config:
        """Embedded defaults, overlaid with the TOML file at `path` (or $MAILBOT_CONFIG)."""
        path = path or os.environ.get("MAILBOT_CONFIG") or None
        cfg = cls()
        if path is None:
            cfg.base_dir = str(Path.cwd())
            return cfg
        p = Path(path)
        with p.open("rb") as fh:
            data = tomllib.load(fh)
        _overlay(cfg, data, where="")
        cfg.base_dir = str(p.resolve().parent)
        for key in ("rules_dir", "templates_dir"):  # a folder the file names is beside it
            if key in data:
                setattr(cfg, key, str(cfg.resolve(getattr(cfg, key))))
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse an enumerated value or URL form this configuration cannot mean (ConfigError).

        The mailbox URL's full grammar is the mailbox layer's and the database URL's is
        SQLAlchemy's; the command line checks those too before anything is opened.
        """
        if self.ca.signer not in CA_SIGNERS:
            raise ConfigError(f"[ca] signer = {self.ca.signer!r}: use one of "
                              f"{', '.join(CA_SIGNERS)}")
        if self.cases.approvals_required not in (1, 2):
            raise ConfigError(f"[cases] approvals_required = {self.cases.approvals_required!r}:"
                              " use 1 or 2")
        if self.cases.incomplete_expiry_days < 0:
            raise ConfigError("[cases] incomplete_expiry_days must be 0 (never) or more")
        actor = self.cases.mailbox_actor.strip()
        if not actor or actor == "system" or actor.startswith("message:"):
            raise ConfigError(f"[cases] mailbox_actor = {actor!r}: name the staff role approving"
                              " by flag or folder (e.g. \"mailbox\"), not system or message:…")
        for key in ("cert_encoding", "envelope_encoding"):
            if getattr(self.outbox, key) not in ENCODINGS:
                raise ConfigError(f"[outbox] {key} = {getattr(self.outbox, key)!r}: use "
                                  f"{' or '.join(ENCODINGS)}")
        if self.outbox.daily_cap < 1 or self.outbox.max_attempts < 1:
            raise ConfigError("[outbox] daily_cap and max_attempts must be 1 or more")
        if not all(isinstance(a, str) and "@" in a for a in self.outbox.staff_addresses):
            raise ConfigError("[outbox] staff_addresses must be a list of e-mail addresses")
        if not 0 <= self.outbox.digest_hour <= 23:
            raise ConfigError(f"[outbox] digest_hour = {self.outbox.digest_hour!r}: use 0-23")
        problem = _smtp_url_problem(self.smtp.url.strip())
        if problem:
            raise ConfigError(f"[smtp] url = {_redact(self.smtp.url.strip())!r}: {problem}; use "
                              "smtps://USER@host:465, smtp://host:587?starttls, "
                              "smtp://127.0.0.1:PORT or file:PATH")

    def resolve(self, relative: str) -> Path:
        """A path from the config, absolute as given, else under base_dir."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def var_dir(self) -> Path:
        return self.resolve(self.paths.var_dir)

    def var_path(self, relative: str) -> Path:
        """A path under var_dir unless absolute."""
        p = Path(relative)
        return p if p.is_absolute() else self.var_dir / p

    @property
    def archive_dir(self) -> Path:
        return self.var_path(self.paths.archive_dir or "archive")

    @property
    def database_url(self) -> str:
        url = self.database.url
        if not url:
            return f"sqlite:///{self.var_dir / 'mailbot.sqlite3'}"
        secret = os.environ.get(self.database.password_env)
        if secret and "{password}" in url:
            url = url.replace("{password}", secret)
        return url


def _smtp_url_problem(url: str) -> str | None:
    """What is wrong with an `[smtp] url`, or None when it is one of the accepted forms."""
    lower = url.lower()
    if lower.startswith("file:"):
        return None if url[len("file:"):].strip() else "file: needs a path"
    if not lower.startswith(("smtp://", "smtps://")):
        return "unknown scheme"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is no number 0-65535
    except ValueError as exc:
        return str(exc)
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "port 0"
    if parts.path not in ("", "/"):
        return "no path after the host"
    unknown = {k for k in parse_qs(parts.query, keep_blank_values=True)} - {"starttls"}
    if unknown:
        return f"unknown parameter(s) {', '.join(sorted(unknown))}"
    if "starttls" in parts.query and parts.scheme.lower() == "smtps":
        return "smtps:// is already TLS; ?starttls is for smtp://"
    return None


def _redact(url: str) -> str:
    """A URL for messages: any password between "user:" and "@" replaced by ***."""
    at = url.rfind("@")
    if at < 0:
        return url
    start = url.find("//") + 2 if "//" in url[:at] else 0
    user, colon, _password = url[start:at].partition(":")
    return f"{url[:start]}{user}:***{url[at:]}" if colon else url


def _overlay(obj: Any, data: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown configuration key {where}{key}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"[{where}{key}] must be a table")
            _overlay(current, value, where=f"{where}{key}.")
        else:
            if current is not None and not isinstance(value, type(current)):
                if not (isinstance(current, float) and isinstance(value, int)):
                    raise ConfigError(f"{where}{key} must be {type(current).__name__}")
            setattr(obj, key, value)


@lru_cache(maxsize=8)
def _load_rules(rules_dir: str) -> dict[str, dict[str, Any]]:
    folder = Path(rules_dir)
    if not folder.is_dir():
        raise ConfigError(f"rules_dir {rules_dir}: no such folder")
    settings: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            with path.open("rb") as fh:
                settings[path.stem] = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:  # its message names the line and column
            raise ConfigError(f"rules file {path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"rules file {path}: {exc.strerror or exc}") from None
    return settings


def load_rule_settings(rules_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Settings per rules file (e.g. ["materials"], ["subject"]); read once per folder.

    Intake and the rules both read them, so they are loaded here and handed in.
    """
    return _load_rules(str(Path(rules_dir or DEFAULT_RULES_DIR).resolve()))
