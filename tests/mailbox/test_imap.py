"""ImapSource against the real throw-away Dovecot (tests/dovecot.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot import __version__
from mailbot.mailbox import utf7
from mailbot.mailbox.base import ConnectionLost, MailboxError, MailSource, MessageRef
from mailbot.mailbox.imap import ImapSource
from mailbot.mailbox.url import parse_mailbox_url, source_from_url
from tests.support.dovecot import DovecotUser

pytestmark = pytest.mark.timeout(60)


def make_mail(subject: str = "测试公司+数字证书申办", body: str = "hello", size: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = "applicant@example.cn"
    msg["To"] = "xmport@189.cn"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((subject, body, size)))}@example.cn>"
    msg.set_content(body + "x" * size)
    return msg.as_bytes().replace(b"\n", b"\r\n")


class Recorder:
    """The injected sleep: records the backoff waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def slept() -> Recorder:
    return Recorder()


@pytest.fixture
def source(dovecot_user: DovecotUser, slept: Recorder) -> Iterator[ImapSource]:
    src = ImapSource(dovecot_user.url, timeout=10, sleep=slept, jitter=lambda: 1.0)
    src.open()
    yield src
    src.close()


def test_is_a_mail_source(source: ImapSource, dovecot_user: DovecotUser) -> None:
    assert isinstance(source, MailSource)
    assert source.identity == f"imap://{dovecot_user.username}@127.0.0.1:{dovecot_user.port}/INBOX"
    assert dovecot_user.password not in source.identity
    assert dovecot_user.password not in repr(source.url)


def test_append_list_fetch_keeps_unseen(source: ImapSource, dovecot_user: DovecotUser) -> None:
    raws = [make_mail(body=f"message {i}") for i in range(3)]
    uids = [dovecot_user.append(r) for r in raws]
    refs = source.list_messages()
    assert [r.uid for r in refs] == uids
    # Size known before fetching: RFC822.SIZE equals the stored bytes.
    assert [r.size for r in refs] == [len(r) for r in raws]
    assert all(r.key == str(r.uid) and r.folder == "INBOX" for r in refs)
    assert all(r.internal_date is not None and r.internal_date.tzinfo for r in refs)
    got = list(source.fetch(refs))
    assert [raw for _ref, raw in got] == raws
    # BODY.PEEK[] leaves the messages unseen.
    assert all("\\Seen" not in f for f in dovecot_user.flags().values())
    assert not any(r.seen for r in source.list_messages())


def test_since_uid_and_batches(dovecot_user: DovecotUser, slept: Recorder) -> None:
    raws = [make_mail(body=f"m{i}", size=100 * i) for i in range(7)]
    uids = [dovecot_user.append(r) for r in raws]
    with ImapSource(dovecot_user.url, fetch_batch=3, sleep=slept) as src:
        assert src.list_messages(since_uid=uids[-1]) == []  # "n:*" quirk filtered out
        later = src.list_messages(since_uid=uids[3])
        assert [r.uid for r in later] == uids[4:]
        assert [b for _r, b in src.fetch(src.list_messages())] == raws
        src.fetch_batch, src.fetch_batch_bytes = 100, 1  # the byte budget also splits batches
        assert [b for _r, b in src.fetch(src.list_messages())] == raws


def test_long_selected_inbox_sees_new_mail(source: ImapSource,
                                           dovecot_user: DovecotUser) -> None:
    """The daemon keeps INBOX selected for hours: listing again must see what came since."""
    first = dovecot_user.append(make_mail(body="first"))
    assert [r.uid for r in source.list_messages()] == [first]
    second = dovecot_user.append(make_mail(body="second"))  # another connection delivers
    assert [r.uid for r in source.list_messages(since_uid=first)] == [second]


def test_find_message_id(source: ImapSource, dovecot_user: DovecotUser) -> None:
    mine, other = make_mail(body="find me"), make_mail(body="other")
    mid = mine.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    uid = dovecot_user.append(mine, folder="已处理")
    dovecot_user.append(other, folder="已处理")
    assert [r.uid for r in source.find_message_id("已处理", mid)] == [uid]
    assert source.find_message_id("已处理", "<nobody@example.cn>") == []
    assert source.find_message_id("不存在", mid) == []


def test_fetch_skips_vanished(source: ImapSource, dovecot_user: DovecotUser) -> None:
    dovecot_user.append(make_mail(body="a"))
    refs = source.list_messages()
    ghost = MessageRef(uid=refs[0].uid + 50, key="x", size=1)
    assert [r.uid for r, _ in source.fetch([ghost, *refs])] == [refs[0].uid]


def test_move_to_processed_creates_folder(source: ImapSource, dovecot_user: DovecotUser) -> None:
    keep = dovecot_user.append(make_mail(body="stays"))
    go = dovecot_user.append(make_mail(body="goes"))
    assert "已处理" not in dovecot_user.folders()
    assert source.supports_move()
    refs = [r for r in source.list_messages() if r.uid == go]
    source.move(refs, "已处理")
    assert "已处理" in dovecot_user.folders()
    assert dovecot_user.uids("INBOX") == [keep]
    assert len(dovecot_user.uids("已处理")) == 1
    # On the wire the folder is modified UTF-7; on disk Dovecot keeps that name too.
    assert (dovecot_user.maildir / ("." + utf7.encode("已处理").decode())).is_dir()
    moved = source.list_folder("已处理")
    assert [b for _r, b in source.fetch(moved)] == [make_mail(body="goes")]
    source.move(refs, "已处理")  # moving again (after a crash) is harmless
    assert len(dovecot_user.uids("已处理")) == 1


def test_move_without_move_command_uses_uidplus(dovecot_user: DovecotUser,
                                                 slept: Recorder) -> None:
    a = dovecot_user.append(make_mail(body="a"))
    b = dovecot_user.append(make_mail(body="b"))
    # Someone else's \Deleted mail must survive our expunge.
    c = dovecot_user.append(make_mail(body="c"), flags=("\\Deleted",))
    with ImapSource(dovecot_user.url, use_move_command=False, sleep=slept) as src:
        src.move([r for r in src.list_messages() if r.uid == a], "已处理")
    assert dovecot_user.uids("INBOX") == [b, c]
    assert len(dovecot_user.uids("已处理")) == 1


def test_keyword_fallback_when_move_is_off(dovecot_user: DovecotUser, slept: Recorder) -> None:
    uid = dovecot_user.append(make_mail())
    with ImapSource(dovecot_user.url, use_move=False, sleep=slept) as src:
        assert not src.supports_move()
        refs = src.list_messages()
        src.add_keyword(refs, "$MailbotProcessed")
        assert "$MailbotProcessed" in src.list_messages()[0].flags
    assert dovecot_user.uids("INBOX") == [uid]
    assert "$MailbotProcessed" in dovecot_user.flags()[uid]
    assert "\\Seen" not in dovecot_user.flags()[uid]


def test_uidvalidity_stable(dovecot_user: DovecotUser, slept: Recorder) -> None:
    dovecot_user.append(make_mail())
    with ImapSource(dovecot_user.url, sleep=slept) as one:
        first = one.uidvalidity()
    with ImapSource(dovecot_user.url, sleep=slept) as two:
        two.list_messages()
        assert two.uidvalidity() == first != 0


def test_id_sent_after_login(source: ImapSource, dovecot: object,
                             dovecot_user: DovecotUser) -> None:
    source.list_messages()
    assert source.server_id.get("name") == "Dovecot"
    lines = [ln for ln in dovecot_user.server.log_text().splitlines()
             if f"imap({dovecot_user.username})" in ln and "ID sent:" in ln]
    assert lines, "Dovecot logged no ID from the client"
    assert "name=mailbot" in lines[0]
    assert f"version={__version__}" in lines[0]
    assert "vendor=China E-Port Xiamen sub-centre" in lines[0]


def test_idle_wakes_on_append(source: ImapSource, dovecot_user: DovecotUser) -> None:
    assert source.supports_idle()
    source.list_messages()
    started = threading.Event()

    def deliver() -> None:
        started.wait(5)
        dovecot_user.append(make_mail(body="arrives while idling"))

    t = threading.Thread(target=deliver)
    t.start()
    started.set()
    try:
        assert source.wait_for_changes(timeout=20) is True
    finally:
        t.join()
    assert len(source.list_messages()) == 1


def test_mail_that_came_between_listing_and_idle_wakes_at_once(source: ImapSource,
                                                                 dovecot_user: DovecotUser,
                                                                 slept: Recorder) -> None:
    """IDLE tells only of later mail: what came while the daemon was busy (after its listing,
    before its IDLE) is found first, not at the next sweep."""
    source.list_messages()
    dovecot_user.append(make_mail(body="came while the daemon was busy"))
    assert source.wait_for_changes(timeout=600) is True
    assert len(source.list_messages()) == 1
    assert source.wait_for_changes(timeout=0.2) is False  # nothing newer: IDLE, time out


def test_folder_state_changes_with_a_flag(source: ImapSource, dovecot_user: DovecotUser) -> None:
    """With CONDSTORE a STATUS tells of a flag set by another client (staff's red flag)."""
    dovecot_user.append(make_mail(), folder="INBOX")
    source.create_folder("已处理")
    uid = dovecot_user.append(make_mail(), folder=source._resolve(source.ensure_connected(),
                                                                   "已处理"))
    before = source.folder_state("已处理")
    assert before is not None and before == source.folder_state("已处理")
    with dovecot_user.client() as c:
        c.select_folder(source._resolve(source.ensure_connected(), "已处理"))
        c.add_flags([uid], [b"\\Flagged"])
    assert source.folder_state("已处理") != before
    assert source.folder_state("没有这个") is not None  # a missing folder has a state too


def test_idle_times_out_quietly_and_renews(dovecot_user: DovecotUser, slept: Recorder) -> None:
    with ImapSource(dovecot_user.url, idle_renew_seconds=0.1, sleep=slept) as src:
        assert src.wait_for_changes(timeout=0.35) is False
        assert src.list_messages() == []  # the connection is still usable after renewals


def test_polling_when_idle_is_off(dovecot_user: DovecotUser, slept: Recorder) -> None:
    with ImapSource(dovecot_user.url, use_idle=False, poll_seconds=30, sleep=slept) as src:
        assert src.wait_for_changes(timeout=600) is True
        assert src.wait_for_changes(timeout=5) is True
    assert slept.waits == [30, 5]


def test_reconnect_after_server_drops(source: ImapSource, dovecot_user: DovecotUser,
                                      slept: Recorder) -> None:
    dovecot_user.append(make_mail(body="before"))
    assert len(source.list_messages()) == 1
    dovecot_user.kick()
    dovecot_user.append(make_mail(body="after"))
    refs = source.list_messages()
    assert len(refs) == 2
    assert source.reconnects == 1
    assert slept.waits == [1.0]  # one backoff wait, recorded, not slept
    assert [b for _r, b in source.fetch(refs)][1] == make_mail(body="after")


def test_reconnect_during_idle(source: ImapSource, dovecot_user: DovecotUser) -> None:
    source.list_messages()
    kicker = threading.Timer(0.2, dovecot_user.kick)
    kicker.start()
    try:
        assert source.wait_for_changes(timeout=20) is True
    finally:
        kicker.join()
    assert source.list_messages() == []


def test_backoff_grows_capped_then_gives_up(dovecot: object, slept: Recorder) -> None:
    from tests.support.dovecot import free_port

    dead = f"imap://nobody:x@127.0.0.1:{free_port()}/INBOX"
    src = ImapSource(dead, max_retries=5, backoff_base=2, backoff_cap=10, sleep=slept,
                     jitter=lambda: 0.0, timeout=2)
    with pytest.raises(ConnectionLost):
        src.list_messages()
    # Waits before attempts 2..6: 2, 4, 8, 10, 10 (capped), jitter 0 halves each.
    assert slept.waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_wrong_password_is_not_retried(dovecot_user: DovecotUser, slept: Recorder) -> None:
    bad = parse_mailbox_url(dovecot_user.url)
    src = ImapSource(bad.__class__(**{**bad.__dict__, "password": "wrong"}), sleep=slept)
    with pytest.raises(MailboxError) as err:
        src.open()
    assert "wrong" not in str(err.value)
    assert slept.waits == []


def test_sent_folder_special_use(source: ImapSource, dovecot_user: DovecotUser) -> None:
    assert source.sent_folder() == "已发送"
    source.sent_folder_name = "Outbox"  # the \Sent attribute wins over configuration
    assert source.sent_folder() == "已发送"
    source.append(source.sent_folder(), make_mail(body="our reply"), flags=["\\Seen"])
    [uid] = dovecot_user.uids("已发送")
    assert "\\Seen" in dovecot_user.flags("已发送")[uid]


def test_append_creates_folder_and_returns_uid(source: ImapSource,
                                               dovecot_user: DovecotUser) -> None:
    uid = source.append("处理失败", make_mail(body="parked"))
    assert uid is not None and dovecot_user.uids("处理失败") == [uid]


def test_staff_folders_and_flagged(source: ImapSource, dovecot_user: DovecotUser) -> None:
    assert source.list_folder("已确认") == []
    a = dovecot_user.append(make_mail(body="a"))
    dovecot_user.append(make_mail(body="b"))
    c = dovecot_user.client()
    c.select_folder("INBOX")
    c.add_flags([a], ["\\Flagged"])
    assert [r.uid for r in source.flagged()] == [a]
    assert source.flagged()[0].flagged
    confirmed = dovecot_user.append(make_mail(body="ok"), folder="已确认")
    returned = dovecot_user.append(make_mail(body="no"), folder="退回")
    assert [r.uid for r in source.list_folder("已确认")] == [confirmed]
    [ref] = source.list_folder("退回")
    assert ref.uid == returned and ref.folder == "退回"
    assert [b for _r, b in source.fetch([ref])] == [make_mail(body="no")]


def test_utf7_folder_round_trip(source: ImapSource, dovecot_user: DovecotUser) -> None:
    for name in ("已处理", "已确认", "退回", "已发送"):
        assert utf7.decode(utf7.encode(name)) == name
        source.append(name, make_mail(body=name))
    assert utf7.encode("已处理") == b"&XfJZBHQG-"
    assert {"已处理", "已确认", "退回", "已发送"} <= set(dovecot_user.folders())
    # Raw LIST shows the wire form, which decodes back to the Chinese name.
    raw = dovecot_user.client()
    raw.folder_encode = False
    wire = {n if isinstance(n, str) else n.decode() for _f, _d, n in raw.list_folders()}
    assert "&XfJZBHQG-" in wire and "已处理" in {utf7.decode(n) for n in wire}


def test_password_from_environment(dovecot_user: DovecotUser, slept: Recorder,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot_user.password)
    src = source_from_url(dovecot_user.url_without_password, sleep=slept)
    assert isinstance(src, ImapSource)
    with src:
        assert src.list_messages() == []


def test_uidvalidity_change_is_seen(source: ImapSource, dovecot_user: DovecotUser) -> None:
    dovecot_user.append(make_mail())
    before = source.uidvalidity()
    res = dovecot_user.server.doveadm("mailbox", "update", "-u", dovecot_user.username,
                                      "--uid-validity", str(before + 1000), "INBOX")
    assert res.returncode == 0, res.stderr
    # Same source, possibly the same connection: the next read sees the new value.
    assert source.uidvalidity() == before + 1000


def test_silent_server_times_out(slept: Recorder) -> None:
    # Accepts TCP (the kernel backlog) but never greets: a timeout, not a hang.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        src = ImapSource(f"imap://u:p@127.0.0.1:{port}/INBOX", timeout=0.3, max_retries=1,
                         sleep=slept)
        with pytest.raises(ConnectionLost):
            src.list_messages()
    assert len(slept.waits) == 1


def test_imaps(dovecot_tls_user: DovecotUser, slept: Recorder) -> None:
    server = dovecot_tls_user.server
    dovecot_tls_user.append(make_mail(body="over tls"))
    url = (f"imaps://{quote(dovecot_tls_user.username)}:"
           f"{quote(dovecot_tls_user.password, safe='')}@127.0.0.1:{server.tls_port}/INBOX"
           f"?cafile={server.cert_path}")
    with ImapSource(url, sleep=slept) as src:
        assert src.url.tls
        [ref] = src.list_messages()
        assert [b for _r, b in src.fetch([ref])] == [make_mail(body="over tls")]
        assert src._client is not None and src._client.socket().version()


def test_starttls(dovecot_tls_user: DovecotUser, slept: Recorder) -> None:
    server = dovecot_tls_user.server
    url = dovecot_tls_user.url + f"?starttls&cafile={server.cert_path}"
    with ImapSource(url, sleep=slept) as src:
        assert src.list_messages() == []
        assert src._client is not None and src._client.socket().version()


def test_untrusted_certificate_fails_at_once(dovecot_tls_user: DovecotUser,
                                             slept: Recorder) -> None:
    server = dovecot_tls_user.server
    url = (f"imaps://{dovecot_tls_user.username}:x@127.0.0.1:{server.tls_port}/INBOX")
    with pytest.raises(MailboxError, match="certificate"):
        ImapSource(url, sleep=slept).open()
    assert slept.waits == []  # no retries for a certificate problem


def test_starttls_refused_when_not_offered(dovecot_user: DovecotUser, slept: Recorder) -> None:
    # The plain test server (ssl = no) offers no STARTTLS: never fall back to cleartext.
    with pytest.raises(MailboxError, match="STARTTLS"):
        ImapSource(dovecot_user.url + "?starttls", sleep=slept).open()


def test_non_ascii_password_uses_sasl_plain(dovecot: object, slept: Recorder) -> None:
    from tests.support.dovecot import DovecotServer

    assert isinstance(dovecot, DovecotServer)
    user = dovecot.add_user(password="授权码-Ab1")
    with ImapSource(user.url, sleep=slept) as src:  # LOGIN is ASCII-only
        assert src.list_messages() == []


@given(st.text(max_size=30))
def test_utf7_round_trip_any_name(name: str) -> None:
    wire = utf7.encode(name)
    assert wire.isascii() and utf7.decode(wire) == name and utf7.decode(wire.decode()) == name
