"""What the staff-marks job asks of a mailbox: marked messages by flags and keywords,
Message-IDs without bodies, clearing a keyword, making a folder; IMAP and Maildir alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbot.mailbox.base import MailSource
from mailbot.mailbox.imap import ImapSource, search_criteria
from mailbot.mailbox.maildir import MaildirSource
from mailbot.refs import clean_message_id
from tests.support.dovecot import DovecotUser

pytestmark = pytest.mark.timeout(60)


def mail(n: int, pad: int = 0) -> bytes:
    return (f"From: a{n}@example.cn\r\nTo: xmport@189.cn\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@example.cn>\r\n\r\nbody {n}\r\n" + "x" * pad).encode()


@pytest.fixture
def imap(dovecot_user: DovecotUser) -> Iterator[ImapSource]:
    src = ImapSource(dovecot_user.url, sleep=lambda _s: None)
    src.open()
    yield src
    src.close()


def test_search_criteria() -> None:
    assert search_criteria() == ["ALL"]
    assert search_criteria(["\\Flagged", "$MailbotProcessed"], ["$MailbotApproved"]) == [
        "FLAGGED", "KEYWORD", "$MailbotProcessed", "UNKEYWORD", "$MailbotApproved"]
    assert search_criteria(lacking=["\\flagged", "\\Seen"]) == ["UNFLAGGED", "UNSEEN"]
    for bad in ("\\Recent", "two words", "", "a(b"):
        with pytest.raises(ValueError):
            search_criteria([bad])


def test_clean_message_id() -> None:
    assert clean_message_id(" <a@b>\r\n ") == "<a@b>"
    assert clean_message_id("junk <a@b> (comment)") == "<a@b>"
    assert clean_message_id("") is None and clean_message_id(None) is None


def test_imap_marked_message_ids_and_remove_flags(imap: ImapSource,
                                                  dovecot_user: DovecotUser) -> None:
    assert isinstance(imap, MailSource)
    assert imap.marked("已处理", having=["\\Flagged"]) == []  # no such folder yet
    a = dovecot_user.append(mail(1, pad=200_000), folder="已处理", flags=("\\Flagged",))
    b = dovecot_user.append(mail(2), folder="已处理", flags=("\\Flagged", "$MailbotApproved"))
    c = dovecot_user.append(mail(3), folder="已处理")
    assert [r.uid for r in imap.marked("已处理", having=["\\Flagged"],
                                       lacking=["$MailbotApproved"])] == [a]
    assert [r.uid for r in imap.marked("已处理")] == [a, b, c]
    refs = imap.marked("已处理", having=["\\Flagged"])
    assert {r.uid: mid for r, mid in imap.message_ids(refs).items()} == {
        a: "<m1@example.cn>", b: "<m2@example.cn>"}
    imap.add_keyword(refs, "$MailbotRefused")
    imap.remove_flags(refs, ["$MailbotRefused", "\\Flagged"])
    flags = dovecot_user.flags("已处理")
    assert not any({"$MailbotRefused", "\\Flagged"} & flags[u] for u in (a, b))
    assert "$MailbotApproved" in flags[b]


def test_imap_marked_sees_a_flag_set_meanwhile(imap: ImapSource,
                                               dovecot_user: DovecotUser) -> None:
    """The folder stays selected between searches: a flag another client set since counts."""
    uid = dovecot_user.append(mail(4), folder="已处理")
    assert imap.marked("已处理", having=["\\Flagged"]) == []
    c = dovecot_user.client()
    c.select_folder("已处理")
    c.add_flags([uid], ["\\Flagged"])
    assert [r.uid for r in imap.marked("已处理", having=["\\Flagged"])] == [uid]


def test_imap_create_folder_under_the_namespace(dovecot_prefixed_user: DovecotUser) -> None:
    src = ImapSource(dovecot_prefixed_user.url, sleep=lambda _s: None)
    try:
        assert src.create_folder("已确认") == "INBOX.已确认"
        assert src.create_folder("已确认") == "INBOX.已确认"  # idempotent
    finally:
        src.close()
    assert "INBOX.已确认" in dovecot_prefixed_user.folders()


@pytest.fixture
def md(tmp_path: Path) -> MaildirSource:
    src = MaildirSource(tmp_path / "mail", sleep=lambda _s: None)
    src.open()
    return src


def test_maildir_marked_message_ids_and_remove_flags(md: MaildirSource) -> None:
    md.append("已处理", mail(1), flags=["\\Flagged"])
    md.append("已处理", mail(2), flags=["\\Flagged"])
    md.append("已处理", mail(3))
    first, second, _third = md.list_folder("已处理")
    md.add_keyword([second], "$MailbotApproved")
    [ref] = md.marked("已处理", having=["\\Flagged"], lacking=["$MailbotApproved"])
    assert ref.key == first.key
    assert md.message_ids([ref]) == {ref: "<m1@example.cn>"}
    md.add_keyword([ref], "$MailbotRefused")
    assert "$MailbotRefused" in md.list_folder("已处理")[0].flags
    md.remove_flags([ref], ["$MailbotRefused", "\\Flagged"])
    assert md.list_folder("已处理")[0].flags == frozenset()
    assert md.marked("已处理", having=["\\Flagged"]) == [md.list_folder("已处理")[1]]


def test_maildir_keywords_keep_their_names_when_moved(md: MaildirSource) -> None:
    """Keyword letters index each folder's own dovecot-keywords: a move translates them."""
    md.append("退回", mail(9))
    md.add_keyword(md.list_folder("退回"), "$MailbotRejected")  # 退回: a = $MailbotRejected
    md.append("已处理", mail(1))
    [ref] = md.list_folder("已处理")
    md.add_keyword([ref], "$MailbotApproved")  # 已处理: a = $MailbotApproved
    md.move([ref], "退回")
    moved = [r for r in md.list_folder("退回") if r.key == ref.key]
    assert moved[0].flags == frozenset({"$MailbotApproved"})


def test_maildir_create_folder(md: MaildirSource) -> None:
    assert md.create_folder("已确认") == "已确认"
    assert (md.root / ".已确认" / "cur").is_dir()
