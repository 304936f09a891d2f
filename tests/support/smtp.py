"""A real aiosmtpd server on loopback for the outbox tests (DESIGN.md §6).

SmtpServer records what it accepts (envelope, the exact bytes carried, AUTH login, TLS) and
can be told to answer badly: `refuse(address, reply)` at RCPT for good, `fail_next(n, reply,
at=...)` the next n times a stage is reached, or `hook(stage, envelope, address)`, called at
MAIL, RCPT and, once a message is recorded as accepted, at ACCEPTED (before the 250 goes out;
a hook may return a reply, or kill a client). `stop()` and `start()` again on the same port:
"SMTP down, then back".

Fixtures (import them into a test module, or list this module in pytest_plugins):
  smtp_server     plain SMTP, no AUTH
  smtp_tls        (session) a self-signed certificate for 127.0.0.1 made with openssl, and
                  `client_context()`: an SSLContext that trusts it
  smtps_server    implicit TLS with AUTH PLAIN and LOGIN (USER / PASSWORD below)
  starttls_server STARTTLS required before AUTH PLAIN and LOGIN

Also `simple_message` and `prepare_simple`: a small raw mail and a `prepare` for the sender
that builds one from an outbox row (the subprocess in the kill test imports them).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from tests.support.dovecot import free_port

HOST = "127.0.0.1"
USER = "xmport@189.cn"
PASSWORD = "p@ss:w/rd 口令%"  # every character a URL must encode

Hook = Callable[[str, Envelope, "str | None"], "str | None"]


@dataclass
class Delivery:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly what SMTP carried, dot-stuffing undone
    mail_options: list[str] = field(default_factory=list)
    login: str | None = None
    tls: bool = False
    peer: tuple[str, int] | None = None  # the client's address: one per connection

    @property
    def message_id(self) -> str | None:
        for line in self.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                return line.split(b":", 1)[1].strip().decode()
        return None


@dataclass
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this certificate (and nothing else) uses."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(folder: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "smtp.pem", folder / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "30", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return TlsFiles(cert, key)


class _Handler:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_MAIL(self, server: Any, session: Any, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        reply = self.owner._decide("MAIL", envelope, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.owner._decide("RCPT", envelope, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        reply = self.owner._decide("DATA", envelope, None)
        if reply:
            return reply
        login = session.auth_data.login.decode() if session.auth_data is not None else None
        number = self.owner._record(Delivery(
            mail_from=str(envelope.mail_from), rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options), login=login,
            tls=server.transport.get_extra_info("ssl_object") is not None,
            peer=tuple(session.peer[:2]) if session.peer else None))
        reply = self.owner._decide("ACCEPTED", envelope, None)  # recorded: the server has it
        return reply or f"250 OK queued as {number}"


class SmtpServer:
    """An aiosmtpd Controller on a fixed loopback port, restartable; see the module docstring.

    security: "plain", "tls" (implicit, smtps) or "starttls" (required before AUTH and MAIL).
    users: AUTH logins and passwords; none: no AUTH. mechanisms: those offered.
    """

    def __init__(self, *, security: str = "plain", tls: TlsFiles | None = None,
                 users: dict[str, str] | None = None,
                 mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
                 auth_require_tls: bool = True, smtputf8: bool = False) -> None:
        if security != "plain" and tls is None:
            raise ValueError("a TLS server needs its certificate")
        self.security, self.tls, self.users = security, tls, dict(users or {})
        self.mechanisms, self.auth_require_tls, self.smtputf8 = (mechanisms, auth_require_tls,
                                                                 smtputf8)
        self.port = free_port()
        self.hook: Hook | None = None
        self.auth_log: list[tuple[str, str, bool]] = []  # mechanism, login, success
        self._deliveries: list[Delivery] = []
        self._refusals: dict[str, str] = {}
        self._failures: list[list[Any]] = []  # [stage, reply, times left]
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    # -- control --------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        if self._controller is not None:
            return self
        params: dict[str, Any] = {"decode_data": False, "enable_SMTPUTF8": self.smtputf8,
                                  "ready_timeout": 30.0}
        if self.users:
            # aiosmtpd sees only STARTTLS as TLS; an implicit-TLS session is encrypted too.
            params.update(authenticator=self._authenticate,
                          auth_require_tls=self.auth_require_tls and self.security != "tls",
                          auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN")
                                                  if m not in self.mechanisms])
        if self.security == "tls":
            assert self.tls is not None
            params.update(ssl_context=self.tls.server_context(), server_hostname=HOST)
        elif self.security == "starttls":
            assert self.tls is not None
            params.update(tls_context=self.tls.server_context(), require_starttls=True)
        controller = Controller(_Handler(self), hostname=HOST, port=self.port, **params)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Close the port and drop every connection (clients see them die)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """The `[smtp] url` of this server, with a login if given (percent-encoded)."""
        scheme = "smtps" if self.security == "tls" else "smtp"
        login = ""
        if user:
            login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
            login += "@"
        query = "?starttls" if self.security == "starttls" else ""
        return f"{scheme}://{login}{HOST}:{self.port}{query}"

    def refuse(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Answer `reply` to RCPT TO this address (any case), until clear()."""
        with self._lock:
            self._refusals[address.lower()] = reply

    def fail_next(self, times: int = 1, reply: str = "451 4.3.0 Try again later", *,
                  at: str = "DATA") -> None:
        """Answer `reply` the next `times` times the stage (MAIL, RCPT, DATA) is reached."""
        with self._lock:
            self._failures.append([at.upper(), reply, times])

    def clear(self) -> None:
        """Forget refusals, failures, the hook and what was delivered."""
        with self._lock:
            self._refusals.clear()
            self._failures.clear()
            self._deliveries.clear()
            self.hook = None

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """The deliveries once there are at least `count` (for a client in another process)."""
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.deliveries)} of {count} mails arrived")
            time.sleep(0.02)
        return self.deliveries

    # -- server side ------------------------------------------------------------------------

    def _decide(self, stage: str, envelope: Envelope, address: str | None) -> str | None:
        hook = self.hook
        if hook is not None:
            reply = hook(stage, envelope, address)
            if reply:
                return reply
        with self._lock:
            for failure in self._failures:
                if failure[0] == stage and failure[2] > 0:
                    failure[2] -= 1
                    return str(failure[1])
            if stage == "RCPT" and address is not None:
                return self._refusals.get(address.lower())
        return None

    def _record(self, delivery: Delivery) -> int:
        with self._lock:
            self._deliveries.append(delivery)
            return len(self._deliveries)

    def _authenticate(self, server: Any, session: Any, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.users.get(login) == password
        self.auth_log.append((mechanism, login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


def simple_message(message_id: str, from_addr: str, to_addrs: list[str], subject: str = "test",
                   body: str = "你好\r\n.a line that starts with a dot\r\n") -> bytes:
    """A small 8-bit UTF-8 mail with CRLF line ends, as a renderer would give."""
    head = (f"From: {from_addr}\r\nTo: {', '.join(to_addrs)}\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
    return (head + "\r\n" + body).encode("utf-8")


def prepare_simple(session: Any, row: Any) -> bytes:
    """A `prepare` for send_due: the row as a simple_message (context "body", if any)."""
    body = row.context.get("body") if row.context else None
    return simple_message(row.message_id, row.from_addr, list(row.to_addrs),
                          subject=f"[{row.case_ref}] {row.template}" if row.case_ref
                          else row.template,
                          **({"body": body} if body else {}))


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtps_server(smtp_tls: TlsFiles) -> Iterator[SmtpServer]:
    server = SmtpServer(security="tls", tls=smtp_tls, users={USER: PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def starttls_server(smtp_tls: TlsFiles) -> Iterator[SmtpServer]:
    server = SmtpServer(security="starttls", tls=smtp_tls, users={USER: PASSWORD}).start()
    yield server
    server.stop()
