"""A lazy, bounded MIME walker over raw bytes.

The stdlib parser splits every line of every base64 scan; here parts are offsets into the raw
buffer, found with bytes.find on the boundaries, and a part is decoded only when asked (in
chunks, so a 30 MB scan is hashed without being held twice). Headers are decoded leniently:
RFC 2047 B/Q, RFC 2231 parameters, raw 8-bit UTF-8 or GBK, mislabelled charsets.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import html
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any

# Hard limits so hostile input can neither hang nor blow memory.
MAX_DEPTH = 24            # multipart + message/rfc822 nesting
MAX_PARTS = 1000          # nodes walked per message
MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_FIELDS = 1000
MAX_TEXT_BYTES = 4 * 1024 * 1024  # a text body beyond this is cut for body searches
DECODE_CHUNK = 1 << 20
MAX_ENCODED_RFC822 = 32 * 1024 * 1024

GB_LABELS = {"gb2312", "gbk", "euc-cn", "euccn", "x-gbk", "cp936", "gb18030", "x-euc-cn",
             "gb_2312-80", "csgb2312", "chinese", "ms936", "windows-936", "gb_2312", "x-gb2312"}
_B64_DELETE = bytes(b for b in range(256)
                    if b not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_HDR_END = re.compile(rb"\r?\n\r?\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_MSGID = re.compile(r"<[^<>\s]+>")


# ---------------------------------------------------------------------------------------------
# charsets
def normalize_charset(label: str | None) -> str | None:
    """A codec name for a declared label; every GB label becomes gb18030, unknown ones None."""
    if not label:
        return None
    label = label.strip().strip('"').lower()
    if label in GB_LABELS:
        return "gb18030"
    if label in ("utf8", "utf-8", "unicode-1-1-utf-8", "x-unicode20utf8"):
        return "utf-8"
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):  # unknown, or junk such as NUL bytes
        return None
    # Only real text encodings: "rot13", "hex" or "zlib" labels are junk here.
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """Text from bytes whatever the label says: UTF-8 first (a wrong guess is near impossible),
    then GB18030 (covers GB2312/GBK), then the declared codec, then UTF-8 with replacement."""
    if not data:
        return ""
    if data.isascii():
        cs = normalize_charset(label)
        if cs and cs.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
            return data.decode(cs, "replace")
        return data.decode("ascii")
    cs = normalize_charset(label)
    order: list[str] = []
    if cs and cs not in ("utf-8", "gb18030", "ascii", "latin-1", "iso8859-1", "cp1252"):
        order.append(cs)  # a real other codec (big5, shift_jis...) is trusted first
    order += ["utf-8", "gb18030"]
    if cs and cs not in order:
        order.append(cs)
    for name in order:
        try:
            return data.decode(name)
        except (UnicodeError, LookupError, ValueError):  # idna & co. raise odd errors
            continue
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# headers
def _b_decode(text: str) -> bytes:
    raw = text.encode("ascii", "ignore").translate(None, _B64_DELETE + b"=")
    raw = raw[: len(raw) - len(raw) % 4] if len(raw) % 4 == 1 else raw
    raw += b"=" * (-len(raw) % 4)
    try:
        return binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        return b""


def _q_decode(text: str) -> bytes:
    return binascii.a2b_qp(text.encode("ascii", "ignore").replace(b"_", b" "))


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words, joining adjacent ones (and their bytes, since clients
    split a multibyte character across two words)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # (charset, bytes) of adjacent words
    pos = 0

    def flush() -> None:
        if pending:
            merged: list[tuple[str, bytes]] = []
            for cs, b in pending:
                if merged and merged[-1][0] == cs:
                    merged[-1] = (cs, merged[-1][1] + b)
                else:
                    merged.append((cs, b))
            out.extend(decode_bytes(b, cs) for cs, b in merged)
            pending.clear()

    for m in _ENCODED_WORD.finditer(text):
        between = text[pos:m.start()]
        if between and (between.strip() or not pending):
            flush()
            out.append(between)
        charset = m.group(1).split("*", 1)[0]
        enc = m.group(2).lower()
        payload = _b_decode(m.group(3)) if enc == "b" else _q_decode(m.group(3))
        pending.append((charset.lower(), payload))
        pos = m.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def decode_header(raw: bytes | str | None) -> str:
    """A header value as text: raw 8-bit bytes guessed (UTF-8 then GBK), then RFC 2047."""
    if raw is None:
        return ""
    text = raw if isinstance(raw, str) else decode_bytes(raw)
    text = re.sub(r"\r?\n[ \t]*", " ", text)  # unfold (already unfolded, but be safe)
    return decode_words(text).strip()


def parse_headers(block: bytes) -> tuple[list[tuple[str, bytes]], int]:
    """(fields, defects): names lowercased, values raw bytes, continuation lines joined."""
    fields: list[tuple[str, bytes]] = []
    defects = 0
    block = block[:MAX_HEADER_BYTES]
    for line in block.splitlines():
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, value + b" " + line.strip())
            else:
                defects += 1
            continue
        colon = line.find(b":")
        if colon <= 0 or b" " in line[:colon].strip() or len(fields) >= MAX_HEADER_FIELDS:
            defects += 1
            continue
        name = line[:colon].strip().decode("latin-1").lower()
        fields.append((name, line[colon + 1:].strip()))
    return fields, defects


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Main value and parameters of a Content-Type/Disposition, with RFC 2231
    (continuations, charset'lang'value) and the common RFC 2047-inside-quotes habit."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    parts: dict[str, dict[int, tuple[str, bool]]] = {}
    for m in _PARAM.finditer(";" + rest):
        name = m.group(1).lower()
        val = m.group(2).strip()
        if val.startswith('"'):
            val = val[1:-1] if val.endswith('"') and len(val) > 1 else val[1:]
            val = re.sub(r"\\(.)", r"\1", val)
        star = re.match(r"^(.+?)(?:\*(\d+))?(\*)?$", name)
        if star and (star.group(2) is not None or star.group(3)):
            base = star.group(1)
            index = int(star.group(2) or 0)
            parts.setdefault(base, {})[index] = (val, bool(star.group(3)))
        elif name not in params:
            params[name] = val
    for base, pieces in parts.items():
        charset: str | None = None
        chunks: list[bytes] = []
        for i in sorted(pieces)[:256]:
            val, encoded = pieces[i]
            if encoded:
                if i == sorted(pieces)[0] and val.count("'") >= 2:
                    charset, _lang, val = val.split("'", 2)
                chunks.append(urllib.parse.unquote_to_bytes(val))
            else:
                chunks.append(val.encode("utf-8", "surrogateescape"))
        joined = b"".join(chunks)
        try:
            text = decode_bytes(joined, charset)
        except Exception:  # noqa: BLE001 - any odd byte must not stop the walk
            text = joined.decode("utf-8", "replace")
        params[base] = text  # RFC 2231 wins over a plain duplicate
    for key, val in list(params.items()):
        if "=?" in val:
            params[key] = decode_words(val)
    return main.strip().lower(), params


# ---------------------------------------------------------------------------------------------
# parts
def first_header(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    """The first raw value of a header (names are stored lower-case)."""
    name = name.lower()
    return next((v for n, v in headers if n == name), None)


@dataclass
class Part:
    """One node of the MIME tree; `start`/`end` delimit its encoded body inside `buf`."""

    buf: Any = field(repr=False)
    headers: list[tuple[str, bytes]]
    start: int
    end: int
    depth: int
    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)
    disposition: str = ""
    disp_params: dict[str, str] = field(default_factory=dict)
    cte: str = "7bit"
    filename: str | None = None
    forwarded: int = 0     # how many message/rfc822 levels it sits under
    in_signed_signature: bool = False

    def header(self, name: str) -> bytes | None:
        return first_header(self.headers, name)

    @property
    def encoded_size(self) -> int:
        return self.end - self.start

    @property
    def content_id(self) -> str | None:
        raw = self.header("content-id")
        return decode_bytes(raw).strip() if raw else None

    def raw_body(self) -> bytes:
        return bytes(self.buf[self.start:self.end])

    def iter_decoded(self, limit: int | None = None) -> Iterator[bytes]:
        """The decoded body in chunks of about 1 MiB; stops after `limit` encoded bytes."""
        end = self.end if limit is None else min(self.end, self.start + limit)
        pos = self.start
        if self.cte == "base64":
            carry = b""
            while pos < end:
                stop = min(end, pos + DECODE_CHUNK)
                chunk = carry + bytes(self.buf[pos:stop]).translate(None, _B64_DELETE)
                pos = stop
                usable = len(chunk) - len(chunk) % 4
                carry = chunk[usable:]
                if usable:
                    yield _a2b(chunk[:usable])
            if carry and len(carry) > 1:
                yield _a2b(carry + b"=" * (-len(carry) % 4))
        elif self.cte == "quoted-printable":
            while pos < end:
                stop = min(end, pos + DECODE_CHUNK)
                if stop < end:  # cut at a line end so no =XX escape is split
                    nl = self.buf.rfind(b"\n", pos, stop)
                    stop = nl + 1 if nl > pos else stop
                yield binascii.a2b_qp(bytes(self.buf[pos:stop]))
                pos = stop
        else:
            while pos < end:
                stop = min(end, pos + DECODE_CHUNK)
                yield bytes(self.buf[pos:stop])
                pos = stop

    def decoded(self, limit: int | None = None) -> bytes:
        """The whole decoded body (or the part decoded from the first `limit` encoded bytes)."""
        if self.cte not in ("base64", "quoted-printable"):
            stop = self.end if limit is None else min(self.end, self.start + limit)
            return bytes(self.buf[self.start:stop])
        return b"".join(self.iter_decoded(limit))

    def decoded_prefix(self, n: int = 512) -> bytes:
        """The first bytes of the body, decoded from a small prefix (magic bytes)."""
        factor = 2 if self.cte == "quoted-printable" else 1
        return self.decoded(limit=(n * 4 // 3 + 16) * factor + 64)[:n]

    def digest_and_size(self) -> tuple[str, int]:
        """sha256 hex and decoded size, streamed (a large scan is never held whole)."""
        h = hashlib.sha256()
        size = 0
        if self.cte not in ("base64", "quoted-printable"):
            h.update(memoryview(self.buf)[self.start:self.end])
            return h.hexdigest(), self.end - self.start
        for chunk in self.iter_decoded():
            h.update(chunk)
            size += len(chunk)
        return h.hexdigest(), size

    def decoded_size(self) -> int:
        """The decoded size without decoding: base64 is counted, not converted (as
        iter_decoded counts it: alphabet characters only, a lone trailing one dropped)."""
        if self.cte == "quoted-printable":
            return sum(len(chunk) for chunk in self.iter_decoded())
        if self.cte != "base64":
            return self.end - self.start
        count = 0
        for pos in range(self.start, self.end, DECODE_CHUNK):
            stop = min(self.end, pos + DECODE_CHUNK)
            count += len(bytes(self.buf[pos:stop]).translate(None, _B64_DELETE))
        return count // 4 * 3 + (0, 0, 1, 2)[count % 4]

    def text(self, limit: int = MAX_TEXT_BYTES) -> str:
        """The body as text, by its charset (leniently), cut to `limit` decoded bytes."""
        data = self.decoded(limit=limit * 2 if self.cte == "base64" else limit)[:limit]
        return decode_bytes(data, self.params.get("charset"))


def _a2b(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return b""


@dataclass
class ParsedMessage:
    """The walked tree: top-level headers, every node in document order, and what went wrong."""

    buf: Any = field(repr=False)
    headers: list[tuple[str, bytes]]
    nodes: list[Part]
    defects: list[str] = field(default_factory=list)
    header_defects: int = 0

    def header(self, name: str) -> bytes | None:
        return first_header(self.headers, name)

    def headers_all(self, name: str) -> list[bytes]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def header_text(self, name: str) -> str:
        return decode_header(self.header(name))

    @property
    def leaves(self) -> list[Part]:
        return [p for p in self.nodes
                if not p.content_type.startswith("multipart/")
                and p.content_type != "message/rfc822"]

    def content_types(self) -> set[str]:
        return {p.content_type for p in self.nodes}

    def addresses(self, name: str) -> list[str]:
        value = self.header_text(name)
        if not value:
            return []
        try:
            return [a.strip() for _n, a in getaddresses([value]) if a.strip()]
        except Exception:  # noqa: BLE001 - malformed address lists are common in junk
            return []

    def message_ids(self, name: str) -> list[str]:
        return [m for v in self.headers_all(name) for m in _MSGID.findall(decode_bytes(v))]


def _split_head(buf: Any, start: int, end: int) -> tuple[bytes, int]:
    """Header block bytes and body start of the entity at [start, end)."""
    # A part that starts with an empty line has no headers.
    if buf[start:start + 1] == b"\n":
        return b"", start + 1
    if buf[start:start + 2] == b"\r\n":
        return b"", start + 2
    window_end = min(end, start + MAX_HEADER_BYTES)
    m = _HDR_END.search(buf, start, window_end)
    if m is None:
        if window_end < end:
            return bytes(buf[start:window_end]), window_end
        return bytes(buf[start:end]), end
    return bytes(buf[start:m.start()]), m.end()


class _Walker:
    def __init__(self) -> None:
        self.top_header_defects = 0
        self.nodes: list[Part] = []
        self.defects: list[str] = []

    def entity(self, buf: Any, start: int, end: int, depth: int, forwarded: int,
               default_type: str = "text/plain", signed_sig: bool = False) -> Part | None:
        if len(self.nodes) >= MAX_PARTS:
            self.defects.append("too many parts")
            return None
        head, body_start = _split_head(buf, start, end)
        headers, bad = parse_headers(head)
        if not self.nodes:
            self.top_header_defects = bad
        part = Part(buf, headers, body_start, end, depth, forwarded=forwarded,
                    in_signed_signature=signed_sig)
        self._describe(part, default_type)
        self.nodes.append(part)
        self.children(part)
        return part

    def _describe(self, part: Part, default_type: str) -> None:
        ct_raw = part.header("content-type")
        if ct_raw is not None:
            ctype, params = parse_params(decode_bytes(ct_raw))
            if "/" not in ctype:
                ctype = default_type  # RFC 2045: unreadable type means text/plain
            part.content_type, part.params = ctype.replace(" ", ""), params
        else:
            part.content_type = default_type
        cd_raw = part.header("content-disposition")
        if cd_raw is not None:
            part.disposition, part.disp_params = parse_params(decode_bytes(cd_raw))
        cte = part.header("content-transfer-encoding")
        part.cte = decode_bytes(cte).strip().lower() if cte else "7bit"
        name = part.disp_params.get("filename") or part.params.get("name")
        if name is not None:
            part.filename = decode_header(name).replace("\x00", "")

    def children(self, part: Part) -> None:
        if part.depth >= MAX_DEPTH:
            if part.content_type.startswith("multipart/") or part.content_type == "message/rfc822":
                self.defects.append("nesting too deep")
            return
        if part.content_type.startswith("multipart/"):
            boundary = part.params.get("boundary")
            if not boundary:
                self.defects.append("multipart without boundary")
                return
            self.multipart(part, boundary.encode("utf-8", "replace"))
        elif part.content_type == "message/rfc822":
            if part.cte in ("base64", "quoted-printable"):
                # Not allowed by RFC 2046, but some clients encode forwarded mail anyway.
                if part.encoded_size > MAX_ENCODED_RFC822:
                    self.defects.append("encoded message/rfc822 too large")
                    return
                inner = part.decoded()
                self.entity(inner, 0, len(inner), part.depth + 1, part.forwarded + 1)
            else:
                self.entity(part.buf, part.start, part.end, part.depth + 1, part.forwarded + 1)

    def multipart(self, part: Part, boundary: bytes) -> None:
        buf, end = part.buf, part.end
        delim = b"--" + boundary
        starts: list[int] = []     # body start of each sub-part
        ends: list[int] = []       # where each sub-part ends (before the CRLF of a delimiter)
        pos = part.start
        closed = False
        while True:
            i = buf.find(delim, pos, end)
            if i < 0:
                break
            pos = i + len(delim)
            if i > part.start and buf[i - 1:i] != b"\n":
                continue  # not at a line start
            after = buf[pos:pos + 2]
            is_close = after == b"--"
            rest = pos + 2 if is_close else pos
            nl = buf.find(b"\n", rest, end)
            line_tail = buf[rest:nl if nl >= 0 else end]
            if line_tail.strip(b" \t\r"):
                continue  # "--boundaryX": a longer boundary of a nested part
            cut = i - 1 if i > part.start else i
            if cut > part.start and buf[cut - 1:cut] == b"\r":
                cut -= 1
            if starts:
                ends.append(max(cut, starts[-1]))
            if is_close:
                closed = True
                break
            starts.append(nl + 1 if nl >= 0 else end)
            if len(starts) > MAX_PARTS:
                break
        if len(ends) < len(starts):
            ends.append(end)  # truncated: the last part runs to the end
            if not closed:
                self.defects.append("multipart not closed")
        if not starts:
            self.defects.append("multipart without parts")
        default = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
        signed = part.content_type == "multipart/signed"
        for n, (s, e) in enumerate(zip(starts, ends, strict=False)):
            if len(self.nodes) >= MAX_PARTS:
                self.defects.append("too many parts")
                return
            self.entity(buf, s, e, part.depth + 1, part.forwarded, default,
                        signed_sig=signed and n == 1)


def _skip_envelope(buf: Any) -> int:
    """Offset after an mbox "From " line or a leading blank junk line, if any."""
    if buf[:5] == b"From ":
        nl = buf.find(b"\n")
        return nl + 1 if nl >= 0 else len(buf)
    return 0


def parse_message(buf: Any) -> ParsedMessage:
    """Walk a raw message (bytes or mmap). Never decodes a body; never raises on odd input
    short of a programming error (analyse_message catches even that)."""
    start = _skip_envelope(buf)
    walker = _Walker()
    top = walker.entity(buf, start, len(buf), 0, 0)
    headers = top.headers if top else []
    return ParsedMessage(buf, headers, walker.nodes, walker.defects, walker.top_header_defects)


_BLOCK_TAGS = frozenset({"br", "p", "div", "tr", "li", "pre", "h1", "h2", "h3", "h4", "h5",
                         "h6", "table", "blockquote"})
_SKIP_END = {"script": re.compile(r"</\s*script", re.I), "style": re.compile(r"</\s*style", re.I)}


def html_to_text(markup: str) -> str:
    """Rough text of an HTML body: line breaks kept (a pasted PEM stays line by line).
    One linear scan: regexes over hostile HTML (thousands of unclosed tags) go quadratic."""
    out: list[str] = []
    i, n = 0, len(markup)
    while i < n:
        j = markup.find("<", i)
        if j < 0:
            out.append(markup[i:])
            break
        out.append(markup[i:j])
        k = markup.find(">", j + 1)
        if k < 0:
            break  # an unclosed tag runs to the end: nothing readable follows
        tag = markup[j + 1:k].strip()
        closing = tag.startswith("/")
        words = tag.lstrip("/").split(None, 1)
        name = words[0].rstrip("/").lower() if words else ""
        i = k + 1
        if not closing and name in _SKIP_END:
            end = _SKIP_END[name].search(markup, i)
            close = markup.find(">", end.end()) if end else -1
            i = n if close < 0 else close + 1
            continue
        if name in _BLOCK_TAGS:
            out.append("\n")
    return html.unescape("".join(out)).replace("\xa0", " ")
