"""Content-addressed archive of raw messages: ARCHIVE/ab/<sha256>.eml, written crash-safely.

Like Mailman's switchboard: write a temporary file in the target folder, fsync it, rename it
into place, fsync the folder. A crash leaves either no file or the whole file, never a torn
one; writing the same bytes again is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SUFFIX = ".eml"
SYNC_THREADS = 8


class ArchiveError(OSError):
    """The archived copy is missing or does not match its address."""


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def relative_path(sha256: str) -> str:
    """ab/<sha256>.eml: one level of 256 folders (as git does) keeps each to a few thousand
    files at a million messages, and a new message seldom needs a new folder."""
    return f"{sha256[:2]}/{sha256}{SUFFIX}"


def archive_path(archive_dir: str | Path, sha256: str) -> Path:
    return Path(archive_dir) / relative_path(sha256)


def _legacy_path(archive_dir: str | Path, sha256: str) -> Path:
    """Where archives before the one-level layout kept a message: ab/cd/<sha256>.eml."""
    return Path(archive_dir) / sha256[:2] / sha256[2:4] / f"{sha256}{SUFFIX}"


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def store(archive_dir: str | Path, raw: bytes, sha256: str | None = None,
          *, durable: bool = True) -> tuple[str, Path]:
    """Archive `raw`; returns (sha256, path). Idempotent: an existing file is kept as is.

    durable=False skips the fsyncs (the caller syncs later with `sync_paths`, e.g. once per batch).
    """
    digest = sha256 or sha256_hex(raw)
    return digest, write_once(archive_dir, raw, digest, durable=durable)[0]


def write_once(archive_dir: str | Path, raw: bytes, sha256: str,
               *, durable: bool = True) -> tuple[Path, bool]:
    """Write `raw` to its address unless it is there; returns (path, newly written)."""
    target = archive_path(archive_dir, sha256)
    if target.exists():
        return target, False
    folder = target.parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)  # atomic on POSIX: readers see nothing or the whole file
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        _fsync_dir(folder)
        if created:  # a new fan-out folder must survive a crash too
            _fsync_dir(folder.parent)
    return target, True


def sync_paths(paths: list[Path]) -> None:
    """fsync files written with durable=False and their folders (before the DB commit).

    The files are synced from several threads at once (fsync releases the GIL), so the
    filesystem can commit them in one journal transaction instead of one after another.
    The threads end here: the parse pool forks later, and a fork should not copy them.
    """
    if not paths:
        return
    # Each file's folder holds its name; the archive root may hold a new fan-out folder.
    folders: set[Path] = set()
    for p in paths:
        folders.update((p.parent, p.parent.parent))
    with ThreadPoolExecutor(max_workers=min(SYNC_THREADS, len(paths))) as pool:
        list(pool.map(_fsync, paths))
        list(pool.map(_fsync_dir, folders))


def load(archive_dir: str | Path, sha256: str, *, verify: bool = True) -> bytes:
    """The archived bytes; raises ArchiveError when missing or (verify) not matching the hash.

    Archives written before the one-level layout (ab/cd/<sha256>.eml) are read too.
    """
    path = archive_path(archive_dir, sha256)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        try:
            raw = _legacy_path(archive_dir, sha256).read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveError(f"archived message {sha256} is missing ({path})") from exc
    if verify and sha256_hex(raw) != sha256:
        raise ArchiveError(f"archived message {sha256} is corrupt ({path})")
    return raw


class StreamWriter:
    """Archive a message that arrives in pieces (a big IMAP message), never whole in memory.

    Pieces go to a temporary file in the archive root while being hashed; `finish` renames it
    to its content address (or drops it when that file exists already).
    """

    def __init__(self, archive_dir: str | Path, head_bytes: int = 256 * 1024) -> None:
        self.archive_dir = Path(archive_dir)
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.archive_dir)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._head_bytes = head_bytes
        self.size = 0

    def write(self, piece: bytes) -> None:
        self._fh.write(piece)
        self._hash.update(piece)
        if len(self._head) < self._head_bytes:
            self._head += piece[: self._head_bytes - len(self._head)]
        self.size += len(piece)

    @property
    def head(self) -> bytes:
        """The first bytes (enough for the header block)."""
        return bytes(self._head)

    def finish(self) -> tuple[str, Path, bool]:
        """(sha256, path, newly_written); the file is fsynced, its folder not yet."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        digest = self._hash.hexdigest()
        target = archive_path(self.archive_dir, digest)
        if target.exists():
            os.unlink(self._tmp)
            return digest, target, False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)
        return digest, target, True

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
