"""Where mail comes from: the small interface every mailbox source (IMAP, Maildir) offers.

The pipeline codes against `MailSource` only. A message is addressed by a `MessageRef`
taken from `list_messages` / `list_folder` / `flagged`; the ref carries the folder it was
listed from, so `fetch` and `move` work on refs from any folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

INBOX = "INBOX"

# Tried in this order when no folder carries the \Sent special-use attribute (CONTRACTS.md).
SENT_FALLBACKS: tuple[str, ...] = ("已发送", "Sent", "Sent Messages", "Sent Items")

# IMAP system flags as imapclient reports them (str, with the backslash).
SEEN = "\\Seen"
FLAGGED = "\\Flagged"
ANSWERED = "\\Answered"
DELETED = "\\Deleted"
DRAFT = "\\Draft"


class MailboxError(Exception):
    """A mailbox operation failed for a reason other than a dropped connection."""


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
    # "maildir:/abs/path".
    identity: str

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

    def move(self, refs: Sequence[MessageRef], folder: str) -> None:
        """Move to `folder` (created if missing). MOVE, else COPY + \\Deleted + UID EXPUNGE of
        exactly these UIDs. Never deletes mail otherwise."""

    def add_keyword(self, refs: Sequence[MessageRef], keyword: str) -> None:
        """Set a keyword (e.g. "$MailbotProcessed") where moving is not possible or wanted."""

    def supports_move(self) -> bool:
        """True when `move` can be used (IMAP: MOVE, or UIDPLUS for a safe COPY+EXPUNGE)."""

    def wait_for_changes(self, timeout: float) -> bool:
        """Block until the inbox may have changed or `timeout` seconds passed.

        True: something happened (or we cannot tell, e.g. after polling): list again.
        False: the timeout passed quietly. IMAP uses IDLE when offered, renewed in time.
        """

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> None:
        """Store a message in `folder` (created if missing), e.g. a Sent copy."""

    def sent_folder(self) -> str:
        """\\Sent special-use folder, else configured, else the first of SENT_FALLBACKS that
        exists, else SENT_FALLBACKS[0] (created on first append)."""

    def list_folder(self, folder: str) -> list[MessageRef]:
        """Every message in `folder` (e.g. 已确认, 退回), oldest first; [] if it does not exist."""

    def flagged(self, folder: str = INBOX) -> list[MessageRef]:
        """Messages in `folder` carrying \\Flagged (staff's red flag: "confirmed, approve")."""
