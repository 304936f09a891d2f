"""Parsing the [mailbox] url forms (CONTRACTS.md, Configuration)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.config import Config
from mailbot.mailbox.imap import ImapSource
from mailbot.mailbox.maildir import MaildirSource
from mailbot.mailbox.url import (
    MailboxURL,
    MailboxURLError,
    maildir_path,
    parse_mailbox_url,
    source_from_config,
    source_from_url,
)

NO_ENV: dict[str, str] = {}


def parse(url: str, env: dict[str, str] | None = None) -> MailboxURL:
    return parse_mailbox_url(url, environ=NO_ENV if env is None else env)


def test_imaps_with_password() -> None:
    u = parse("imaps://xmport%40189.cn:AbCd1234efgh@imap.189.cn:993/INBOX")
    assert (u.scheme, u.host, u.port, u.user, u.password, u.folder) == (
        "imaps", "imap.189.cn", 993, "xmport@189.cn", "AbCd1234efgh", "INBOX")
    assert u.tls and not u.starttls and u.is_imap
    assert u.identity == "imaps://xmport@189.cn@imap.189.cn:993/INBOX"
    assert "AbCd1234efgh" not in repr(u) + u.identity + u.redacted()


def test_default_ports_and_folder() -> None:
    assert parse("imaps://u:p@imap.example.cn").port == 993
    assert parse("imaps://u:p@imap.example.cn").folder == "INBOX"
    assert parse("imap://u:p@imap.example.cn/").port == 143


def test_starttls() -> None:
    u = parse("imap://host.example:143/INBOX?starttls")
    assert u.starttls and u.tls and u.user == "" and u.password is None
    assert parse("imap://h/INBOX?starttls=yes").starttls
    assert not parse("imap://h/INBOX?starttls=no").starttls
    with pytest.raises(MailboxURLError):
        parse("imaps://h/INBOX?starttls")


def test_plain_loopback() -> None:
    u = parse("imap://USER:PASS@127.0.0.1:10143/INBOX")
    assert (u.host, u.port, u.user, u.password, u.tls) == ("127.0.0.1", 10143, "USER", "PASS",
                                                          False)


def test_special_characters_in_password() -> None:
    pw = "p@ss:w/rd%+ #?&=中"
    u = parse(f"imap://user:{quote(pw, safe='')}@127.0.0.1:143/INBOX")
    assert u.password == pw
    # An unencoded '@' in the password still works: the host follows the last '@'.
    u = parse("imaps://user:a@b@imap.example.cn/INBOX")
    assert (u.password, u.host) == ("a@b", "imap.example.cn")


def test_folder_is_percent_decoded() -> None:
    assert parse(f"imap://u:p@h/{quote('收件箱')}").folder == "收件箱"


def test_password_from_environment() -> None:
    env = {"MAILBOT_IMAP_PASSWORD": "授权码-from-env"}
    assert parse("imaps://u@imap.189.cn/INBOX", env).password == "授权码-from-env"
    # A password written in the URL wins.
    assert parse("imaps://u:inurl@imap.189.cn/INBOX", env).password == "inurl"
    u = parse_mailbox_url("imaps://u@h/INBOX", password_env="OTHER", environ={"OTHER": "x"})
    assert u.password == "x"
    assert parse("imaps://u@h/INBOX").password is None


@pytest.mark.parametrize("bad", [
    "pop3://u:p@h/INBOX", "imap://", "imap://u:p@h:notaport/INBOX", "imap://h:0/INBOX",
    "imap://h:70000/", "imap://h/INBOX?foo=1", "maildir:", "h:143",
])
def test_rejects(bad: str) -> None:
    with pytest.raises(MailboxURLError):
        parse(bad)


def test_error_never_shows_password() -> None:
    with pytest.raises(MailboxURLError) as err:
        parse("imap://u:s3cr3tpw@h:bad/INBOX")
    assert "s3cr3tpw" not in str(err.value)


def test_maildir_forms(tmp_path: Path) -> None:
    assert parse("maildir:var/mail").path == "var/mail"
    assert parse(f"maildir:{tmp_path}").path == str(tmp_path)
    assert parse(f"maildir://{tmp_path}").path == str(tmp_path)
    assert parse(f"maildir:{tmp_path}").identity == f"maildir:{tmp_path}"


def test_source_from_url(tmp_path: Path) -> None:
    src = source_from_url(f"maildir:{tmp_path / 'm'}", poll_seconds=1, fetch_batch=5)
    assert isinstance(src, MaildirSource) and src.poll_seconds == 1
    imap = source_from_url("imap://u:p@127.0.0.1:1/INBOX", password_env=None, fetch_batch=5)
    assert isinstance(imap, ImapSource) and imap.fetch_batch == 5  # built, not connected


def test_source_from_config_default_is_maildir_under_var(tmp_path: Path) -> None:
    cfg = Config()
    cfg.base_dir = str(tmp_path)
    src = source_from_config(cfg)
    assert isinstance(src, MaildirSource)
    assert src.root == tmp_path / "var" / "mail"
    assert maildir_path(cfg) == tmp_path / "var" / "mail"
    cfg.mailbox.url = "imaps://u@imap.189.cn/INBOX"
    assert maildir_path(cfg) is None
    imap = source_from_config(cfg)
    assert isinstance(imap, ImapSource)
    assert imap.idle_renew_seconds == 540 and imap.timeout == cfg.mailbox.timeout_seconds


@given(user=st.text(min_size=1, max_size=20), pw=st.text(min_size=1, max_size=30))
def test_round_trip_any_credentials(user: str, pw: str) -> None:
    url = f"imaps://{quote(user, safe='')}:{quote(pw, safe='')}@imap.189.cn:993/INBOX"
    u = parse(url)
    assert (u.user, u.password, u.host, u.port) == (user, pw, "imap.189.cn", 993)
