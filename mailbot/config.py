"""Configuration: a TOML file over embedded defaults; secrets may come from the environment."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


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
class Config:
    mailbox: MailboxConfig = field(default_factory=MailboxConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    ca: CaConfig = field(default_factory=CaConfig)
    rules_dir: str = str(REPO_ROOT / "rules")
    templates_dir: str = str(REPO_ROOT / "templates")
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
        return cfg

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


def _overlay(obj: Any, data: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"unknown configuration key {where}{key}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"[{where}{key}] must be a table")
            _overlay(current, value, where=f"{where}{key}.")
        else:
            if current is not None and not isinstance(value, type(current)):
                if not (isinstance(current, float) and isinstance(value, int)):
                    raise ValueError(f"{where}{key} must be {type(current).__name__}")
            setattr(obj, key, value)
