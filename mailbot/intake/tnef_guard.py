"""Walk a TNEF (winmail.dat) stream with hard bounds before tnefparse reads it.

tnefparse trusts every count it reads: a MAPI property count past the end makes it `continue`
for up to 2**32 turns, and a multi-value count makes that many objects. This walker mirrors its
reading order and refuses such streams, so parsing stays bounded in time and memory.
"""

from __future__ import annotations

import struct

_IMESSAGE_SIG = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_MAPI_FIXED = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8,
               0x0007: 8, 0x0014: 8, 0x0040: 8, 0x0048: 16}
_MAPI_VARIABLE = {0x001E, 0x001F, 0x000D, 0x0102, 0x0000}
MAX_TNEF_OBJECTS = 5000
MAX_MAPI_COUNT = 10000


def tnef_is_safe(data: bytes, depth: int = 0) -> bool:
    """True when tnefparse can read `data` in bounded time and memory (it may still fail)."""
    if depth > 3 or data[:4] != b"\x78\x9f\x3e\x22":
        return False
    off, n, total = 6, 0, len(data)
    while off + 12 < total:
        n += 1
        if n > MAX_TNEF_OBJECTS:
            return False
        name, length = struct.unpack_from("<H", data, off + 1)[0], \
            struct.unpack_from("<I", data, off + 5)[0]
        end = min(total, off + 11 + length)
        if name in (0x9003, 0x9005) and not _mapi_is_safe(data[off + 9:end - 2], depth):
            return False
        off = end
    return True


def _mapi_is_safe(body: bytes, depth: int) -> bool:
    size = len(body)
    if size < 4:
        return True  # tnefparse raises at once
    count = struct.unpack_from("<I", body, 0)[0]
    if count > MAX_MAPI_COUNT:
        return False
    off, made = 4, 0
    for _ in range(count):
        if off >= size:
            return False  # tnefparse would `continue` for every remaining count
        if off + 4 > size:
            return True
        typ, name = struct.unpack_from("<HH", body, off)
        off += 4
        if name >= 0x8000:
            off += 16
            if off + 4 > size:
                return True
            kind = struct.unpack_from("<I", body, off)[0]
            off += 4
            if off + 4 > size:
                return True
            if kind == 0:
                off += 4
            else:
                ilen = struct.unpack_from("<I", body, off)[0]
                off += 4 + ilen + (-ilen % 4)
        values, multi = 1, False
        if typ & 0x1000:
            typ ^= 0x1000
            if off + 4 > size:
                return True
            values = struct.unpack_from("<I", body, off)[0]
            off += 4
            multi, values = values > 0, values or 1  # a zero count still reads one value
        made += values
        if made > MAX_MAPI_COUNT:
            return False  # each value becomes a Python object in tnefparse
        if typ in _MAPI_FIXED:
            off += _MAPI_FIXED[typ] * values
        elif typ in _MAPI_VARIABLE:
            for _v in range(values):
                items = 1
                if not multi:
                    if off + 4 > size:
                        return True
                    items = struct.unpack_from("<I", body, off)[0]
                    off += 4
                    made += items
                    if made > MAX_MAPI_COUNT:
                        return False
                for _i in range(items):
                    if off + 4 > size:
                        return True
                    length = struct.unpack_from("<I", body, off)[0]
                    off += 4
                    item = body[off:off + length]
                    if name == 0x3701 and item.startswith(_IMESSAGE_SIG) and \
                            not tnef_is_safe(item[len(_IMESSAGE_SIG):], depth + 1):
                        return False
                    off += length + (-length % 4)
        else:
            return True  # unknown type: tnefparse stops there
        if values % 2 and typ in (0x0002, 0x000B):
            off += 2
    return True
