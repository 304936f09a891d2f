"""MaildirSource: the embedded default mailbox (./var/mail), and Dovecot reading what it wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailbot.mailbox.base import MailboxError, MailSource, MessageRef
from mailbot.mailbox.maildir import MaildirSource
from tests.support.dovecot import DovecotUser


def mail(n: int) -> bytes:
    return (f"From: a{n}@example.cn\r\nTo: xmport@189.cn\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@example.cn>\r\n\r\nbody {n}\r\n").encode()


def drop(root: Path, name: str, raw: bytes, mtime: int) -> Path:
    """Deliver like an MTA or a user would: a file straight into new/."""
    p = root / "new" / name
    p.write_bytes(raw)
    os.utime(p, (mtime, mtime))
    return p


class Recorder(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def src(tmp_path: Path) -> MaildirSource:
    s = MaildirSource(tmp_path / "mail", poll_seconds=2, sleep=Recorder())
    s.open()
    return s


def test_fresh_maildir_is_created(src: MaildirSource) -> None:
    assert isinstance(src, MailSource)
    assert all((src.root / d).is_dir() for d in ("cur", "new", "tmp"))
    assert src.identity == f"maildir:{src.root}"
    assert src.list_messages() == [] and src.uidvalidity() == 0 and src.supports_move()


def test_list_and_fetch_oldest_first(src: MaildirSource) -> None:
    drop(src.root, "200.b.host", mail(2), 2_000_000_200)
    drop(src.root, "100.a.host", mail(1), 2_000_000_100)
    refs = src.list_messages()
    assert [r.key for r in refs] == ["100.a.host", "200.b.host"]
    assert [r.size for r in refs] == [len(mail(1)), len(mail(2))]
    assert all(r.uid == 0 and r.folder == "INBOX" and not r.seen for r in refs)
    assert [b for _r, b in src.fetch(refs)] == [mail(1), mail(2)]
    # Reading changes nothing: still in new/, no flags.
    assert sorted(os.listdir(src.root / "new")) == ["100.a.host", "200.b.host"]


def test_flags_from_file_names(src: MaildirSource) -> None:
    (src.root / "cur" / "300.c.host:2,FS").write_bytes(mail(3))
    [ref] = src.list_messages()
    assert ref.key == "300.c.host" and ref.flags == {"\\Flagged", "\\Seen"}
    assert [r.key for r in src.flagged()] == ["300.c.host"]


def test_move_to_processed_never_deletes(src: MaildirSource) -> None:
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    drop(src.root, "2.b.h", mail(2), 2_000_000_002)
    first, second = src.list_messages()
    src.move([first], "已处理")
    assert [r.key for r in src.list_messages()] == ["2.b.h"]
    moved = src.list_folder("已处理")
    assert [r.key for r in moved] == ["1.a.h"] and moved[0].folder == "已处理"
    assert (src.root / ".已处理" / "new" / "1.a.h").read_bytes() == mail(1)
    assert (src.root / ".已处理" / "maildirfolder").exists()
    src.move([first], "已处理")  # again (after a crash): harmless
    assert [b for _r, b in src.fetch(moved)] == [mail(1)]
    # Moved back out of a staff folder works the same way.
    src.move(moved, "退回")
    assert src.list_folder("已处理") == [] and len(src.list_folder("退回")) == 1


def test_fetch_skips_vanished(src: MaildirSource) -> None:
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    ghost = MessageRef(uid=0, key="nope", size=1)
    assert [r.key for r, _ in src.fetch([ghost, *src.list_messages()])] == ["1.a.h"]


def test_keyword_and_flags(src: MaildirSource) -> None:
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    refs = src.list_messages()
    src.add_keyword(refs, "$MailbotProcessed")
    src.add_keyword(refs, "$MailbotProcessed")
    src.add_flags(refs, ["\\Flagged"])
    [ref] = src.list_messages()
    assert ref.flags == {"$MailbotProcessed", "\\Flagged"}
    assert os.listdir(src.root / "cur") == ["1.a.h:2,Fa"]
    assert (src.root / "dovecot-keywords").read_text() == "0 $MailbotProcessed\n"


def test_append_and_sent_folder(src: MaildirSource) -> None:
    assert src.sent_folder() == "Sent"  # nothing exists yet: "Sent" (CONTRACTS.md)
    src.append("已发送", mail(9), flags=["\\Seen"])
    assert src.sent_folder() == "已发送"  # the first fallback that exists
    [ref] = src.list_folder("已发送")
    assert ref.seen and [b for _r, b in src.fetch([ref])] == [mail(9)]
    assert MaildirSource(src.root, sent_folder_name="Sent").sent_folder() == "Sent"
    src.append("INBOX", mail(8))
    assert len(src.list_messages()) == 1


def test_sent_fallback_uses_existing_folder(src: MaildirSource) -> None:
    src.md.add_folder("Sent Items")
    assert src.sent_folder() == "Sent Items"


def test_dovecot_named_folder_is_used(src: MaildirSource) -> None:
    # A folder Dovecot made (".&XfJ4bouk-", modified UTF-7 for 已确认) is found and used.
    src.md.add_folder("&XfJ4bouk-")
    src.append("已确认", mail(1))
    assert len(src.list_folder("已确认")) == 1
    assert not (src.root / ".已确认").exists()


def test_wait_for_changes_polls_without_sleeping(src: MaildirSource) -> None:
    src.list_messages()
    assert src.wait_for_changes(timeout=5) is False
    assert src.sleep == [1, 1, 1, 1, 1]  # looked at every second, recorded not slept
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    assert src.wait_for_changes(timeout=5) is True
    assert src.wait_for_changes(timeout=0) is False


def test_dovecot_reads_what_maildir_source_wrote(dovecot_user: DovecotUser) -> None:
    # The demo's Maildir and Dovecot agree on layout: Dovecot serves our moved mail and flags.
    assert dovecot_user.uids() == []  # Dovecot creates the Maildir (owned by vmail)
    src = MaildirSource(dovecot_user.maildir, sleep=Recorder())
    src.open()
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    drop(src.root, "2.b.h", mail(2), 2_000_000_002)
    first, second = src.list_messages()
    src.add_flags([first], ["\\Flagged"])
    dovecot_user.append(mail(7), folder="已处理")  # Dovecot names it .&XfJZBHQG- on disk
    src.move([second], "已处理")
    # We run as root in the tests; Dovecot reads as vmail (in production both are one user).
    for path in [src.root, *src.root.rglob("*")]:
        os.chown(path, dovecot_user.server.uid, dovecot_user.server.gid)
    assert [sorted(f - {"\\Recent"}) for f in dovecot_user.flags().values()] == [["\\Flagged"]]
    assert len(dovecot_user.uids("已处理")) == 2
    assert len(src.list_folder("已处理")) == 2
    appended = dovecot_user.append(mail(3))
    assert appended and len(mail(3)) in {r.size for r in src.list_messages()}


def test_capabilities(src: MaildirSource) -> None:
    assert src.keyed_by_uid is False and src.streams_large is False
    assert src.resolve_folder("已处理") == "已处理" and src.folder_uidvalidity("已处理") == 0


def test_fetch_range(src: MaildirSource) -> None:
    raw = mail(1) + b"x" * 10_000 + b"\r\n"
    drop(src.root, "1.a.h", raw, 2_000_000_001)
    [ref] = src.list_messages()
    pieces, offset = [], 0
    while True:
        piece = src.fetch_range(ref, offset, 4096)
        assert piece is not None
        pieces.append(piece)
        offset += len(piece)
        if len(piece) < 4096:
            break
    assert b"".join(pieces) == raw
    assert src.fetch_range(ref, len(raw) + 10, 100) == b""
    assert src.fetch_range(MessageRef(uid=0, key="gone", size=1), 0, 10) is None
    src.move([ref], "已处理")  # a ref names its folder: the old one no longer finds it
    assert src.fetch_range(ref, 0, 10) is None
    [moved] = src.list_folder("已处理")
    assert src.fetch_range(moved, 0, 5) == raw[:5]


def test_find_message_id(src: MaildirSource) -> None:
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    drop(src.root, "2.b.h", mail(2), 2_000_000_002)
    src.move(src.list_messages(), "已处理")
    assert [r.key for r in src.find_message_id("已处理", "<m2@example.cn>")] == ["2.b.h"]
    assert src.find_message_id("已处理", "<m9@example.cn>") == []
    assert src.find_message_id("不存在", "<m1@example.cn>") == []
    assert [r.key for r in src.find_message_id("INBOX", "<m1@example.cn>")] == []


def test_sleep_interrupt_propagates(tmp_path: Path) -> None:
    """Ctrl-C (or a stop request raised by the sleep callable) ends the wait at once."""
    calls: list[float] = []

    def interrupted(seconds: float) -> None:
        calls.append(seconds)
        raise KeyboardInterrupt

    s = MaildirSource(tmp_path / "mail", poll_seconds=2, sleep=interrupted)
    s.open()
    with pytest.raises(KeyboardInterrupt):
        s.wait_for_changes(timeout=600)
    assert calls == [1]  # the first one-second look, then out


def test_folder_that_cannot_be_made_is_a_clear_error(src: MaildirSource) -> None:
    drop(src.root, "1.a.h", mail(1), 2_000_000_001)
    (src.root / ".已处理").write_text("not a folder")  # in the way of the new folder
    refs = src.list_messages()
    with pytest.raises(MailboxError, match="cannot create folder '已处理'"):
        src.move(refs, "已处理")
    assert [r.key for r in src.list_messages()] == ["1.a.h"]  # nothing lost


def test_folder_state_changes_with_mail_and_flags(src: MaildirSource) -> None:
    missing = src.folder_state("已处理")
    src.append("已处理", mail(1))
    state = src.folder_state("已处理")
    assert state != missing and state == src.folder_state("已处理")
    [ref] = src.list_folder("已处理")
    src.add_flags([ref], ["\\Flagged"])  # staff's red flag renames the file (":2,F")
    assert src.folder_state("已处理") != state
