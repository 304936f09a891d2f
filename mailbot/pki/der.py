"""A small lenient DER/BER reader for requests that real devices emit.

It keeps byte offsets, so a signature can be checked over the bytes exactly as received, and it
notes (instead of refusing) BER slips: indefinite lengths and non-minimal length octets.
Bounded: nesting depth is capped and every length is checked against the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.pki.errors import PkiError

MAX_DEPTH = 48

# Universal tags (first identifier octet as it appears for the usual forms)
INTEGER, BIT_STRING, OCTET_STRING, NULL, OID = 0x02, 0x03, 0x04, 0x05, 0x06
UTF8_STRING, PRINTABLE_STRING, T61_STRING, IA5_STRING = 0x0C, 0x13, 0x14, 0x16
UNIVERSAL_STRING, BMP_STRING, VISIBLE_STRING, NUMERIC_STRING = 0x1C, 0x1E, 0x1A, 0x12
BOOLEAN, SEQUENCE, SET = 0x01, 0x30, 0x31


class DerError(PkiError, ValueError):
    """The bytes are not (lenient) DER."""


@dataclass(slots=True)
class Node:
    """One TLV: `tag` is the identifier octet; offsets index into `buf`."""

    buf: bytes
    tag: int
    start: int          # first byte of the identifier
    cstart: int         # first content byte
    cend: int           # end of content (before an end-of-contents marker)
    end: int            # end of the whole TLV
    indefinite: bool = False
    nonminimal: bool = False

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    @property
    def content(self) -> bytes:
        return self.buf[self.cstart:self.cend]

    @property
    def raw(self) -> bytes:
        return self.buf[self.start:self.end]

    def children(self, depth: int = 0) -> list[Node]:
        if not self.constructed:
            raise DerError(f"tag 0x{self.tag:02x} is not constructed")
        return read_all(self.buf, self.cstart, self.cend, depth + 1)

    def ber_slips(self, depth: int = 0) -> bool:
        """True if this TLV or anything inside it uses BER-only length forms."""
        if self.indefinite or self.nonminimal:
            return True
        if depth > MAX_DEPTH or not self.constructed:
            return False
        try:
            return any(c.ber_slips(depth + 1) for c in self.children())
        except DerError:
            return False


def read(buf: bytes, pos: int = 0, end: int | None = None, depth: int = 0) -> Node:
    """Read one TLV at pos (within buf[:end])."""
    if end is None:
        end = len(buf)
    if depth > MAX_DEPTH:
        raise DerError("nesting too deep")
    if pos + 2 > end:
        raise DerError("truncated TLV header")
    start = pos
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not supported")
    first = buf[pos + 1]
    pos += 2
    if first == 0x80:
        if not tag & 0x20:
            raise DerError("indefinite length on a primitive value")
        cur = pos
        while True:
            if cur + 2 > end:
                raise DerError("missing end-of-contents")
            if buf[cur] == 0 and buf[cur + 1] == 0:
                return Node(buf, tag, start, pos, cur, cur + 2, indefinite=True)
            cur = read(buf, cur, end, depth + 1).end
    nonminimal = False
    if first & 0x80:
        count = first & 0x7F
        if count == 0x7F or count > 8 or pos + count > end:
            raise DerError("bad length octets")
        length = int.from_bytes(buf[pos:pos + count], "big")
        nonminimal = buf[pos] == 0 or length < 0x80
        pos += count
    else:
        length = first
    if pos + length > end:
        raise DerError("length runs past the end of the data")
    return Node(buf, tag, start, pos, pos + length, pos + length, nonminimal=nonminimal)


def read_all(buf: bytes, pos: int, end: int, depth: int = 0) -> list[Node]:
    """All consecutive TLVs in buf[pos:end]."""
    out = []
    while pos < end:
        node = read(buf, pos, end, depth)
        out.append(node)
        pos = node.end
    return out


def oid_str(content: bytes) -> str:
    """Dotted form of OBJECT IDENTIFIER content octets."""
    if not content or content[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    val = 0
    for b in content:
        val = (val << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(val)
            val = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def int_value(content: bytes) -> int:
    """Signed INTEGER content (an empty content reads as 0; callers note that slip)."""
    return int.from_bytes(content, "big", signed=True) if content else 0


def decode_string(node: Node) -> tuple[str, str]:
    """(text, kind) of a directory string; kind names the ASN.1 string type."""
    raw = node.content
    tag = node.tag
    if tag == BMP_STRING:
        return raw.decode("utf-16-be", errors="replace"), "BMPString"
    if tag == UNIVERSAL_STRING:
        return raw.decode("utf-32-be", errors="replace"), "UniversalString"
    if tag == UTF8_STRING:
        return raw.decode("utf-8", errors="replace"), "UTF8String"
    if tag == T61_STRING:
        return raw.decode("latin-1"), "TeletexString"
    names = {PRINTABLE_STRING: "PrintableString", IA5_STRING: "IA5String",
             VISIBLE_STRING: "VisibleString", NUMERIC_STRING: "NumericString"}
    if tag in names:
        return raw.decode("utf-8", errors="replace"), names[tag]
    return "#" + node.raw.hex(), f"tag 0x{tag:02x}"


# --- minimal DER writers (for tests and re-encoding) -------------------------------------------

def enc_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + enc_len(len(content)) + content


def enc_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


def enc_int(v: int) -> bytes:
    return tlv(INTEGER, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True))
