"""One outgoing mail as the exact bytes SMTP carries: headers, text+HTML, attachments.

Written out here rather than by `email.generator`, because its policy SMTP writes a non-ASCII
attachment name only as RFC 2231 continuations (`filename*0*=...; filename*1*=...`) with no
`name=` in Content-Type, which Outlook and Foxmail do not show. Each attachment carries:

    Content-Type: application/pdf;
     name="=?UTF-8?B?...?= =?UTF-8?B?...?="          RFC 2047, what Outlook/Foxmail read
    Content-Disposition: attachment;
     filename*=UTF-8''%E4%B8%AD...pdf                 RFC 2231, one line, no continuations

Loop safety (issue 10): `Auto-Submitted: auto-replied` (RFC 3834), `X-Auto-Response-Suppress:
All` (no Exchange out-of-office answers to us) and our own `X-Mailbot-Loop: <our address>`,
which intake can recognise whatever a server does to the other headers. Every line ends in
CRLF and is at most 998 octets (RFC 5322); bodies are UTF-8 in base64.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formataddr, getaddresses
from functools import lru_cache
from urllib.parse import quote

from mailbot.clock import local, now

LOOP_HEADER = "X-Mailbot-Loop"
CRLF = "\r\n"
MAX_LINE = 998  # octets a line may hold, CRLF excluded (RFC 5322 2.1.1)
BASE64_LINE = 76  # RFC 2045 6.8
EW_BYTES = 45  # UTF-8 octets per encoded word: 60 base64 characters, 72 with =?UTF-8?B??=
MAX_NAME = 80  # characters of an attachment's name: under 998 octets in either encoding
MAX_REFERENCES = 10  # the first and the latest ones: enough to thread, short enough to read
_MSGID = re.compile(r"^<[!-;=?-~]+>$")  # printable ASCII without < > or spaces
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


def compose(*, from_addr: str, to_addrs: Sequence[str], subject: str, text: str, html: str,
            message_id: str, in_reply_to: str | None = None, references: Sequence[str] = (),
            attachments: Iterable[Attachment | tuple[str, str, bytes]] = (),
            date: datetime | None = None, from_name: str | None = None,
            loop_marker: str = "") -> bytes:
    """The message as SMTP carries it (CRLF, lines <= 998 octets).

    `references` is the answered message's References then its Message-ID (in_reply_to is
    added at the end when missing); ids that are no valid msg-id are left out, our own
    `message_id` must be one. `loop_marker` is the X-Mailbot-Loop value (our address when
    empty); `date` defaults to now and is written in Beijing time.
    """
    if not _MSGID.match(message_id or ""):
        raise ValueError(f"not a Message-ID: {message_id!r}")
    if not to_addrs:
        raise ValueError("a mail needs at least one recipient")
    recipients: list[str] = []
    for i, address in enumerate(to_addrs):
        tokens = _address(address)
        recipients += [*tokens[:-1], tokens[-1] + ("," if i < len(to_addrs) - 1 else "")]
    headers = [
        ("From", _fold("From", _address(from_addr, from_name))),
        ("To", _fold("To", recipients)),
        ("Subject", _fold("Subject", _text_tokens(subject))),
        ("Date", format_datetime(local(date or now()))),  # the applicant's local time
        ("Message-ID", message_id),
    ]
    parent = in_reply_to if in_reply_to and _MSGID.match(in_reply_to) else None
    if parent:
        headers.append(("In-Reply-To", parent))
    chain = _references(references, parent)
    if chain:
        headers.append(("References", _fold("References", chain)))
    headers += [
        ("MIME-Version", "1.0"),
        ("Auto-Submitted", "auto-replied"),
        ("X-Auto-Response-Suppress", "All"),
        (LOOP_HEADER, _bare(loop_marker or from_addr)),
    ]
    files = [a if isinstance(a, Attachment) else Attachment(*a) for a in attachments]
    body = _alternative(text, html)
    if files:
        body = _multipart("mixed", [body, *(_attachment(f) for f in files)])
    raw = "".join(f"{name}: {value}{CRLF}" for name, value in headers).encode("ascii") + body
    _check_lines(raw)
    return raw


# -- headers ----------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """One line: control characters (CR, LF, ...) would inject header fields."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text or "").split())


def _text_tokens(text: str) -> list[str]:
    """An unstructured field's words: ASCII as it is while it leads (the case tag stays
    readable), the rest as RFC 2047 words."""
    words = _clean(text).split(" ")
    plain = 0
    while plain < len(words) and _plain(words[plain]):
        plain += 1
    rest = " ".join(words[plain:])
    return [*words[:plain], *(_encoded_words(rest).split(" ") if rest else [])]


def _plain(word: str) -> bool:
    # "=?" would be read as the start of an encoded word: such a word is encoded itself
    return word.isascii() and "=?" not in word


def _fold(name: str, tokens: Sequence[str], width: int = 78) -> str:
    """Tokens joined by spaces, a line broken before a token that would pass `width`."""
    lines: list[str] = []
    used = len(name) + 2
    for token in tokens:
        if not token:
            continue
        if lines and used + 1 + len(token) > width:
            lines.append(token)
            used = 1 + len(token)
        elif lines:
            lines[-1] += " " + token
            used += 1 + len(token)
        else:
            lines.append(token)
            used += len(token)
    return (CRLF + " ").join(lines)


@lru_cache(maxsize=4096)  # a batch writes the same few addresses again and again
def _bare(address: str) -> str:
    """The addr-spec of an address, domain in IDNA (ASCII); a non-ASCII local part needs
    SMTPUTF8, which the outbox does not speak."""
    parsed = getaddresses([_clean(address)])
    addr = parsed[0][1] if parsed and parsed[0][1] else _clean(address)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an e-mail address: {address!r}")
    if not local.isascii():
        raise ValueError(f"address needs SMTPUTF8 (non-ASCII before @): {address!r}")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"bad domain in {address!r}: {exc}") from exc
    return f"{local}@{domain}"


def _address(address: str, name: str | None = None) -> list[str]:
    """`name <addr>` as header tokens, the name quoted or RFC 2047-encoded; the name in
    `address` counts when none is given."""
    return list(_address_tokens(address, name))


@lru_cache(maxsize=4096)
def _address_tokens(address: str, name: str | None) -> tuple[str, ...]:
    parsed = getaddresses([_clean(address)])
    display = _clean(name if name is not None else (parsed[0][0] if parsed else ""))
    addr = _bare(address)
    if not display:
        return (addr,)
    if display.isascii():
        return (formataddr((display, addr)).rsplit(" <", 1)[0], f"<{addr}>")
    return (*_encoded_words(display).split(" "), f"<{addr}>")


def _references(references: Sequence[str], parent: str | None) -> list[str]:
    chain: list[str] = []
    for ref in [*(references or ()), *([parent] if parent else [])]:
        ref = (ref or "").strip()
        if _MSGID.match(ref) and len(ref) < MAX_LINE - 12 and ref not in chain:
            chain.append(ref)
    if len(chain) > MAX_REFERENCES:  # keep the thread's root and the latest ones
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1):]]
    return chain


# -- bodies -------------------------------------------------------------------------------------

def _boundary() -> str:
    # "=_" never occurs in base64, the only encoding used below, so no part can contain it.
    return f"=_mailbot_{secrets.token_hex(12)}"


def _base64(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    lines = [encoded[i:i + BASE64_LINE] for i in range(0, len(encoded), BASE64_LINE)]
    return b"".join(line + b"\r\n" for line in lines)


def _part(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    head = "".join(f"{name}: {value}{CRLF}" for name, value in headers).encode("ascii")
    return head + b"\r\n" + payload


def _text_part(subtype: str, text: str) -> bytes:
    # text/* travels in canonical form: CRLF line ends (RFC 2046 4.1.1)
    canonical = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return _part([("Content-Type", f'text/{subtype}; charset="utf-8"'),
                  ("Content-Transfer-Encoding", "base64")],
                 _base64(canonical.encode("utf-8")))


def _alternative(text: str, html: str) -> bytes:
    return _multipart("alternative", [_text_part("plain", text), _text_part("html", html)])


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    boundary = _boundary()
    out = [f'Content-Type: multipart/{subtype};{CRLF} boundary="{boundary}"{CRLF}{CRLF}'
           .encode("ascii")]
    for part in parts:
        out.append(f"--{boundary}{CRLF}".encode("ascii") + part + b"\r\n")
    out.append(f"--{boundary}--{CRLF}".encode("ascii"))
    return b"".join(out)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encoded_words(text: str) -> str:
    """RFC 2047 B words of at most EW_BYTES UTF-8 octets each, cut between characters."""
    words, chunk = [], b""
    for char in text:
        octets = char.encode("utf-8")
        if len(chunk) + len(octets) > EW_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += octets
    words.append(chunk)
    return " ".join(f"=?UTF-8?B?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _filename(name: str) -> str:
    """The last path component, one line, at most MAX_NAME characters (extension kept): a
    name is no path on the applicant's disk, and an endless one breaks the 998 limit."""
    base = re.split(r"[\\/]", _clean(name))[-1].strip() or "attachment"
    if len(base) <= MAX_NAME:
        return base
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext) > 10:
        return base[:MAX_NAME]
    return stem[:MAX_NAME - len(ext) - 1] + "." + ext


def _attachment(att: Attachment) -> bytes:
    name = _filename(att.filename)
    ctype = att.content_type.split(";", 1)[0].strip().lower()
    if not _TOKEN.match(ctype):
        ctype = "application/octet-stream"
    if name.isascii():
        type_param = f"name={_quoted(name)}"
        disposition = f"attachment;{CRLF} filename={_quoted(name)}"
    else:
        type_param = f'name="{_encoded_words(name)}"'
        # RFC 2231 single section: percent-encoded UTF-8 ("*" marks the charset prefix)
        disposition = f"attachment;{CRLF} filename*=UTF-8''{quote(name, safe='')}"
    return _part([("Content-Type", f"{ctype};{CRLF} {type_param}"),
                  ("Content-Disposition", disposition),
                  ("Content-Transfer-Encoding", "base64")], _base64(bytes(att.data)))


def _check_lines(raw: bytes) -> None:
    """Every line CRLF-terminated and <= 998 octets: what an SMTP server may otherwise cut."""
    crlf = raw.count(b"\r\n")
    if not raw.endswith(b"\r\n") or raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
        raise ValueError("the composed message has a bare LF or CR")
    longest = max(map(len, raw.split(b"\r\n")))
    if longest > MAX_LINE:
        raise ValueError(f"the composed message has a line of {longest} octets")
