"""Parse the `[mailbox] url` forms and build the matching source.

    imaps://USER:PASS@host:993/INBOX        IMAP over TLS
    imap://USER@host:143/INBOX?starttls     IMAP, upgraded with STARTTLS
    imap://USER:PASS@127.0.0.1:PORT/INBOX   plain IMAP (loopback tests)
    maildir:PATH                            a Maildir (relative: under paths.var_dir)

User, password and folder are percent-decoded. Without a password in the URL it is read
from the environment variable named by `password_env` (e.g. MAILBOT_IMAP_PASSWORD).
The password never appears in `identity`, `redacted()` or the repr.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from mailbot.mailbox.base import INBOX, MailSource

if TYPE_CHECKING:
    from mailbot.config import Config

DEFAULT_PORTS = {"imaps": 993, "imap": 143}
TRUE_WORDS = {"", "1", "true", "yes", "on"}


class MailboxURLError(ValueError):
    """The mailbox URL cannot be understood (the message never contains the password)."""


@dataclass(frozen=True)
class MailboxURL:
    scheme: str  # "imaps" | "imap" | "maildir"
    host: str = ""
    port: int = 0
    user: str = ""
    password: str | None = field(default=None, repr=False)
    folder: str = INBOX
    starttls: bool = False
    path: str = ""  # maildir only, as written (resolve relative paths with Config.var_path)
    cafile: str | None = None  # ?cafile=PATH: trust this CA (a private or test server)

    @property
    def is_imap(self) -> bool:
        return self.scheme in ("imap", "imaps")

    @property
    def tls(self) -> bool:
        """True when the connection is encrypted (implicit TLS or STARTTLS)."""
        return self.scheme == "imaps" or self.starttls

    @property
    def identity(self) -> str:
        """Stable, password-free name for the database."""
        if self.scheme == "maildir":
            return f"maildir:{os.path.abspath(self.path)}"
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}/{self.folder}"

    def redacted(self) -> str:
        """For logs: the identity, plus a marker where a password is set."""
        return self.identity + (" (password set)" if self.password else "")


def parse_mailbox_url(
    url: str,
    *,
    password_env: str | None = "MAILBOT_IMAP_PASSWORD",
    environ: Mapping[str, str] | None = None,
) -> MailboxURL:
    """Parse a `[mailbox] url`; raises MailboxURLError (without echoing the password)."""
    env = os.environ if environ is None else environ
    url = url.strip()
    if url.startswith("maildir:"):
        path = unquote(url[len("maildir:"):])
        if path.startswith("//"):  # maildir:///abs/path
            path = path[2:]
        if not path:
            raise MailboxURLError("maildir: URL needs a path")
        return MailboxURL(scheme="maildir", path=path)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise MailboxURLError("mailbox url must start with imaps://, imap:// or maildir:")
    # Split off the query first, then the path; the userinfo ends at the LAST '@' of the
    # authority so an unencoded '@' in a password still works.
    rest, _, query = rest.partition("?")
    at = rest.rfind("@", 0, _authority_end(rest))
    userinfo, hostpart = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
    hostport, _, folder = hostpart.partition("/")
    user, colon, password = userinfo.partition(":")
    host, port = _split_host_port(hostport, scheme)
    if not host:
        raise MailboxURLError(f"{scheme}:// URL needs a host")
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"starttls", "cafile"}
    if unknown:
        raise MailboxURLError(f"unknown mailbox url parameter(s): {', '.join(sorted(unknown))}")
    starttls = "starttls" in params and params["starttls"][-1].lower() in TRUE_WORDS
    if starttls and scheme == "imaps":
        raise MailboxURLError("imaps:// is already TLS; ?starttls is for imap://")
    pw: str | None = unquote(password) if colon else None
    if not pw and password_env:
        pw = env.get(password_env) or None
    return MailboxURL(
        scheme=scheme,
        host=host,
        port=port,
        user=unquote(user),
        password=pw,
        folder=unquote(folder.rstrip("/")) or INBOX,
        starttls=starttls,
        cafile=params["cafile"][-1] if "cafile" in params else None,
    )


def _authority_end(rest: str) -> int:
    """Where the authority ends: at the first '/' after the last '@' (or the first '/')."""
    at = rest.rfind("@")
    slash = rest.find("/", at + 1 if at >= 0 else 0)
    return slash if slash >= 0 else len(rest)


def _split_host_port(hostport: str, scheme: str) -> tuple[str, int]:
    if hostport.startswith("["):  # [::1]:143
        host, _, after = hostport[1:].partition("]")
        port_s = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_s = hostport.partition(":")
    if not port_s:
        return host, DEFAULT_PORTS[scheme]
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise MailboxURLError("mailbox url port must be a number 1-65535")
    return host, int(port_s)


def source_from_url(
    url: MailboxURL | str,
    *,
    password_env: str | None = "MAILBOT_IMAP_PASSWORD",
    sleep: Callable[[float], None] | None = None,
    **options: Any,
) -> MailSource:
    """Build (not open) the source for a URL; `options` go to the source's constructor."""
    parsed = url if isinstance(url, MailboxURL) else parse_mailbox_url(
        url, password_env=password_env)
    if parsed.scheme == "maildir":
        from mailbot.mailbox.maildir import MaildirSource

        keep = {k: v for k, v in options.items() if k in MaildirSource.OPTIONS}
        if sleep is not None:
            keep["sleep"] = sleep
        return MaildirSource(parsed.path, **keep)
    from mailbot.mailbox.imap import ImapSource

    if sleep is not None:
        options["sleep"] = sleep
    return ImapSource(parsed, **options)


def source_from_config(cfg: Config, **overrides: Any) -> MailSource:
    """The source configured in `cfg` ([mailbox] and [intake]), not yet opened."""
    parsed = parse_mailbox_url(cfg.mailbox.url, password_env=cfg.mailbox.password_env)
    local = maildir_path(cfg)
    if local is not None:
        parsed = MailboxURL(scheme="maildir", path=str(local))
    options: dict[str, Any] = {
        "timeout": cfg.mailbox.timeout_seconds,
        "idle_renew_seconds": cfg.intake.idle_renew_seconds,
        "poll_seconds": cfg.intake.poll_seconds,
        "fetch_batch": cfg.intake.fetch_batch,
        "sent_folder_name": cfg.outbox.sent_folder.strip() or None,
    }
    options.update(overrides)
    return source_from_url(parsed, **options)


def maildir_path(cfg: Config) -> Path | None:
    """The absolute Maildir path when the configured mailbox is a Maildir, else None."""
    parsed = parse_mailbox_url(cfg.mailbox.url, password_env=None)
    return cfg.var_path(parsed.path) if parsed.scheme == "maildir" else None
