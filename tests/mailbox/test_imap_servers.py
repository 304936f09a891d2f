"""ImapSource on servers unlike the default Dovecot: an INBOX.-prefixed namespace
(Cyrus/Courier), a user whose folder creation is refused, a server without CAPABILITY in its
login answer; the ID-first rule on every connection; Ctrl-C while waiting."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mailbot.mailbox.base import MailboxError, MailSource, MessageRef
from mailbot.mailbox.imap import ImapSource
from tests.mailbox.test_imap import Recorder, make_mail
from tests.support.dovecot import DovecotUser, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def slept() -> Recorder:
    return Recorder()


def message_id(raw: bytes) -> str:
    return raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()


# -- the INBOX. namespace -------------------------------------------------------------------
@pytest.fixture
def prefixed(dovecot_prefixed_user: DovecotUser, slept: Recorder) -> Iterator[ImapSource]:
    src = ImapSource(dovecot_prefixed_user.url, timeout=10, sleep=slept, jitter=lambda: 1.0)
    src.open()
    yield src
    src.close()


def test_move_goes_under_the_namespace(prefixed: ImapSource,
                                       dovecot_prefixed_user: DovecotUser) -> None:
    user = dovecot_prefixed_user
    keep = user.append(make_mail(body="stays"))
    go_raw = make_mail(body="goes")
    go = user.append(go_raw)
    assert prefixed.personal_namespace() == ("INBOX.", ".")
    prefixed.move([r for r in prefixed.list_messages() if r.uid == go], "已处理")
    assert "INBOX.已处理" in user.folders() and "已处理" not in user.folders()
    assert user.uids("INBOX") == [keep] and len(user.uids("INBOX.已处理")) == 1
    # Every method taking a folder resolves the plain name the same way; refs keep it.
    [moved] = prefixed.list_folder("已处理")
    assert moved.folder == "已处理"
    assert [b for _r, b in prefixed.fetch([moved])] == [go_raw]
    assert prefixed.fetch_range(moved, 0, 20) == go_raw[:20]
    assert [r.uid for r in prefixed.find_message_id("已处理", message_id(go_raw))] == [moved.uid]
    assert prefixed.folder_uidvalidity("已处理") != 0
    prefixed.add_flags([moved], ["\\Flagged"])
    assert [r.uid for r in prefixed.flagged("已处理")] == [moved.uid]
    # INBOX stays INBOX; the prefix is never doubled; a new name goes under it.
    assert prefixed.resolve_folder("INBOX") == prefixed.resolve_folder("inbox") == "INBOX"
    assert prefixed.resolve_folder("已处理") == "INBOX.已处理"
    assert prefixed.resolve_folder("INBOX.已处理") == "INBOX.已处理"
    assert prefixed.resolve_folder("inbox.退回") == "inbox.退回"
    assert prefixed.resolve_folder("退回") == "INBOX.退回"
    assert prefixed.list_folder("退回") == []  # looked for, not created
    # Moving on again (staff folders) and a full name given by the caller both work.
    prefixed.move([moved], "已确认")
    assert len(user.uids("INBOX.已确认")) == 1 and user.uids("INBOX.已处理") == []
    [again] = prefixed.list_folder("INBOX.已确认")
    assert again.folder == "INBOX.已确认"


def test_copy_expunge_and_append_under_the_namespace(dovecot_prefixed_user: DovecotUser,
                                                     slept: Recorder) -> None:
    user = dovecot_prefixed_user
    a = user.append(make_mail(body="a"))
    b = user.append(make_mail(body="b"))
    with ImapSource(user.url, use_move_command=False, sleep=slept) as src:
        src.move([r for r in src.list_messages() if r.uid == a], "已处理")
        uid = src.append("处理失败", make_mail(body="parked"))
    assert user.uids("INBOX") == [b] and len(user.uids("INBOX.已处理")) == 1
    assert uid is not None and user.uids("INBOX.处理失败") == [uid]


def test_sent_fallback_under_the_namespace(prefixed: ImapSource,
                                           dovecot_prefixed_user: DovecotUser) -> None:
    user = dovecot_prefixed_user
    # No \Sent folder, none configured, no fallback exists: "Sent" under the namespace.
    assert prefixed.sent_folder() == "INBOX.Sent"
    prefixed.append(prefixed.sent_folder(), make_mail(body="copy"), flags=["\\Seen"])
    assert len(user.uids("INBOX.Sent")) == 1
    # A configured name goes under the namespace too.
    prefixed.sent_folder_name = "发件箱"
    assert prefixed.sent_folder() == "INBOX.发件箱"


def test_sent_fallback_finds_existing_folder_under_namespace(
        dovecot_prefixed_user: DovecotUser, slept: Recorder) -> None:
    user = dovecot_prefixed_user
    user.append(make_mail(body="old copy"), folder="INBOX.Sent Items")
    with ImapSource(user.url, sleep=slept) as src:
        assert src.sent_folder() == "INBOX.Sent Items"
    user.append(make_mail(body="older copy"), folder="INBOX.已发送")  # earlier in the list
    with ImapSource(user.url, sleep=slept) as src:
        assert src.sent_folder() == "INBOX.已发送"


def test_default_server_keeps_plain_names(dovecot_user: DovecotUser, slept: Recorder) -> None:
    with ImapSource(dovecot_user.url, sleep=slept) as src:
        assert src.personal_namespace() == ("", "/")
        assert src.resolve_folder("已处理") == "已处理"


# -- folder creation refused ----------------------------------------------------------------
def test_refused_create_is_a_clear_error_and_loses_nothing(dovecot_nocreate_user: DovecotUser,
                                                            slept: Recorder) -> None:
    user = dovecot_nocreate_user
    uid = user.append(make_mail(body="waiting"))
    with ImapSource(user.url, sleep=slept) as src:
        refs = src.list_messages()
        with pytest.raises(MailboxError) as err:
            src.move(refs, "已处理")
        text = str(err.value)
        assert "cannot create folder '已处理'" in text and "Permission denied" in text
        assert "\n" not in text and user.password not in text
        assert slept.waits == []  # a refusal is not a dropped connection: no retries
        with pytest.raises(MailboxError, match="cannot create folder"):
            src.append("处理失败", make_mail(body="parked"))
        # Nothing lost, nothing marked; the source still works.
        assert user.uids("INBOX") == [uid] and "\\Deleted" not in user.flags()[uid]
        assert [r.uid for r in src.list_messages()] == [uid]
        src.add_keyword(refs, "$MailbotProcessed")  # the keyword fallback still works
        user.allow_create()  # the cause fixed: the next try succeeds on the same source
        src.move(refs, "已处理")
    assert user.uids("INBOX") == [] and len(user.uids("已处理")) == 1


# -- ID first, on every connection ----------------------------------------------------------
@pytest.mark.parametrize("server", ["plain", "prefixed"])
def test_id_is_the_first_command_after_login(server: str, dovecot_user: DovecotUser,
                                             request: pytest.FixtureRequest,
                                             slept: Recorder) -> None:
    user = dovecot_user if server == "plain" else request.getfixturevalue(
        "dovecot_prefixed_user")
    user.append(make_mail(body="m"))
    user.record_commands()  # from here on only mailbot's connections (the helpers log in too)
    with ImapSource(user.url, sleep=slept) as src:
        src.move(src.list_messages(), "已处理")
        user.kick()  # the reconnect must send ID first again
        src.append("退回", make_mail(body="after the reconnect"))
        assert src.reconnects == 1
    time.sleep(0.2)  # let the server finish writing its logs
    sessions = user.commands()
    assert len(sessions) >= 2
    for commands in sessions:
        assert commands[0].startswith('ID ("name" "mailbot" "version" '), commands[:3]


class FakeImapServer(threading.Thread):
    """A minimal IMAP server whose LOGIN answer carries no CAPABILITY (many real servers),
    recording the commands it receives."""

    def __init__(self, id_answer: str = "OK") -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.id_answer = id_answer
        self.commands: list[str] = []

    def run(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as rf:
            conn.sendall(b"* OK fake IMAP ready\r\n")
            for line in rf:
                tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
                name = rest.split(" ", 1)[0].upper()
                self.commands.append(name)
                if name == "CAPABILITY":
                    reply = "* CAPABILITY IMAP4rev1 ID IDLE MOVE UIDPLUS\r\n"
                elif name == "ID" and self.id_answer == "OK":
                    reply = '* ID ("name" "fake")\r\n'
                elif name == "ID":
                    conn.sendall(f"{tag} {self.id_answer} unknown command\r\n".encode())
                    continue
                elif name == "LOGOUT":
                    conn.sendall(f"* BYE\r\n{tag} OK bye\r\n".encode())
                    return
                else:
                    reply = ""
                conn.sendall(f"{reply}{tag} OK done\r\n".encode())


@pytest.mark.parametrize("answer", ["OK", "BAD", "NO"])
def test_id_first_even_without_capability_in_login_answer(answer: str,
                                                           slept: Recorder) -> None:
    server = FakeImapServer(id_answer=answer)
    server.start()
    with ImapSource(f"imap://u:p@127.0.0.1:{server.port}/INBOX", timeout=5,
                    sleep=slept) as src:
        assert src.server_id == ({"name": "fake"} if answer == "OK" else {})
        assert src.supports_move()  # a refused ID is no reason to give up
    server.join(5)
    login = server.commands.index("LOGIN")
    assert server.commands[login + 1:] == ["ID", "CAPABILITY", "LOGOUT"]


# -- Ctrl-C and stop requests ---------------------------------------------------------------
class Stop(Exception):
    """What a daemon's sleep might raise when asked to stop."""


@pytest.mark.parametrize("exc", [KeyboardInterrupt, Stop])
def test_interrupted_backoff_propagates_at_once(exc: type[BaseException]) -> None:
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        raise exc

    dead = f"imap://nobody:x@127.0.0.1:{free_port()}/INBOX"
    src = ImapSource(dead, max_retries=None, sleep=sleep, timeout=2)  # would retry forever
    with pytest.raises(exc):
        src.list_messages()
    assert len(calls) == 1  # never swallowed, never retried


def test_interrupted_poll_propagates(dovecot_user: DovecotUser) -> None:
    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    with ImapSource(dovecot_user.url, use_idle=False, sleep=sleep) as src:
        with pytest.raises(KeyboardInterrupt):
            src.wait_for_changes(timeout=600)


def test_ctrl_c_during_idle_ends_the_wait_within_a_second(dovecot_user: DovecotUser,
                                                          slept: Recorder) -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        with ImapSource(dovecot_user.url, sleep=slept) as src:
            src.list_messages()
            started = time.monotonic()
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                src.wait_for_changes(timeout=30)
            assert time.monotonic() - started < 1.5
            dovecot_user.append(make_mail(body="after"))
            assert len(src.list_messages()) == 1  # usable again: a fresh connection
            assert slept.waits == []
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


def test_interrupt_just_after_idle_was_sent_drops_the_connection(
        dovecot_user: DovecotUser, slept: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop request that lands between sending IDLE and reading its answer leaves the
    connection mid-IDLE: it is dropped, so closing never sends LOGOUT into an IDLE that the
    server would not answer (the daemon then waited a whole socket timeout to stop)."""
    from imapclient import IMAPClient

    real_idle = IMAPClient.idle

    def idle_then_interrupted(self: IMAPClient) -> None:
        real_idle(self)
        raise KeyboardInterrupt

    with ImapSource(dovecot_user.url, sleep=slept) as src:
        src.list_messages()
        monkeypatch.setattr(IMAPClient, "idle", idle_then_interrupted)
        with pytest.raises(KeyboardInterrupt):
            src.wait_for_changes(timeout=30)
        assert src._client is None  # dropped, not left in IDLE for close() to log out of
        monkeypatch.setattr(IMAPClient, "idle", real_idle)
        dovecot_user.append(make_mail(body="after"))
        assert len(src.list_messages()) == 1


# -- the declared capabilities ----------------------------------------------------------------
def test_capabilities_and_fetch_range(dovecot_user: DovecotUser, slept: Recorder) -> None:
    raw = make_mail(body="big", size=100_000)
    uid = dovecot_user.append(raw)
    with ImapSource(dovecot_user.url, sleep=slept) as src:
        assert isinstance(src, MailSource)
        assert src.keyed_by_uid is True and src.streams_large is True
        [ref] = src.list_messages()
        pieces, offset = [], 0
        while True:
            piece = src.fetch_range(ref, offset, 30_000)
            assert piece is not None
            pieces.append(piece)
            offset += len(piece)
            if len(piece) < 30_000:
                break
        assert b"".join(pieces) == raw and len(pieces) == 4
        assert src.fetch_range(ref, len(raw) + 5, 100) == b""
        assert src.fetch_range(MessageRef(uid=uid + 10, key="x", size=1), 0, 100) is None
        dovecot_user.kick()  # reconnects and retries like every other call
        assert src.fetch_range(ref, 0, 10) == raw[:10]
    assert "\\Seen" not in dovecot_user.flags()[uid]
