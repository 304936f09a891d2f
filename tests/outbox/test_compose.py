"""The composed bytes: headers, CRLF, line lengths, and attachment names as three independent
MIME parsers read them (Python's email new API, its compat32 API, and Debian's ripmime, C)."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path

import pytest

from mailbot.outbox.compose import LOOP_HEADER, compose
from mailbot.outbox.context import NOTICE_FILENAME
from mailbot.outbox.render import Rendered, Renderer
from tests.outbox import context

MESSAGE_ID = "<XM-2026-0007.9f2c4e1ab37d0c55@189.cn>"
PARENT = "<tencent_5F2A@qq.com>"
FILES = [("sign.cer", "application/pkix-cert", b"\x30\x82\x01\x0asign" + bytes(range(256))),
         ("env.cer", "application/pkix-cert", b"\x30\x82\x01\x0aenv" * 40),
         ("envprivatekey", "application/octet-stream", b"\x30\x81\x9fkey" * 30),
         (NOTICE_FILENAME, "application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"0" * 3000)]
NAMES = [name for name, _t, _d in FILES]


@pytest.fixture(scope="module")
def issued() -> Rendered:
    return Renderer().render("issued", context("issued"))


def build(rendered: Rendered, **over) -> bytes:
    args = dict(from_addr="xmport@189.cn", from_name="中国电子口岸数据中心厦门分中心",
                to_addrs=["ca@xiangyu-port.com"], subject=rendered.subject, text=rendered.text,
                html=rendered.html, message_id=MESSAGE_ID, in_reply_to=PARENT,
                references=["<root.1@foxmail.com>", PARENT], attachments=FILES,
                date=datetime(2026, 11, 30, 2, 2, tzinfo=UTC))
    args.update(over)
    return compose(**args)


@pytest.fixture(scope="module")
def raw(issued: Rendered) -> bytes:
    return build(issued)


# -- bytes ----------------------------------------------------------------------------------------

def test_bytes_are_crlf_seven_bit_and_lines_at_most_998(raw: bytes) -> None:
    assert raw.endswith(b"\r\n") and raw.isascii()
    lines = raw.split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert max(len(line) for line in lines) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in head) <= 78  # the header block folds as RFC 5322 asks


def test_headers_thread_and_mark_the_mail_automatic(raw: bytes, issued: Rendered) -> None:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.defects == []
    assert msg["From"].addresses[0].display_name == "中国电子口岸数据中心厦门分中心"
    assert msg["From"].addresses[0].addr_spec == "xmport@189.cn"
    assert str(msg["To"]) == "ca@xiangyu-port.com"
    assert str(msg["Subject"]) == issued.subject
    assert msg["Subject"].startswith("[XM-2026-0007] ")
    assert raw.split(b"Subject: ", 1)[1].startswith(b"[XM-2026-0007]")  # readable raw too
    assert msg["Date"].datetime == datetime(2026, 11, 30, 2, 2, tzinfo=UTC)
    assert b"Date: Mon, 30 Nov 2026 10:02:00 +0800\r\n" in raw
    assert msg["Message-ID"] == MESSAGE_ID
    assert msg["In-Reply-To"] == PARENT
    assert msg["References"].split() == ["<root.1@foxmail.com>", PARENT]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg[LOOP_HEADER] == "xmport@189.cn" and LOOP_HEADER == "X-Mailbot-Loop"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["MIME-Version"] == "1.0"


def test_body_is_text_and_html_alternatives_with_the_files_after(raw: bytes,
                                                                 issued: Rendered) -> None:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    first = msg.get_payload()[0]
    assert first.get_content_type() == "multipart/alternative"
    plain, html = first.get_payload()
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert plain["Content-Transfer-Encoding"] == "base64"
    assert plain.get_content().replace("\r\n", "\n") == issued.text
    assert html.get_content().replace("\r\n", "\n") == issued.html
    assert plain.get_payload(decode=True).count(b"\r\n") == issued.text.count("\n")


def test_without_files_the_mail_is_just_the_alternatives(issued: Rendered) -> None:
    msg = email.message_from_bytes(build(issued, attachments=[]), policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


# -- attachment names, three parsers ---------------------------------------------------------------

def test_python_email_default_policy_reads_names_and_bytes(raw: bytes) -> None:
    msg = email.message_from_bytes(raw, policy=policy.default)
    parts = list(msg.iter_attachments())
    assert [p.get_filename() for p in parts] == NAMES
    assert [p.get_content() for p in parts] == [d for _n, _t, d in FILES]
    assert [p.get_content_type() for p in parts] == [t for _n, t, _d in FILES]
    for part in parts:  # each of the two forms on its own
        assert part["Content-Type"].params["name"] in NAMES
        assert part["Content-Disposition"].params["filename"] in NAMES
        assert part["Content-Disposition"].defects == ()
        # RFC 2047 words in a quoted name= break RFC 2047 section 5 on purpose: it is the form
        # Outlook and Foxmail read; Python notes it and decodes it all the same
        assert {str(d) for d in part["Content-Type"].defects} <= {
            "encoded word inside quoted string", "missing trailing whitespace after encoded-word"}


def _compat32_attachments(raw: bytes) -> list[Message]:
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    return [p for p in msg.walk() if p.get_content_disposition() == "attachment"]


def test_python_email_compat32_reads_rfc2231_and_rfc2047_each(raw: bytes) -> None:
    parts = _compat32_attachments(raw)
    assert [p.get_filename() for p in parts] == NAMES
    for part, name in zip(parts, NAMES, strict=True):
        rfc2231 = collapse_rfc2231_value(part.get_param("filename", header="content-disposition"))
        rfc2047 = str(make_header(decode_header(collapse_rfc2231_value(part.get_param("name")))))
        assert rfc2231 == rfc2047 == name
    notice = parts[-1]
    assert notice.get_param("filename*", header="content-disposition") is None  # one section
    assert notice.get_param("name").startswith("=?UTF-8?B?")
    raw_disposition = notice["Content-Disposition"]
    assert "filename*=UTF-8''%E4%B8%AD%E5%9B%BD" in raw_disposition
    assert "filename*0" not in raw_disposition  # no continuations: Outlook reads none


def _ripmime(raw: bytes, tmp_path: Path, label: str) -> dict[str, bytes]:
    if shutil.which("ripmime") is None:
        if os.environ.get("CI"):
            pytest.fail("ripmime is missing: apt-get install -y ripmime")
        pytest.skip("ripmime is not installed (apt-get install -y ripmime)")
    src, out = tmp_path / f"{label}.eml", tmp_path / label
    src.write_bytes(raw)
    out.mkdir()
    subprocess.run(["ripmime", "-i", str(src), "-d", str(out), "--no-nameless"],
                   check=True, capture_output=True, timeout=60)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_ripmime_reads_the_names_from_either_form_alone(raw: bytes, tmp_path: Path) -> None:
    want = {name: data for name, _t, data in FILES}
    assert _ripmime(raw, tmp_path, "both") == want
    # Take away one form at a time: each alone still names the file (Outlook/Foxmail read
    # name=, RFC 2231 readers filename*=).
    only_2231 = re.sub(rb';\r\n name="=\?UTF-8\?B\?[^"]*"', b"", raw)
    only_2047 = re.sub(rb";\r\n filename\*=UTF-8''[^\r]*", b"", raw)
    assert only_2231 != raw and only_2047 != raw
    assert _ripmime(only_2231, tmp_path, "rfc2231") == want
    assert _ripmime(only_2047, tmp_path, "rfc2047") == want


def test_odd_file_names_are_made_safe_and_still_read(issued: Rendered) -> None:
    files = [("..\\..\\C:/证书/\"新\" 文件\r\n名.pdf", "application/pdf; charset=x", b"1"),
             ("a" * 20 + "中" * 200 + ".cer", "not a type", b"2"),
             ('re"port.txt', "text/plain", b"3")]
    raw = build(issued, attachments=files)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parts = list(email.message_from_bytes(raw, policy=policy.default).iter_attachments())
    # path parts and line breaks gone; an endless name cut to 80 characters, extension kept
    assert [p.get_filename() for p in parts] == ['"新" 文件 名.pdf', "a" * 20 + "中" * 56 + ".cer",
                                                 're"port.txt']
    assert [p.get_content_type() for p in parts] == ["application/pdf",
                                                     "application/octet-stream", "text/plain"]
    compat = _compat32_attachments(raw)
    assert [str(make_header(decode_header(p.get_param("name")))) for p in compat] == \
        [p.get_filename() for p in parts]


# -- headers in edge cases ---------------------------------------------------------------------------

def test_a_long_chinese_subject_folds_and_decodes_back(issued: Rendered) -> None:
    subject = "[XM-2026-0123] " + "厦门某某国际供应链管理有限公司" * 6 + "：数字证书已签发 ok"
    raw = build(issued, subject=subject)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert str(email.message_from_bytes(raw, policy=policy.default)["Subject"]) == subject
    compat = email.message_from_bytes(raw, policy=policy.compat32)
    assert str(make_header(decode_header(compat["Subject"]))) == subject


def test_a_short_ascii_subject_stays_as_it_is(issued: Rendered) -> None:
    raw = build(issued, subject="[mailbot] 2026-11-30 digest")
    assert b"\r\nSubject: [mailbot] 2026-11-30 digest\r\n" in raw


def test_no_header_can_be_injected(issued: Rendered) -> None:
    raw = build(issued, subject="hi\r\nBcc: victim@example.com", from_name="x\r\nBcc: y@z",
                to_addrs=["张三\n <zhang@example.com>"])
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None and b"\r\nBcc:" not in raw
    assert str(msg["Subject"]) == "hi Bcc: victim@example.com"
    assert msg["To"].addresses[0].display_name == "张三"


def test_addresses_are_encoded_for_smtp(issued: Rendered) -> None:
    raw = build(issued, to_addrs=["王 五 <wang@例子.公司>", "ops@example.com"])
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert [a.addr_spec for a in msg["To"].addresses] == ["wang@xn--fsqu00a.xn--55qx5d",
                                                          "ops@example.com"]
    assert msg["To"].addresses[0].display_name == "王 五"
    with pytest.raises(ValueError, match="SMTPUTF8"):
        build(issued, to_addrs=["张三@example.com"])
    with pytest.raises(ValueError, match="not an e-mail address"):
        build(issued, to_addrs=["nobody"])
    with pytest.raises(ValueError, match="recipient"):
        build(issued, to_addrs=[])


def test_message_ids_are_checked_and_the_thread_kept_short(issued: Rendered) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        build(issued, message_id="XM-2026-0007.1@189.cn")
    chain = [f"<m{i}@example.com>" for i in range(15)]
    raw = build(issued, in_reply_to="<last@example.com>",
                references=[*chain, "no brackets", "<bad id@x>", chain[3]])
    msg = email.message_from_bytes(raw, policy=policy.default)
    refs = msg["References"].split()
    assert refs[0] == chain[0] and refs[-1] == "<last@example.com>" and len(refs) == 10
    assert "no" not in msg["References"] and "<bad" not in msg["References"]
    assert msg["In-Reply-To"] == "<last@example.com>"
    plain = email.message_from_bytes(build(issued, in_reply_to=None, references=[]),
                                     policy=policy.default)
    assert plain["In-Reply-To"] is None and plain["References"] is None


def test_the_loop_marker_is_our_address(issued: Rendered) -> None:
    raw = build(issued, loop_marker="Desk <xmport@189.cn>")
    assert b"\r\nX-Mailbot-Loop: xmport@189.cn\r\n" in raw


def test_a_subject_that_looks_encoded_reads_as_written(issued: Rendered) -> None:
    subject = "[XM-2026-0007] =?utf-8?b?5Lit?= 中"
    raw = build(issued, subject=subject)
    assert str(email.message_from_bytes(raw, policy=policy.default)["Subject"]) == subject


@pytest.mark.parametrize("raw", [b"a\r\nb\nc\r\n", b"a\r\nb\rc\r\n", b"a\r\nb", b"a\n\r\n",
                                 b"x" * 999 + b"\r\n"])
def test_the_line_check_refuses_bare_line_ends_and_long_lines(raw: bytes) -> None:
    from mailbot.outbox.compose import _check_lines

    with pytest.raises(ValueError):
        _check_lines(raw)
    _check_lines(b"a\r\n" + b"x" * 998 + b"\r\n")  # CRLF only, 998 octets: fine
