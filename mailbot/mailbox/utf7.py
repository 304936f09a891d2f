"""IMAP modified UTF-7 folder names (RFC 3501 §5.1.3): 已处理 <-> &XfJZBHQG-.

imapclient already encodes and decodes folder names (folder_encode=True); this only
re-exports its codec for logs, tests and tools that read raw server responses.
"""

from __future__ import annotations

from imapclient import imap_utf7


def encode(name: str) -> bytes:
    """A folder name as it goes over the wire."""
    return imap_utf7.encode(name)


def decode(wire: bytes | str) -> str:
    """A folder name as the server sent it, decoded."""
    # imapclient passes str through untouched; a wire name is ASCII, so decode it as bytes.
    return imap_utf7.decode(wire.encode("ascii") if isinstance(wire, str) else wire)
