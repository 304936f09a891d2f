"""Hand one rendered mail to the world: SMTP submission (aiosmtplib) or a folder of .eml files.

    smtps://USER:PASS@host:465        implicit TLS (default port 465)
    smtp://USER@host:587?starttls     STARTTLS, required: a server that offers none is an error
    smtp://127.0.0.1:PORT             plain SMTP (a loopback test server, a local relay)
    file:PATH                         one .eml per message in PATH (relative: under base_dir)

User and password are percent-decoded; without a password in the URL the `password` argument
is used (the integrator reads it from $MAILBOT_SMTP_PASSWORD). AUTH is done when a user is
given. No password appears in `name`, repr, an error or a log line.

`send` raises:
    TemporaryFailure    try again later (4xx, connection refused, reset or timed out)
      ServerUnreachable   the server could not be reached or refused us a session (connect,
                          TLS, greeting, EHLO, AUTH): nothing is known about the message
        TlsCertificateError  the server's certificate was not accepted
    PermanentFailure    this mail will not be accepted (5xx to MAIL, RCPT or DATA; with several
                        recipients: every one refused with 5xx)
A mail accepted for some recipients and refused for others counts as sent: retrying would send
it again to those who have it (the refusals are logged).

The SMTP transport is synchronous for the sender: one event loop (asyncio.Runner) and one
connection live for a batch, from the first `send` to `close`; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from mailbot.config import ConfigError, _redact, _smtp_url_problem

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tls": 465, "starttls": 587, "plain": 25}
TRUE_WORDS = {"", "1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
_LINE_END = re.compile(rb"\r\n|\n|\r")


class DeliveryError(Exception):
    """The mail was not accepted."""


class TemporaryFailure(DeliveryError):
    """Not accepted now; the same bytes may be tried again later."""


class PermanentFailure(DeliveryError):
    """The server refused this mail for good (5xx)."""


class ServerUnreachable(TemporaryFailure):
    """No session with the server (connect, TLS, greeting, EHLO, AUTH): the message was not
    offered; other mail would fare no better now."""


class TlsCertificateError(ServerUnreachable):
    """The server's TLS certificate was not accepted (untrusted, expired, wrong name)."""


class _StaleConnection(Exception):
    """A kept connection died before the server took anything of this message."""


def wire_form(raw: bytes) -> bytes:
    """The message as SMTP carries it: every line ending CRLF, the last line ended too."""
    data = _LINE_END.sub(b"\r\n", raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


Mail = tuple[bytes, str, Sequence[str]]  # raw, from_addr, to_addrs: what `send` takes


class Transport:
    """Delivers rendered mail; `close` ends a batch (the sender calls it when done)."""

    name = ""  # for logs and errors: never carries a password
    # True when delivering the same bytes again delivers nothing twice (a file: outbox
    # replaces its file): the sender may then hand over a batch with `send_many` and commit
    # its outcomes together, since a crash before that commit repeats nobody's mail.
    idempotent = False

    def send(self, raw: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        raise NotImplementedError

    def send_many(self, mails: Sequence[Mail]) -> list[Exception | None]:
        """An idempotent transport's batch: per mail, None when it was accepted, else the
        failure `send` would have raised (the sender records it against that mail's row)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection of this batch; a later `send` opens a new one."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FileTransport(Transport):
    """`file:PATH`: each mail becomes PATH/<Message-ID>.eml, written atomically.

    The same Message-ID writes the same file, so a resent mail replaces its copy: delivery is
    idempotent, and a batch (`send_many`) syncs the folder once, after its last file.
    """

    idempotent = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"file:{folder}"

    def send(self, raw: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        [outcome] = self.send_many([(raw, from_addr, to_addrs)])
        if outcome is not None:
            raise outcome

    def send_many(self, mails: Sequence[Mail]) -> list[Exception | None]:
        """Write each file (its bytes synced before its name points at them), then sync the
        folder once: only then is any of them accepted, since a rename is durable only then."""
        outcomes: list[Exception | None] = [self._write(raw) for raw, _from, _to in mails]
        if any(outcome is None for outcome in outcomes):
            try:
                _fsync_dir(self.folder)
            except OSError as exc:  # the renames may not survive a power cut: write again
                failure = TemporaryFailure(f"cannot sync {self.folder}: {exc.strerror or exc}")
                outcomes = [failure if outcome is None else outcome for outcome in outcomes]
        return outcomes

    def _write(self, raw: bytes) -> TemporaryFailure | None:
        """Write one mail's file in place of any older one; the failure, or None."""
        data = wire_form(raw)
        target = self.folder / eml_name(data)
        tmp: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".eml", dir=self.folder)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, target)
            tmp = None
        except OSError as exc:
            return TemporaryFailure(f"cannot write {target}: {exc.strerror or exc}")
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return None


# The first Message-ID field with its folded lines (a continuation line starts with WSP).
_MESSAGE_ID_FIELD = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def eml_name(data: bytes) -> str:
    """A file name for the message: its Message-ID made safe, else a hash of its bytes."""
    end = data.find(b"\r\n\r\n")  # the header block is all the name needs
    found = _MESSAGE_ID_FIELD.search(data, 0, end + 2 if end >= 0 else len(data))
    value = found.group(1).decode("utf-8", "replace") if found else ""
    message_id = " ".join(value.split()).strip("<>")
    if not message_id:
        return f"no-message-id-{hashlib.sha256(data).hexdigest()[:20]}.eml"
    safe = re.sub(r"[^A-Za-z0-9._@+=-]", "_", message_id)[:150].lstrip(".") or "_"
    if safe != message_id:  # two IDs that clean to the same name must not share a file
        safe += "-" + hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{safe}.eml"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SmtpTransport(Transport):
    """SMTP submission with aiosmtplib; one connection per batch, reopened when it drops."""

    def __init__(self, *, host: str, port: int, security: str, user: str = "",
                 password: str | None = None, timeout: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if security not in DEFAULT_PORTS:
            raise ValueError(f"security must be one of {', '.join(DEFAULT_PORTS)}")
        self.host, self.port, self.security = host, port, security
        self.user = user
        self._password = password
        self.timeout = timeout
        self._ssl_context = ssl_context
        scheme = "smtps" if security == "tls" else "smtp"
        shown_host = f"[{host}]" if ":" in host else host
        self.name = (f"{scheme}://{shown_host}:{port}"
                     f"{'?starttls' if security == 'starttls' else ''}"
                     f"{f' (user {user})' if user else ''}")
        self._runner: asyncio.Runner | None = None
        self._client: aiosmtplib.SMTP | None = None

    def send(self, raw: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        if not to_addrs:
            raise PermanentFailure("no recipient")
        if self._runner is None:
            self._runner = asyncio.Runner()
        self._runner.run(self._send(wire_form(raw), from_addr, list(to_addrs)))

    def close(self) -> None:
        if self._runner is None:
            return
        try:
            if self._client is not None:
                self._runner.run(self._quit(self._client))
        finally:
            self._client = None
            self._runner.close()
            self._runner = None

    async def _send(self, data: bytes, from_addr: str, to_addrs: list[str]) -> None:
        reused = self._client is not None and self._client.is_connected
        if not reused:
            self._drop()
            self._client = await self._connect()
        assert self._client is not None
        try:
            await self._transaction(self._client, data, from_addr, to_addrs, reused=reused)
        except _StaleConnection:
            # The kept connection had died (server restart, idle timeout): nothing was taken.
            log.info("%s: the kept connection was closed; connecting again", self.name)
            self._drop()
            self._client = await self._connect()
            await self._transaction(self._client, data, from_addr, to_addrs, reused=False)

    async def _connect(self) -> aiosmtplib.SMTP:
        tls = self.security in ("tls", "starttls")
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=self.security == "tls", start_tls=False,
            tls_context=(self._ssl_context or ssl.create_default_context()) if tls else None)
        try:
            await client.connect()
            if self.security == "starttls":
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise ServerUnreachable(f"{self.name}: the server offers no STARTTLS, "
                                            "which the URL asks for")
                await client.starttls()
            if self.user:
                await client.login(self.user, self._password or "")
        except DeliveryError:
            client.close()
            raise
        except Exception as exc:  # every way a session can fail to start: one readable error
            client.close()
            raise self._session_error(exc) from exc
        return client

    def _session_error(self, exc: Exception) -> ServerUnreachable:
        chain: list[BaseException] = []
        cause: BaseException | None = exc
        while cause is not None and cause not in chain:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        for item in chain:
            if isinstance(item, ssl.SSLCertVerificationError):
                return TlsCertificateError(
                    f"{self.name}: the server's TLS certificate was not accepted "
                    f"({item.verify_message or item.reason}); check the host name, or the CA "
                    "the system trusts")
        for item in chain:
            if isinstance(item, ssl.SSLError):
                return ServerUnreachable(f"{self.name}: TLS handshake failed: {item.reason or item}")
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return ServerUnreachable(f"{self.name}: login as {self.user} refused: "
                                     f"{exc.code} {exc.message}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return ServerUnreachable(f"{self.name}: the server refused the session: "
                                     f"{exc.code} {exc.message}")
        if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
            return ServerUnreachable(f"{self.name}: no answer within {self.timeout:g} s")
        return ServerUnreachable(f"{self.name}: {exc}")

    async def _transaction(self, client: aiosmtplib.SMTP, data: bytes, from_addr: str,
                           to_addrs: list[str], *, reused: bool) -> None:
        try:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            options, encoding = self._mail_options(client, data, from_addr, to_addrs)
            try:
                await client.mail(from_addr, options=options, encoding=encoding)
            except aiosmtplib.SMTPServerDisconnected as exc:
                if reused:
                    raise _StaleConnection from exc
                raise
            except aiosmtplib.SMTPResponseException as exc:
                if reused and exc.code == 421:  # the server closed an idle session
                    raise _StaleConnection from exc
                await self._reset(client)
                raise _by_code(exc, "MAIL FROM") from exc
            refused: dict[str, aiosmtplib.SMTPRecipientRefused] = {}
            for address in to_addrs:
                try:
                    await client.rcpt(address, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[address] = exc
            if len(refused) == len(to_addrs):
                await self._reset(client)
                text = "; ".join(f"{a}: {e.code} {e.message}" for a, e in refused.items())
                if all(500 <= e.code < 600 for e in refused.values()):
                    raise PermanentFailure(f"every recipient refused: {text}")
                raise TemporaryFailure(f"no recipient accepted: {text}")
            try:
                await client.data(data)
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset(client)
                raise _by_code(exc, "DATA") from exc
        except (DeliveryError, _StaleConnection):
            raise
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            self._drop()
            raise TemporaryFailure(f"{self.name}: no answer within {self.timeout:g} s") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TemporaryFailure(f"{self.name}: {exc}") from exc
        except ValueError as exc:  # an address no SMTP command line can carry
            raise PermanentFailure(f"address cannot be sent: {exc}") from exc
        for address, exc in refused.items():
            log.warning("%s: accepted, but not for %s: %s %s", self.name, address, exc.code,
                        exc.message)

    @staticmethod
    def _mail_options(client: aiosmtplib.SMTP, data: bytes, from_addr: str,
                      to_addrs: list[str]) -> tuple[list[str], str]:
        options: list[str] = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(data)}")  # a server that cannot take it says so now
        if client.supports_extension("8bitmime") and any(b > 0x7F for b in data):
            options.append("BODY=8BITMIME")
        if all(a.isascii() for a in (from_addr, *to_addrs)):
            return options, "ascii"
        if not client.supports_extension("smtputf8"):
            raise PermanentFailure("the server takes no non-ASCII addresses (no SMTPUTF8)")
        return [*options, "SMTPUTF8"], "utf-8"

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """Clear the refused envelope so the connection can carry the next mail."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            self._drop()

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        if not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _by_code(exc: aiosmtplib.SMTPResponseException, stage: str) -> DeliveryError:
    text = f"{stage} refused: {exc.code} {exc.message}"
    return PermanentFailure(text) if 500 <= exc.code < 600 else TemporaryFailure(text)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_from_url(url: str, *, password: str | None, timeout: float,
                       base_dir: str | Path,
                       ssl_context: ssl.SSLContext | None = None) -> Transport:
    """The transport an `[smtp] url` names; ConfigError (password redacted) when it names none.

    `ssl_context` replaces the system's trust (a private CA, a test server's certificate).
    """
    text = url.strip()
    problem = _smtp_url_problem(text)
    if problem:
        raise ConfigError(f"[smtp] url = {_redact(text)!r}: {problem}")
    if text.lower().startswith("file:"):
        path = unquote(text[len("file:"):].strip())
        if path.startswith("//"):  # file:///abs/path
            path = path[2:]
        folder = Path(path)
        return FileTransport(folder if folder.is_absolute() else Path(base_dir) / folder)
    parts = urlsplit(text)
    params = parse_qs(parts.query, keep_blank_values=True)
    security = "tls" if parts.scheme.lower() == "smtps" else "plain"
    if "starttls" in params:
        word = params["starttls"][-1].strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"[smtp] url = {_redact(text)!r}: starttls={word!r}: use "
                              "?starttls (or starttls=yes/no)")
        security = "starttls" if word in TRUE_WORDS else "plain"
    host = parts.hostname or ""
    user = unquote(parts.username or "")
    secret = unquote(parts.password) if parts.password else None
    secret = secret or password or None
    if user and not secret:
        raise ConfigError(f"[smtp] url = {_redact(text)!r}: no password for {user}: put it in "
                          "the URL or in the environment variable named by [smtp] password_env")
    if user and security == "plain" and not _is_loopback(host):
        raise ConfigError(f"[smtp] url = {_redact(text)!r}: AUTH over plain SMTP would send the "
                          "password in clear; use smtps:// or ?starttls")
    return SmtpTransport(host=host, port=parts.port or DEFAULT_PORTS[security], security=security,
                         user=user, password=secret if user else None, timeout=timeout,
                         ssl_context=ssl_context)
