"""The working folders and the schema, as `mailbot init` and the first `mailbot run` make them;
the CA `run` needs (`prepare_ca`); the starting configuration `init --write-config` writes
(`config_text`, which is also config.example.toml)."""

from __future__ import annotations

import json
import mailbox
import os
import unicodedata
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from mailbot.config import CaConfig, Config
from mailbot.db import upgrade
from mailbot.mailbox.url import maildir_path
from mailbot.pki.ca import CaError, dn_text, init_ca, load_ca
from mailbot.pki.errors import PkiError
from mailbot.pki.signer import open_signer

# The [ca] keys that say which CA this is. A file that sets none of them away from its default
# (no file, a file naming no [ca] keys, or only the URLs, the CRL timing, validity or the
# passphrase variable's name) leaves mailbot's own soft test CA in place, which the first
# `run` makes; any other CA is the operator's to install, and `run` never makes one up.
CA_IDENTITY_KEYS = ("signer", "key_path", "cert_path", "chain_path", "subject",
                    "sdf_library", "sdf_key_index")


def init_workspace(cfg: Config) -> list[str]:
    """Create var/, the archive, the Maildir and the schema; idempotent. Returns what was done."""
    done = []
    cfg.var_dir.mkdir(parents=True, exist_ok=True)
    cfg.archive_dir.mkdir(parents=True, exist_ok=True)
    md = maildir_path(cfg)
    if md is not None:
        mailbox.Maildir(str(md), create=True)
        done.append(f"maildir {md}")
    upgrade(cfg.database_url)
    done.append("database schema up to date")
    return done


def ca_left_at_defaults(cfg: Config) -> bool:
    """Whether [ca] names mailbot's own soft test CA (see CA_IDENTITY_KEYS)."""
    defaults = CaConfig()
    return all(getattr(cfg.ca, k) == getattr(defaults, k) for k in CA_IDENTITY_KEYS)


def prepare_ca(cfg: Config) -> str | None:
    """Make sure `run` starts with a CA it can sign with; a line saying what was made, or None.

    [ca] at its defaults and no key file yet: the soft test CA is made (as `mailbot ca init`;
    its key encrypted when the passphrase variable is set). Otherwise the CA must be there and
    open: a missing key file, a key that cannot be opened (an encrypted one without its
    passphrase), or an SDF device that cannot be reached raise CaError, one line, and `run`
    refuses to start.
    """
    if cfg.ca.signer == "soft":
        key = cfg.var_path(cfg.ca.key_path)
        cert = cfg.var_path(cfg.ca.cert_path)
        if not key.exists():
            if not ca_left_at_defaults(cfg):
                raise CaError(f"cannot start: no CA key at {key} ([ca] key_path); install the "
                              "CA key there or run `mailbot ca init` / 缺少 CA 私钥, 无法启动")
            if cert.exists():
                raise CaError(f"cannot start: the CA certificate {cert} is there but its key "
                              f"{key} is missing; restore the key, or run `mailbot ca init "
                              "--force` for a new test CA / 缺少 CA 私钥, 无法启动")
            state = init_ca(cfg)
            state.signer.close()
            return f"made the soft test CA {dn_text(state.subject)} ({key})"
    try:
        if cfg.ca.signer != "soft":  # the device first: its absence is the news
            open_signer(cfg).close()
        state = load_ca(cfg)  # soft: the key opens and fits the certificate; sdf: likewise
    except PkiError as exc:
        where = "[ca] signer = sdf: " if cfg.ca.signer == "sdf" else ""
        raise CaError(f"cannot start: {where}{exc}") from None
    state.signer.close()
    return None


# -- the starting configuration ----------------------------------------------------------------
# config_text() renders every key of Config with its default (commented out, so a key stays at
# its default until someone uncomments it) and the notes below; config.example.toml is its
# output (tests/cli/test_operations.py checks): after adding a key to mailbot/config.py, note
# it here and run `python3 -m mailbot.app.workspace > config.example.toml`.

CONFIG_HEADER = """\
# mailbot configuration, as `mailbot init --write-config FILE` writes it (the same text as
# config.example.toml). Every key is listed, commented out, with its embedded default: a key
# left commented (or out) keeps that default; uncomment a line to change it.
# Relative paths are resolved against the folder of this file; var_dir holds the working data.
#
# Secrets never go in this file: mailbot reads them from the environment variables the *_env
# keys name (with systemd: EnvironmentFile=/etc/mailbot/mailbot.env, mode 0600; see
# contrib/mailbot.env.example):
#   MAILBOT_IMAP_PASSWORD      the mailbox's authorization code (授权码)     [mailbox] password_env
#   MAILBOT_SMTP_PASSWORD      the SMTP password (189.cn: the same 授权码)    [smtp] password_env
#   MAILBOT_DATABASE_PASSWORD  put in place of {password} in [database] url  [database] password_env
#   MAILBOT_CA_KEY_PASSPHRASE  the passphrase of the soft CA key             [ca] key_passphrase_env
#   MAILBOT_SDF_PASSWORD       the cipher machine's key access password      [ca] sdf_password_env
#
# Production (xmport@189.cn at China E-Port Xiamen): uncomment the lines under "# production"
# in each section. Then: mailbot --config FILE init, and mailbot --config FILE status.
"""

TOP_LEVEL_NOTES = """\
# rules_dir = "/etc/mailbot/rules"          # default: the rules shipped with mailbot
# templates_dir = "/etc/mailbot/templates"  # default: the shipped templates; a folder holding
#                                           # only the files to override is enough
"""

# Comment lines written under a section's header.
SECTION_NOTES: dict[str, tuple[str, ...]] = {
    "mailbox": (
        "Where applications come in: maildir:PATH (relative to var_dir),",
        "imaps://USER@host:993/INBOX, imap://host:143/INBOX?starttls,",
        "imap://USER:PASS@127.0.0.1:PORT/INBOX (loopback tests only). An @ in USER is %40.",
    ),
    "smtp": (
        "How mail goes out: smtps://USER@host:465 (implicit TLS), smtp://host:587?starttls,",
        "smtp://127.0.0.1:PORT, or file:PATH (one .eml per mail; a relative PATH is under var_dir).",
    ),
    "database": (
        "Any SQLAlchemy URL; empty: SQLite at var_dir/mailbot.sqlite3. PostgreSQL needs",
        "pip install 'mailbot[postgres]'; {password} in the URL is replaced by the value of the",
        "variable password_env names.",
    ),
    "ca": (
        "Left at these defaults, the first `mailbot run` makes a soft *test* CA under var_dir/ca.",
        "Production: the CA key in the server cipher machine (signer = \"sdf\", sdf_library = the",
        "vendor's libsdf.so, sdf_key_index, cert_path and chain_path of the CA certificate and",
        "its chain up to the national SM2 root), or a soft key installed with",
        "`mailbot ca init --key KEY --chain CHAIN`, encrypted (MAILBOT_CA_KEY_PASSPHRASE).",
        "`mailbot ca crl` writes the CRL to crl_path; publish it at crl_url (docs/OPERATIONS.md).",
    ),
    "mailbox_staff": (
        "Staff approve in their mail client: the red flag on the application mail where mailbot",
        "left it (已处理, or INBOX with the processed keyword), or the mail moved to",
        "approve_folder; moved to reject_folder it is rejected with [cases] reject_reason. Each",
        "mark counts once, as one approval by [cases] mailbox_actor.",
    ),
    "outbox": (
        "What applicants receive and how it is sent. Every outgoing mail is a row in the",
        "database, sent by the outbox job; `mailbot status` and `mailbot outbox list` show them.",
    ),
}

# The comment after a key's line, by "section.key".
KEY_NOTES: dict[str, str] = {
    "paths.var_dir": "the working data: archive, SQLite, Maildir, CA, outbox",
    "paths.archive_dir": "empty: var_dir/archive (raw .eml, content-addressed by sha256)",
    "mailbox.password_env": "the provider's authorization code (授权码)",
    "mailbox.our_address": "mail from this address is never answered",
    "mailbox.timeout_seconds": "the IMAP connection's network timeout",
    "smtp.password_env": "the SMTP password, when the URL names a USER",
    "smtp.message_id_domain": "the domain of our Message-IDs <XM-YYYY-NNNN.RANDOM@DOMAIN>",
    "database.url": "empty: SQLite at var_dir/mailbot.sqlite3",
    "intake.max_message_bytes": "64 MiB: larger mail stays on the server and staff are told",
    "intake.processed_keyword": "used where the server has no MOVE",
    "intake.max_attempts": "analyses of one message before it is parked (mailbot reprocess)",
    "intake.idle_renew_seconds": "IDLE is renewed this often (providers cut at ~10 min)",
    "intake.poll_seconds": "without IDLE: look for new mail this often",
    "intake.sweep_seconds": "a full UID sweep of the inbox (not just new mail) this often",
    "intake.fetch_batch": "messages per fetch and commit (at most ~16 MB of them)",
    "intake.workers": "parse processes; 0 = one per core",
    "intake.analysis_timeout_seconds": "one message's analysis; a worker still busy is stopped",
    "ca.signer": "soft | sdf",
    "ca.key_path": "relative paths here are under var_dir",
    "ca.chain_path": "the CA's chain up to its root (PEM), when it is not self-signed",
    "ca.crl_path": "written by `mailbot ca crl` and after each revocation",
    "ca.crl_url": "where the CRL is published (the certificates' CRL distribution point)",
    "ca.crl_next_update_days": "a CRL's nextUpdate; a new one is made when half is left",
    "ca.validity_years": "of the certificates issued",
    "ca.sdf_library": "path of the vendor's libsdf.so",
    "ca.sdf_sm2_alg_id": "0x00020100: SGD_SM2_1 in GM/T 0006-2012 headers; check the vendor's",
    "cases.approvals_required": "2: two different staff members must approve; "
                                "anyone's rejection ends the case",
    "cases.incomplete_expiry_days": "an incomplete case expires this many days after it "
                                    "became incomplete; 0: never",
    "cases.mailbox_actor": "who the audit log names for approvals by flag or folder",
    "cases.reject_reason": "the reason recorded for mail moved to 退回",
    "mailbox_staff.approve_flag": "the red flag; or a keyword, e.g. \"$label1\"",
    "mailbox_staff.flag_poll_seconds": "flags and folders are read at least this often; "
                                       "0: once per cycle",
    "mailbox_staff.approved_keyword": "set by mailbot on a mark it acted on",
    "mailbox_staff.refused_keyword": "the workflow refused the mark (why: the log, "
                                     "`status --json`, `cases show`)",
    "outbox.cert_encoding": "sign.cer / env.cer: der (what Windows opens) or base64",
    "outbox.envelope_encoding": "envprivatekey (SM2EnvelopedKey): der or base64",
    "outbox.daily_cap": "mails to one address per day (issued and revocation results exempt)",
    "outbox.max_attempts": "temporary SMTP failures before the mail is failed and staff told",
    "outbox.backoff_seconds": "first retry after this, doubled each time,",
    "outbox.backoff_max_seconds": "up to this",
    "outbox.timeout_seconds": "one SMTP conversation",
    "outbox.sent_copy": "a copy of each sent mail in the mailbox's Sent folder (not with file:)",
    "outbox.sent_folder": "empty: the \\Sent special-use folder, else 已发送, Sent, "
                          "Sent Messages, Sent Items",
    "outbox.staff_addresses": "the daily staff digest goes here; none: no digest mail",
    "outbox.digest_hour": "local hour (Beijing time) of the daily digest",
    "outbox.notice_font": "CJK .ttc/.otf/.ttf for the 告知书 PDF; empty: Noto Serif CJK SC "
                          "(apt-get install fonts-noto-cjk)",
}

# The production example per section: (key, value), written commented under "# production".
PRODUCTION: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "paths": ("the working data outside the program's folder",
              (("var_dir", "/var/lib/mailbot"),)),
    "mailbox": ("xmport@189.cn over IMAPS; the 授权码 in MAILBOT_IMAP_PASSWORD",
                (("url", "imaps://xmport%40189.cn@imap.189.cn:993/INBOX"),)),
    "smtp": ("smtp.189.cn over implicit TLS; the password in MAILBOT_SMTP_PASSWORD",
             (("url", "smtps://xmport%40189.cn@smtp.189.cn:465"),)),
    "database": ("PostgreSQL; the password in MAILBOT_DATABASE_PASSWORD",
                 (("url", "postgresql+psycopg://mailbot:{password}@127.0.0.1:5432/mailbot"),)),
    "outbox": ("the staff who get the daily digest",
               (("staff_addresses", ["staff1@example.cn", "staff2@example.cn"]),)),
}

SECTION_ORDER = ("paths",)  # first; the others follow in Config's order
KEY_COLUMN = 40  # where a key's note starts
LINE_WIDTH = 100  # a longer key line gets its note on a line of its own above it


def toml_value(value: Any) -> str:
    """A default as TOML: strings as basic strings (JSON's escapes are TOML's), lists inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _width(text: str) -> int:
    """Columns in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _key_line(key: str, value: Any, note: str | None) -> str:
    line = f"#{key} = {toml_value(value)}"
    if not note:
        return line
    gap = max(KEY_COLUMN - _width(line), 2)
    if _width(line) + gap + 2 + _width(note) > LINE_WIDTH:
        return f"# {note}\n{line}"
    return f"{line}{' ' * gap}# {note}"


def config_text() -> str:
    """The starting configuration: every section and key of Config with its default, commented
    out, the notes above, and the production example (commented)."""
    defaults = Config()
    out = [CONFIG_HEADER, TOP_LEVEL_NOTES]
    order = sorted(fields(defaults), key=lambda f: (f.name not in SECTION_ORDER,
                                                     SECTION_ORDER.index(f.name)
                                                     if f.name in SECTION_ORDER else 0))
    for f in order:
        section = getattr(defaults, f.name)
        if not is_dataclass(section):
            if f.name not in ("rules_dir", "templates_dir", "base_dir"):  # new top-level keys
                out.insert(2, _key_line(f.name, section, KEY_NOTES.get(f.name)) + "\n")
            continue
        lines = [f"[{f.name}]"]
        lines += [f"# {note}" for note in SECTION_NOTES.get(f.name, ())]
        for key in fields(section):
            lines.append(_key_line(key.name, getattr(section, key.name),
                                   KEY_NOTES.get(f"{f.name}.{key.name}")))
        if f.name in PRODUCTION:
            why, pairs = PRODUCTION[f.name]
            lines.append(f"# production: {why}")
            lines += [_key_line(k, v, None) for k, v in pairs]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


class ConfigFileExists(Exception):
    """`init --write-config` never replaces a file."""


def write_config(path: Path) -> Path:
    """Write config_text() to a new file at `path` (never over an existing one)."""
    text = config_text().encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigFileExists(f"{path} exists; it is left as it is (choose another FILE or "
                               "remove it first)") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(text)
    return path


if __name__ == "__main__":  # python3 -m mailbot.app.workspace > config.example.toml
    print(config_text(), end="")
