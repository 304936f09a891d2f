"""Where mail comes from: the small interface every mailbox source (IMAP, Maildir) offers.

The pipeline codes against `MailSource` only. A message is addressed by a `MessageRef`
taken from `list_messages` / `list_folder` / `flagged` / `find_message_id`; the ref carries
the folder it was listed from (as the caller named it), so `fetch`, `fetch_range` and `move`
work on refs from any folder.

Folder names are the caller's plain names (已处理, 处理失败, 已确认, 退回); every method
that takes one resolves it the same way: IMAP puts a name not found as given under the
personal namespace prefix the server announces (RFC 2342), e.g. INBOX.已处理; Maildir keeps
Maildir++ names (.已处理). Callers never branch on the kind of source: they read its
declared capabilities (`keyed_by_uid`, `streams_large`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

INBOX = "INBOX"

# Tried in this order when no folder carries the \Sent special-use attribute and none is
# configured (CONTRACTS.md); when none exists, "Sent" is made (under the namespace).
SENT_FALLBACKS: tuple[str, ...] = ("已发送", "Sent", "Sent Messages", "Sent Items")
SENT_DEFAULT = "Sent"

# IMAP system flags as imapclient reports them (str, with the backslash).
SEEN = "\\Seen"
FLAGGED = "\\Flagged"
ANSWERED = "\\Answered"
DELETED = "\\Deleted"
DRAFT = "\\Draft"


class MailboxError(Exception):
    """A mailbox operation failed for a reason other than a dropped connection (e.g. the
    server refused to create a folder, a full quota). The message is one readable line."""


class ConnectionLost(MailboxError):
    """The connection dropped and could not be re-established within the retry budget."""


@dataclass(frozen=True)
class MessageRef:
    """One message in one folder, as listed (before its body is fetched).

    uid: the IMAP UID (0 for Maildir, which has no numeric UID).
    key: stable text key: str(uid) for IMAP, the Maildir key for Maildir.
    size: RFC822.SIZE (IMAP) or the file size (Maildir), known before fetching.
    flags: IMAP-style flags and keywords, e.g. {"\\Seen", "\\Flagged", "$MailbotProcessed"}.
    folder: the folder the message was listed from ("INBOX" for the inbox).
    """

    uid: int
    key: str
    size: int
    flags: frozenset[str] = frozenset()
    internal_date: datetime | None = None
    folder: str = INBOX

    @property
    def seen(self) -> bool:
        return SEEN in self.flags

    @property
    def flagged(self) -> bool:
        return FLAGGED in self.flags


@runtime_checkable
class MailSource(Protocol):
    """A mailbox the daemon reads from. Implementations: ImapSource, MaildirSource."""

    # Stable name for the database, never with a password: "imap://user@host:993/INBOX",
    # "maildir:/abs/path". A name only: decide nothing from its form (see the capabilities).
    identity: str

    # Capabilities (class attributes, fixed per kind of source):
    # keyed_by_uid: True when MessageRef.uid, uidvalidity() and list_messages(since_uid) mean
    #   something (IMAP): record and resume by (UIDVALIDITY, UID). False (Maildir): uid is 0,
    #   since_uid is ignored, a message is known by its `key`, which a move keeps.
    keyed_by_uid: bool
    # streams_large: True when fetch_range is a cheap ranged read that spares holding a whole
    #   large message in memory several times over (IMAP: imaplib keeps ~7 copies of a big
    #   literal): fetch big messages piecewise with fetch_range. False (Maildir): a plain
    #   fetch costs one file read; fetch_range works but brings nothing.
    streams_large: bool

    def open(self) -> None:
        """Connect / check the mailbox exists. Idempotent."""

    def close(self) -> None:
        """Disconnect. Idempotent; never raises."""

    def uidvalidity(self) -> int:
        """UIDVALIDITY of the inbox as read on SELECT (Maildir: 0). A change means rescan."""

    def list_messages(self, since_uid: int = 0) -> list[MessageRef]:
        """Inbox messages with UID > since_uid, oldest first, sizes known; 0 = full sweep.

        Maildir ignores since_uid (processed mail has been moved out of the inbox).
        """

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """Raw bytes of each message (BODY.PEEK[]: never sets \\Seen), fetched in batches.

        Messages that vanished meanwhile are skipped silently.
        """

    def fetch_range(self, ref: MessageRef, offset: int, length: int) -> bytes | None:
        """Up to `length` raw bytes of one message from byte `offset` (IMAP:
        BODY.PEEK[]<offset.length>, with the usual reconnect and retry; Maildir: that range of
        the file). Shorter at the end of the message, b"" past it; None when the message has
        vanished. Never sets \\Seen. Read a big message with offsets 0, n, 2n, ... until a
        piece comes back shorter than n."""

    def find_message_id(self, folder: str, message_id: str) -> list[MessageRef]:
        """Messages in `folder` whose Message-ID header is `message_id` ("<...>"), oldest
        first; [] when there is none or the folder does not exist. Finds a message again
        after a move gave it a UID we did not learn."""

    def resolve_folder(self, folder: str) -> str:
        """The name `folder` has (or will get when created) in this mailbox: IMAP resolves it
        against the personal namespace (INBOX stays INBOX; a name that exists as given or
        already carries the prefix is kept; otherwise PREFIX + name); Maildir returns it
        unchanged. For logs and status; the other methods resolve names themselves."""

    def folder_uidvalidity(self, folder: str) -> int:
        """UIDVALIDITY of `folder` (0 when it does not exist, and always 0 for Maildir)."""

    def move(self, refs: Sequence[MessageRef], folder: str) -> None:
        """Move to `folder` (created if missing). MOVE, else COPY + \\Deleted + UID EXPUNGE of
        exactly these UIDs. Never deletes mail otherwise. A folder that cannot be created,
        or a move the server refuses, raises MailboxError and leaves the mail where it was."""

    def add_keyword(self, refs: Sequence[MessageRef], keyword: str) -> None:
        """Set a keyword (e.g. "$MailbotProcessed") where moving is not possible or wanted."""

    def supports_move(self) -> bool:
        """True when `move` can be used (IMAP: MOVE, or UIDPLUS for a safe COPY+EXPUNGE)."""

    def wait_for_changes(self, timeout: float) -> bool:
        """Block until the inbox may have changed or `timeout` seconds passed.

        True: something happened (or we cannot tell, e.g. after polling): list again.
        False: the timeout passed quietly. IMAP uses IDLE when offered, renewed in time.
        """

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int | None:
        """Store a message in `folder` (created if missing), e.g. a Sent copy; the new UID
        when the server tells it (IMAP UIDPLUS), else None."""

    def add_flags(self, refs: Sequence[MessageRef], flags: Iterable[str]) -> None:
        """Set system flags (\\Seen, \\Flagged, ...); IMAP also takes keywords here."""

    def sent_folder(self) -> str:
        """Where Sent copies go: the \\Sent special-use folder, else the configured name,
        else the first of SENT_FALLBACKS that exists, else SENT_DEFAULT ("Sent", under the
        namespace; created on first append). The mailbox's own name for it."""

    def folder_state(self, folder: str) -> Hashable | None:
        """A value that changes whenever the folder's messages or their flags change (IMAP:
        STATUS with CONDSTORE's HIGHESTMODSEQ; Maildir: its file names, which carry the
        flags), so a watcher can skip an unchanged folder; None when the mailbox cannot
        tell cheaply (then look every time)."""

    def list_folder(self, folder: str) -> list[MessageRef]:
        """Every message in `folder` (e.g. 已确认, 退回), oldest first; [] if it does not exist."""

    def flagged(self, folder: str = INBOX) -> list[MessageRef]:
        """Messages in `folder` carrying \\Flagged (staff's red flag: "confirmed, approve")."""

    def marked(self, folder: str, *, having: Iterable[str] = (),
               lacking: Iterable[str] = ()) -> list[MessageRef]:
        """Messages in `folder` carrying every flag or keyword in `having` and none in
        `lacking` (e.g. having \\Flagged, lacking $MailbotApproved), oldest first; [] if the
        folder does not exist. IMAP asks the server (SEARCH FLAGGED UNKEYWORD ...), so a
        folder of years of handled mail costs one SEARCH."""

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        """The Message-ID header ("<...>") of each ref that still exists (None: it has
        none), read without fetching bodies (IMAP: BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])."""

    def remove_flags(self, refs: Sequence[MessageRef], flags: Iterable[str]) -> None:
        """Clear flags or keywords (e.g. a $MailbotRefused keyword staff's mark no longer
        needs); a message that vanished meanwhile is skipped."""

    def create_folder(self, folder: str) -> str:
        """Create `folder` (under the personal namespace) when missing, e.g. 已确认 and 退回
        so staff see them in their client; the mailbox's own name for it. MailboxError when
        the server refuses."""
