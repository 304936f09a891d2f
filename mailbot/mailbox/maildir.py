"""Maildir source: the embedded default (`./var/mail`; drop a message into `new/`).

Maildir++ layout as Dovecot writes it: the inbox is the root (cur/new/tmp), a folder is a
sub-directory ".NAME" (UTF-8, or Dovecot's modified UTF-7 when that exists). Messages are addressed by their Maildir
key (the file name up to ":2,"); there are no numeric UIDs, so `uid` and `uidvalidity()`
are 0.
Mail is never deleted: processed mail moves to a folder, flags live in the file name, and
keywords use Dovecot's `dovecot-keywords` letters so Dovecot shows them too.
"""

from __future__ import annotations

import logging
import mailbox
import os
import socket
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from mailbot.mailbox import utf7
from mailbot.mailbox.base import (
    INBOX,
    SENT_DEFAULT,
    SENT_FALLBACKS,
    MailboxError,
    MessageRef,
)

log = logging.getLogger(__name__)

# Maildir info letters <-> IMAP system flags.
LETTER_TO_FLAG = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                  "T": "\\Deleted"}
FLAG_TO_LETTER = {v: k for k, v in LETTER_TO_FLAG.items()}
KEYWORDS_FILE = "dovecot-keywords"
INFO_SEP = ":2,"
HEADER_LIMIT = 256 * 1024  # bytes read to find a message's header block


WATCH_SECONDS = 1.0  # how often the daemon looks for new mail in a Maildir


class MaildirSource:
    """A Maildir folder tree read as a `MailSource`."""

    OPTIONS = frozenset({"poll_seconds", "sent_folder_name", "sleep"})
    keyed_by_uid = False  # no UIDs: a message is its key, which a move keeps
    streams_large = False  # a fetch is one file read; fetch_range saves nothing
    _counter = 0  # the Q part of delivered file names: unique within this process

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_seconds: float = 5.0,
        sent_folder_name: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root = Path(path).absolute()
        self.identity = f"maildir:{self.root}"
        self.poll_seconds = poll_seconds
        self.sent_folder_name = sent_folder_name
        self.sleep = sleep
        self._md: mailbox.Maildir | None = None
        self._snapshot: frozenset[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        if self._md is None:
            # create=True makes cur/new/tmp, so a fresh ./var/mail works out of the box.
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self._md = mailbox.Maildir(str(self.root), factory=None, create=True)

    def close(self) -> None:
        self._md = None

    def __enter__(self) -> MaildirSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def md(self) -> mailbox.Maildir:
        self.open()
        assert self._md is not None
        return self._md

    # -- listing ---------------------------------------------------------------------------
    def uidvalidity(self) -> int:
        return 0

    def folder_uidvalidity(self, folder: str) -> int:
        return 0

    def resolve_folder(self, folder: str) -> str:
        """Maildir++ folders are ".NAME" on disk already: the name is used as given."""
        return folder

    def supports_move(self) -> bool:
        return True

    def list_messages(self, since_uid: int = 0) -> list[MessageRef]:
        refs = self._scan(INBOX)
        self._snapshot = self._names(INBOX)
        return refs

    def list_folder(self, folder: str) -> list[MessageRef]:
        if folder != INBOX and not self._folder_dir(folder).is_dir():
            return []
        return self._scan(folder)

    def flagged(self, folder: str = INBOX) -> list[MessageRef]:
        return [r for r in self.list_folder(folder) if r.flagged]

    def marked(self, folder: str, *, having: Iterable[str] = (),
               lacking: Iterable[str] = ()) -> list[MessageRef]:
        want, avoid = set(having), set(lacking)
        return [r for r in self.list_folder(folder)
                if want <= r.flags and not (avoid & r.flags)]

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        out: dict[MessageRef, str | None] = {}
        index: dict[str, dict[str, Path]] = {}
        for ref in refs:
            path = self._find(ref, index)
            if path is not None and path.exists():
                out[ref] = _message_id(path)
        return out

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        index: dict[str, dict[str, Path]] = {}
        for ref in refs:
            path = self._find(ref, index)
            if path is None:
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # moved by someone else meanwhile
                continue
            yield ref, data

    def fetch_range(self, ref: MessageRef, offset: int, length: int) -> bytes | None:
        if offset < 0 or length <= 0:
            raise ValueError("fetch_range needs offset >= 0 and length > 0")
        path = self._find(ref)
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError:  # moved by someone else meanwhile
            return None

    def find_message_id(self, folder: str, message_id: str) -> list[MessageRef]:
        """Messages in `folder` whose Message-ID header equals `message_id`, oldest first."""
        wanted = message_id.strip()
        index = self._index(folder) if self._folder_dir(folder).is_dir() else {}
        found: list[MessageRef] = []
        for ref in self.list_folder(folder):
            path = index.get(ref.key)
            if path is not None and _message_id(path) == wanted:
                found.append(ref)
        return found

    # -- changes ---------------------------------------------------------------------------
    def move(self, refs: Sequence[MessageRef], folder: str) -> None:
        target = self._ensure_folder(folder)
        index: dict[str, dict[str, Path]] = {}
        for ref in refs:
            path = self._find(ref, index)
            if path is None or path.parent.parent == target:
                continue
            dest = target / path.parent.name / self._keywords_for(path, target)
            if dest.exists():  # already there (a repeated move after a crash)
                continue
            try:
                os.rename(path, dest)
            except FileNotFoundError:  # moved by someone else meanwhile
                continue
            except OSError as exc:
                raise MailboxError(f"{self.identity}: cannot move {ref.key} to {folder!r}: "
                                   f"{exc.strerror or exc}") from exc

    def add_keyword(self, refs: Sequence[MessageRef], keyword: str) -> None:
        for ref in refs:
            path = self._find(ref)
            if path is None:
                continue
            folder_dir = path.parent.parent
            letter = self._keyword_letter(folder_dir, keyword)
            self._set_letters(path, {letter})

    def add_flags(self, refs: Sequence[MessageRef], flags: Iterable[str]) -> None:
        """Set system flags (e.g. \\Seen, \\Flagged); keywords go through add_keyword."""
        letters = {FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER}
        for ref in refs:
            path = self._find(ref)
            if path is not None and letters:
                self._set_letters(path, letters)

    def remove_flags(self, refs: Sequence[MessageRef], flags: Iterable[str]) -> None:
        """Clear system flags and keywords (their letters in the file name)."""
        flags = set(flags)
        for ref in refs:
            path = self._find(ref)
            if path is None:
                continue
            keywords = _read_keywords(path.parent.parent)
            letters = {FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER}
            letters |= {letter for letter, kw in keywords.items() if kw in flags}
            key, sep, info = path.name.partition(INFO_SEP)
            kept = "".join(c for c in info if c not in letters)
            if sep and kept != info:
                try:
                    os.rename(path, path.with_name(f"{key}{INFO_SEP}{kept}"))
                except FileNotFoundError:  # moved by someone else meanwhile
                    continue

    def create_folder(self, folder: str) -> str:
        self._ensure_folder(folder)
        return folder

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> None:
        """Deliver the exact bytes (the stdlib would rewrite CRLF): tmp/, then rename."""
        folder_dir = self._ensure_folder(folder)
        letters = "".join(sorted(FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER))
        now = time.time()
        MaildirSource._counter += 1
        key = (f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{MaildirSource._counter}."
               f"{socket.gethostname().replace('/', '_').replace(':', '_')}")
        tmp = folder_dir / "tmp" / key
        with open(tmp, "xb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        # A message with flags has been seen by a client, so it belongs in cur/.
        dest = folder_dir / "cur" / f"{key}{INFO_SEP}{letters}" if letters else (
            folder_dir / "new" / key)
        os.rename(tmp, dest)

    def wait_for_changes(self, timeout: float) -> bool:
        """Look at the inbox every WATCH_SECONDS, at most every poll_seconds: a directory
        listing is cheap, and new mail is then noticed within a second (inotify is not worth
        a dependency)."""
        if self._snapshot is None:
            self._snapshot = self._names(INBOX)
        waited = 0.0
        while True:
            current = self._names(INBOX)
            if current != self._snapshot:
                self._snapshot = current
                return True
            if waited >= timeout:
                return False
            step = min(self.poll_seconds, WATCH_SECONDS, timeout - waited)
            self.sleep(step)
            waited += step

    def folder_state(self, folder: str) -> Hashable | None:
        # Maildir file names carry the flags (":2,FS"): the set of names is the state.
        return hash(self._names(folder)) if self._folder_dir(folder).is_dir() else ("missing",)

    def sent_folder(self) -> str:
        if self.sent_folder_name:
            return self.sent_folder_name
        for name in SENT_FALLBACKS:
            if self._folder_dir(name).is_dir():
                return name
        return SENT_DEFAULT

    # -- internals -------------------------------------------------------------------------
    def _folder_dir(self, folder: str) -> Path:
        if folder == INBOX:
            return self.root
        # Maildir++: ".NAME", the '/' hierarchy as '.'. New folders get readable UTF-8 names
        # (var/mail/.已处理); a folder Dovecot made in modified UTF-7 (.&XfJZBHQG-) is used
        # when it exists, so a Dovecot-served Maildir works too.
        plain = self.root / ("." + folder.replace("/", "."))
        encoded = self.root / ("." + utf7.encode(folder.replace("/", ".")).decode("ascii"))
        return encoded if encoded.is_dir() and not plain.is_dir() else plain

    def _ensure_folder(self, folder: str) -> Path:
        d = self._folder_dir(folder)
        if folder != INBOX and not d.is_dir():
            try:
                self.md.add_folder(d.name[1:])
            except OSError as exc:  # e.g. permissions, a full disk, a file in the way
                raise MailboxError(f"{self.identity}: cannot create folder {folder!r}: "
                                   f"{exc.strerror or exc}") from exc
        return d

    def _names(self, folder: str) -> frozenset[str]:
        d = self._folder_dir(folder)
        names: set[str] = set()
        for sub in ("new", "cur"):
            try:
                names.update(f"{sub}/{n}" for n in os.listdir(d / sub) if not n.startswith("."))
            except FileNotFoundError:
                pass
        return frozenset(names)

    def _scan(self, folder: str) -> list[MessageRef]:
        d = self._folder_dir(folder)
        keywords = _read_keywords(d)
        rows: list[tuple[float, str, MessageRef]] = []
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(d / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                key, _, info = entry.name.partition(INFO_SEP)
                flags = {LETTER_TO_FLAG[c] for c in info if c in LETTER_TO_FLAG}
                flags |= {keywords[c] for c in info if c in keywords}
                ref = MessageRef(
                    uid=0, key=key, size=st.st_size, flags=frozenset(flags),
                    internal_date=datetime.fromtimestamp(st.st_mtime, UTC), folder=folder)
                rows.append((st.st_mtime, entry.name, ref))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in rows]

    def _find(self, ref: MessageRef, index: dict[str, dict[str, Path]] | None = None,
              ) -> Path | None:
        """The message's current file (flags change its name), or None when it is gone."""
        index = {} if index is None else index
        if ref.folder not in index:  # one directory listing per folder per call
            index[ref.folder] = self._index(ref.folder)
        path = index[ref.folder].get(ref.key)
        return path if path is not None and path.exists() else None

    def _index(self, folder: str) -> dict[str, Path]:
        d = self._folder_dir(folder)
        out: dict[str, Path] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(d / sub)
            except FileNotFoundError:
                continue
            for n in names:
                if not n.startswith("."):
                    out[n.partition(INFO_SEP)[0]] = d / sub / n
        return out

    def _keyword_letter(self, folder_dir: Path, keyword: str) -> str:
        keywords = _read_keywords(folder_dir)
        for letter, kw in keywords.items():
            if kw == keyword:
                return letter
        if len(keywords) >= 26:
            raise ValueError("Maildir keyword table full (26 keywords)")
        index = len(keywords)
        with open(folder_dir / KEYWORDS_FILE, "a", encoding="utf-8") as fh:
            fh.write(f"{index} {keyword}\n")
        return chr(ord("a") + index)

    def _keywords_for(self, path: Path, target: Path) -> str:
        """The file name for `path` in folder `target`: keyword letters index a table of
        each folder's own (dovecot-keywords), so they are translated to the target's."""
        key, sep, info = path.name.partition(INFO_SEP)
        mine = [c for c in info if "a" <= c <= "z"]
        if not sep or not mine:
            return path.name
        source = _read_keywords(path.parent.parent)
        letters = {c for c in info if not "a" <= c <= "z"}
        for c in mine:
            keyword = source.get(c)
            if keyword is not None:  # a letter without a name means nothing: dropped
                letters.add(self._keyword_letter(target, keyword))
        return f"{key}{INFO_SEP}{''.join(sorted(letters))}"

    def _set_letters(self, path: Path, letters: set[str]) -> None:
        key, _, info = path.name.partition(INFO_SEP)
        new_info = "".join(sorted(set(info) | letters))
        if new_info == info and INFO_SEP in path.name:
            return
        # Flagged mail lives in cur/ (Maildir spec: new/ is for mail no client has seen).
        dest = path.parent.parent / "cur" / f"{key}{INFO_SEP}{new_info}"
        os.rename(path, dest)


def _message_id(path: Path) -> str | None:
    """The Message-ID of a message file (None when it has none or is gone)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_LIMIT)
    except FileNotFoundError:
        return None
    for sep in (b"\r\n\r\n", b"\n\n"):
        if sep in head:
            head = head.split(sep, 1)[0] + sep
            break
    value = BytesHeaderParser().parsebytes(head).get("Message-ID")
    return str(value).strip() if value is not None else None


def _read_keywords(folder_dir: Path) -> dict[str, str]:
    """Dovecot's keyword table: lines "INDEX NAME"; letter = 'a' + INDEX."""
    try:
        text = (folder_dir / KEYWORDS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        idx, _, name = line.strip().partition(" ")
        if idx.isdigit() and name and int(idx) < 26:
            out[chr(ord("a") + int(idx))] = name
    return out
