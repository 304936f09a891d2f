"""The transports against a real aiosmtpd on loopback: the [smtp] url forms, TLS, AUTH, and
how each server answer maps to a temporary or permanent failure."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from mailbot.config import ConfigError
from mailbot.outbox import transport as transport_module
from mailbot.outbox.transport import (
    FileTransport,
    PermanentFailure,
    ServerUnreachable,
    SmtpTransport,
    TemporaryFailure,
    TlsCertificateError,
    eml_name,
    transport_from_url,
    wire_form,
)
from tests.support import smtp as smtp_support
from tests.support.smtp import PASSWORD, USER, SmtpServer, TlsFiles, simple_message

# The fixtures this module uses (not imported by name: an argument would shadow the import).
smtp_server = smtp_support.smtp_server
smtp_tls = smtp_support.smtp_tls
smtps_server = smtp_support.smtps_server
starttls_server = smtp_support.starttls_server

FROM = "xmport@189.cn"
TO = "applicant@example.cn"


def _raw(n: int = 1, to: str = TO) -> bytes:
    return simple_message(f"<XM-2026-0007.{n:04d}@189.cn>", FROM, [to])


def _smtp(url: str, tmp_path: Path, *, password: str | None = None,
          ssl_context: ssl.SSLContext | None = None, timeout: float = 20) -> SmtpTransport:
    transport = transport_from_url(url, password=password, timeout=timeout, base_dir=tmp_path,
                                   ssl_context=ssl_context)
    assert isinstance(transport, SmtpTransport)
    return transport


def test_plain_smtp_delivers_the_exact_bytes(smtp_server: SmtpServer, tmp_path: Path) -> None:
    raw = _raw()
    with _smtp(smtp_server.url(), tmp_path) as transport:
        transport.send(raw, FROM, [TO])
    [got] = smtp_server.deliveries
    assert got.data == raw  # a line starting with "." and 8-bit UTF-8 survive unchanged
    assert (got.mail_from, got.rcpt_tos, got.login, got.tls) == (FROM, [TO], None, False)
    assert "BODY=8BITMIME" in got.mail_options


def test_bare_line_feeds_go_out_as_smtp_carries_them(smtp_server: SmtpServer,
                                                     tmp_path: Path) -> None:
    raw = b"Message-ID: <lf@189.cn>\nSubject: x\n\nline one\n.dot\nno final newline"
    with _smtp(smtp_server.url(), tmp_path) as transport:
        transport.send(raw, FROM, [TO])
    assert smtp_server.deliveries[0].data == wire_form(raw)
    assert wire_form(raw).endswith(b"no final newline\r\n")


def test_one_connection_carries_a_batch_and_survives_a_server_restart(
        smtp_server: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mailbot.outbox.transport")
    transport = _smtp(smtp_server.url(), tmp_path)
    try:
        transport.send(_raw(1), FROM, [TO])
        transport.send(_raw(2), FROM, [TO])
        smtp_server.stop()  # the kept connection dies with it
        smtp_server.start()
        transport.send(_raw(3), FROM, [TO])
    finally:
        transport.close()
    got = smtp_server.deliveries
    assert [d.message_id for d in got] == [
        "<XM-2026-0007.0001@189.cn>", "<XM-2026-0007.0002@189.cn>", "<XM-2026-0007.0003@189.cn>"]
    assert got[0].peer == got[1].peer != got[2].peer  # one connection, then a new one
    assert "kept connection was closed" in caplog.text  # noticed at MAIL, nothing was lost


@pytest.mark.parametrize("mechanisms", [("PLAIN", "LOGIN"), ("PLAIN",), ("LOGIN",)])
def test_smtps_logs_in_with_a_url_encoded_login(mechanisms: tuple[str, ...], smtp_tls: TlsFiles,
                                                tmp_path: Path) -> None:
    server = SmtpServer(security="tls", tls=smtp_tls, users={USER: PASSWORD},
                        mechanisms=mechanisms).start()
    try:
        url = server.url(USER, PASSWORD)
        assert "%40" in url and "%2F" in url  # the @ of the login and / of the password encoded
        with _smtp(url, tmp_path, ssl_context=smtp_tls.client_context()) as transport:
            assert PASSWORD not in repr(transport) and PASSWORD not in transport.name
            transport.send(_raw(), FROM, [TO])
    finally:
        server.stop()
    [got] = server.deliveries
    assert (got.login, got.tls, got.data) == (USER, True, _raw())
    assert [(m, ok) for m, _login, ok in server.auth_log] == [(mechanisms[0], True)]


@pytest.mark.parametrize("mechanisms", [("PLAIN",), ("LOGIN",)])
def test_starttls_then_auth_with_the_password_argument(mechanisms: tuple[str, ...],
                                                       smtp_tls: TlsFiles,
                                                       tmp_path: Path) -> None:
    server = SmtpServer(security="starttls", tls=smtp_tls, users={USER: PASSWORD},
                        mechanisms=mechanisms).start()
    try:
        with _smtp(server.url(USER), tmp_path, password=PASSWORD,
                   ssl_context=smtp_tls.client_context()) as transport:
            transport.send(_raw(), FROM, [TO])
    finally:
        server.stop()
    [got] = server.deliveries
    assert (got.login, got.tls) == (USER, True)
    assert server.auth_log == [(mechanisms[0], USER, True)]


def test_starttls_is_required_when_asked(smtp_server: SmtpServer, tmp_path: Path) -> None:
    url = smtp_server.url() + "?starttls"  # a server that offers no STARTTLS
    with _smtp(url, tmp_path) as transport, pytest.raises(ServerUnreachable, match="STARTTLS"):
        transport.send(_raw(), FROM, [TO])
    assert smtp_server.deliveries == []


@pytest.mark.parametrize("fixture", ["smtps_server", "starttls_server"])
def test_an_untrusted_certificate_is_a_clear_error(fixture: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    server: SmtpServer = request.getfixturevalue(fixture)
    with _smtp(server.url(USER, PASSWORD), tmp_path) as transport:  # the system's trust only
        with pytest.raises(TlsCertificateError, match="certificate was not accepted") as err:
            transport.send(_raw(), FROM, [TO])
    assert isinstance(err.value, TemporaryFailure)
    assert PASSWORD not in str(err.value) and server.deliveries == [] and server.auth_log == []


def test_tls_to_a_plain_server_fails_the_handshake(smtp_server: SmtpServer,
                                                   tmp_path: Path) -> None:
    url = smtp_server.url().replace("smtp://", "smtps://")
    with _smtp(url, tmp_path) as transport, pytest.raises(ServerUnreachable):
        transport.send(_raw(), FROM, [TO])


def test_a_wrong_password_is_refused_without_showing_it(smtps_server: SmtpServer,
                                                        smtp_tls: TlsFiles,
                                                        tmp_path: Path) -> None:
    wrong = "not-the-password-42"
    with _smtp(smtps_server.url(USER, wrong), tmp_path,
               ssl_context=smtp_tls.client_context()) as transport:
        with pytest.raises(ServerUnreachable, match="535") as err:
            transport.send(_raw(), FROM, [TO])
    assert wrong not in str(err.value) and USER in str(err.value)


def test_connection_refused_is_temporary(tmp_path: Path) -> None:
    server = SmtpServer()  # a port nobody listens on
    with _smtp(server.url(), tmp_path) as transport, pytest.raises(ServerUnreachable):
        transport.send(_raw(), FROM, [TO])


def test_a_server_that_never_greets_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts (the kernel does) but never says 220
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"smtp://127.0.0.1:{listener.getsockname()[1]}"
        with _smtp(url, tmp_path, timeout=0.5) as transport:
            with pytest.raises(ServerUnreachable, match="no answer|[Tt]imed out"):
                transport.send(_raw(), FROM, [TO])


@pytest.mark.parametrize(("stage", "reply", "error"), [
    ("MAIL", "451 4.3.0 Try again later", TemporaryFailure),
    ("MAIL", "553 5.7.1 Sender refused", PermanentFailure),
    ("RCPT", "450 4.2.0 Mailbox busy", TemporaryFailure),
    ("RCPT", "550 5.1.1 No such user", PermanentFailure),
    ("DATA", "451 4.3.0 Try again later", TemporaryFailure),
    ("DATA", "554 5.6.0 Message refused", PermanentFailure),
])
def test_server_answers_map_to_temporary_or_permanent(
        stage: str, reply: str, error: type[Exception], smtp_server: SmtpServer,
        tmp_path: Path) -> None:
    smtp_server.fail_next(1, reply, at=stage)
    with _smtp(smtp_server.url(), tmp_path) as transport:
        with pytest.raises(error, match=reply.split()[0]) as err:
            transport.send(_raw(1), FROM, [TO])
        assert type(err.value) is error  # not the server-level subclass: the server is fine
        transport.send(_raw(2), FROM, [TO])  # the same connection carries the next mail
    assert [d.message_id for d in smtp_server.deliveries] == ["<XM-2026-0007.0002@189.cn>"]


def test_several_recipients(smtp_server: SmtpServer, tmp_path: Path) -> None:
    a, b, c = "a@example.cn", "b@example.cn", "c@example.cn"
    smtp_server.refuse(b, "550 5.1.1 No such user")
    smtp_server.refuse(c, "450 4.2.1 Try later")
    with _smtp(smtp_server.url(), tmp_path) as transport:
        transport.send(_raw(1), FROM, [a, b])  # accepted for a: sent (b is only logged)
        with pytest.raises(PermanentFailure, match="every recipient refused"):
            transport.send(_raw(2), FROM, [b, b.upper()])
        with pytest.raises(TemporaryFailure) as err:  # one refusal is only temporary
            transport.send(_raw(3), FROM, [b, c])
        assert not isinstance(err.value, PermanentFailure)
    [got] = smtp_server.deliveries
    assert got.rcpt_tos == [a]


def test_non_ascii_address_needs_smtputf8(smtp_server: SmtpServer, tmp_path: Path) -> None:
    with _smtp(smtp_server.url(), tmp_path) as transport:
        with pytest.raises(PermanentFailure, match="SMTPUTF8"):
            transport.send(_raw(), FROM, ["张三@example.cn"])
    server = SmtpServer(smtputf8=True).start()
    try:
        with _smtp(server.url(), tmp_path) as transport:
            transport.send(_raw(), FROM, ["张三@example.cn"])
    finally:
        server.stop()
    assert server.deliveries[0].rcpt_tos == ["张三@example.cn"]


def test_file_writes_one_eml_per_message_as_smtp_carries_it(smtp_server: SmtpServer,
                                                            tmp_path: Path) -> None:
    transport = transport_from_url("file:outbox", password=None, timeout=1, base_dir=tmp_path)
    assert isinstance(transport, FileTransport) and transport.folder == tmp_path / "outbox"
    raws = [_raw(1), b"Message-ID: <x/../../evil@189.cn>\nSubject: lf only\n\n.dot", _raw(2)]
    with transport:
        for raw in raws:
            transport.send(raw, FROM, [TO])
        transport.send(raws[0], FROM, [TO])  # the same Message-ID again: the same file
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert len(files) == 3 and not any(name.startswith(".tmp") for name in files)
    assert "XM-2026-0007.0001@189.cn.eml" in files
    assert all("/" not in name and not name.startswith(".") for name in files)
    with _smtp(smtp_server.url(), tmp_path) as smtp:
        for raw in raws:
            smtp.send(raw, FROM, [TO])
    written = {(tmp_path / "outbox" / name).read_bytes() for name in files}
    assert written == {d.data for d in smtp_server.deliveries}  # byte for byte what SMTP carried


def test_file_paths(tmp_path: Path) -> None:
    absolute = tmp_path / "abs"
    for url in (f"file:{absolute}", f"file://{absolute}"):
        transport = transport_from_url(url, password=None, timeout=1, base_dir="/nonexistent")
        assert isinstance(transport, FileTransport) and transport.folder == absolute
    transport = transport_from_url("file:out", password=None, timeout=1, base_dir=tmp_path)
    transport.send(b"Subject: no id\r\n\r\nbody\r\n", FROM, [TO])
    [written] = (tmp_path / "out").iterdir()
    assert written.name.startswith("no-message-id-")


@pytest.mark.parametrize(("raw", "name"), [
    (b"From: a\r\nMessage-ID: <XM-2026-0001.ab12@189.cn>\r\n\r\nbody",
     "XM-2026-0001.ab12@189.cn.eml"),
    (b"From: a\r\nmessage-id:\r\n <folded@x.cn>\r\n\r\nMessage-ID: <body@x.cn>\r\n",
     "folded@x.cn.eml"),  # any case, folded; a "field" in the body is none
    (b"From: a\r\nMessage-ID: <first@x.cn>\r\nMessage-ID: <second@x.cn>\r\n\r\n",
     "first@x.cn.eml"),
    (b"From: a\r\nX-Message-ID: <other@x.cn>\r\n\r\n", None),
    (b"Subject: x\r\n\r\nMessage-ID: <in-the-body@x.cn>\r\n", None),
])
def test_file_names_come_from_the_first_message_id_field(raw: bytes, name: str | None) -> None:
    got = eml_name(raw)
    assert got == name if name is not None else got.startswith("no-message-id-")


def test_file_names_of_unsafe_message_ids_stay_apart() -> None:
    """Cleaned to the same characters, two ids still get two files (a hash of each)."""
    a = eml_name(b"Message-ID: <a b@x.cn>\r\n\r\n")
    b = eml_name(b"Message-ID: <a/b@x.cn>\r\n\r\n")
    assert a.startswith("a_b@x.cn-") and b.startswith("a_b@x.cn-") and a != b
    assert "/" not in eml_name("Message-ID: <../../中@x.cn>\r\n\r\n".encode())


def test_file_write_failure_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    transport = transport_from_url("file:blocked", password=None, timeout=1, base_dir=tmp_path)
    with pytest.raises(TemporaryFailure, match="cannot write"):
        transport.send(_raw(), FROM, [TO])


def test_file_batches_fail_per_file_and_sync_the_folder_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = transport_from_url("file:outbox", password=None, timeout=1, base_dir=tmp_path)
    (tmp_path / "outbox" / "XM-2026-0007.0002@189.cn.eml").mkdir(parents=True)  # in the way
    synced: list[Path] = []
    monkeypatch.setattr(transport_module, "_fsync_dir", synced.append)
    mails = [(_raw(n), FROM, [TO]) for n in (1, 2, 3)]
    first, second, third = transport.send_many(mails)
    assert first is None and third is None
    assert isinstance(second, TemporaryFailure) and "cannot write" in str(second)
    assert synced == [tmp_path / "outbox"]
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [
        "XM-2026-0007.0001@189.cn.eml", "XM-2026-0007.0002@189.cn.eml",
        "XM-2026-0007.0003@189.cn.eml"]

    def sync_fails(folder: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(transport_module, "_fsync_dir", sync_fails)
    outcomes = transport.send_many(mails[:1] + mails[2:])  # not durable: none is accepted
    assert all(isinstance(o, TemporaryFailure) and "cannot sync" in str(o) for o in outcomes)
    with pytest.raises(TemporaryFailure, match="Input/output error"):
        transport.send(*mails[0])


@pytest.mark.parametrize(("url", "security", "port", "user"), [
    ("smtps://u%40x.cn:pw@smtp.189.cn", "tls", 465, "u@x.cn"),
    ("smtps://u:pw@smtp.189.cn:994", "tls", 994, "u"),
    ("smtp://u:pw@smtp.189.cn?starttls", "starttls", 587, "u"),
    ("smtp://smtp.189.cn:2525?starttls=yes", "starttls", 2525, ""),
    ("smtp://127.0.0.1:2525", "plain", 2525, ""),
    ("smtp://127.0.0.1:2525?starttls=no", "plain", 2525, ""),
    ("smtp://u:pw@localhost:2525", "plain", 2525, "u"),
    ("SMTP://relay.example.cn/", "plain", 25, ""),
])
def test_url_forms(url: str, security: str, port: int, user: str) -> None:
    transport = transport_from_url(url, password=None, timeout=1, base_dir=".")
    assert isinstance(transport, SmtpTransport)
    assert (transport.security, transport.port, transport.user) == (security, port, user)
    assert "pw" not in transport.name and "pw" not in repr(transport)


@pytest.mark.parametrize(("url", "message"), [
    ("imap://host", "unknown scheme"),
    ("smtp://", "no host"),
    ("smtp://host:25/path", "no path"),
    ("smtps://host?starttls", "already TLS"),
    ("smtp://host?starttls=maybe", "starttls"),
    ("smtp://host?cafile=x", "unknown parameter"),
    ("file:", "needs a path"),
    ("smtps://someone@smtp.189.cn", "no password for someone"),
    ("smtp://someone:secret-pw@smtp.189.cn", "in clear"),
])
def test_bad_urls_are_refused_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        transport_from_url(url, password=None, timeout=1, base_dir=".")
    assert "secret-pw" not in str(err.value)


def test_password_argument_fills_in_for_the_url() -> None:
    transport = transport_from_url("smtps://someone@smtp.189.cn", password="from-env",
                                   timeout=1, base_dir=".")
    assert isinstance(transport, SmtpTransport) and transport._password == "from-env"
    transport = transport_from_url("smtps://someone:in%20url@smtp.189.cn",
                                   password="from-env", timeout=1, base_dir=".")
    assert isinstance(transport, SmtpTransport) and transport._password == "in url"
