"""IMAP source over imapclient: UIDs, UIDVALIDITY, IDLE, MOVE, reconnect with backoff.

Chinese providers' ways are handled here: an RFC 2971 ID right after login (NetEase-style
servers answer SELECT with "Unsafe Login" without it), the provider's authorisation code
(授权码) as the password, and folder names in modified UTF-7 (imapclient's folder_encode).

Folder names are resolved against the personal namespace the server announces (RFC 2342):
a name not found as given goes under its prefix, so on a Cyrus/Courier-style server
(NAMESPACE (("INBOX." "."))) 已处理 is INBOX.已处理. Refs keep the name the caller used.
"""

from __future__ import annotations

import imaplib
import ipaddress
import logging
import random
import ssl
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

import mailbot
from mailbot.mailbox.base import (
    DELETED,
    INBOX,
    SENT_DEFAULT,
    SENT_FALLBACKS,
    ConnectionLost,
    MailboxError,
    MessageRef,
)
from mailbot.mailbox.url import MailboxURL, parse_mailbox_url
from mailbot.refs import clean_message_id

log = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_ID = {
    "name": "mailbot",
    "version": mailbot.__version__,
    "vendor": "China E-Port Xiamen sub-centre",
}

CLOSE_TIMEOUT = 5.0  # seconds the LOGOUT on close may take
# What tells of any change to a folder: a new or removed message, or (CONDSTORE) a flag.
STATE_ITEMS = [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"HIGHESTMODSEQ"]

# What a dropped or dead connection raises: socket errors and timeouts (OSError, ssl.SSLError)
# and imaplib's abort (EOF, BYE, protocol desync).
DROP_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.abort, EOFError)

META = [b"UID", b"RFC822.SIZE", b"FLAGS", b"INTERNALDATE"]
SEARCH_CHUNK = 1000  # UIDs per FETCH of metadata, keeps command lines short

# imapclient's id_ first asks has_capability("ID"), which sends CAPABILITY when the login
# answer carried none, so ID would not be the first command; the undecorated method does not.
_SEND_ID = getattr(IMAPClient.id_, "__wrapped__", IMAPClient.id_)


class ImapSource:
    """An IMAP mailbox as a `MailSource` (see mailbot.mailbox.base)."""

    keyed_by_uid = True  # UIDs, UIDVALIDITY and since_uid listing mean something here
    streams_large = True  # fetch_range is one cheap ranged FETCH; whole literals are costly

    def __init__(
        self,
        url: MailboxURL | str,
        *,
        timeout: float = 60.0,
        idle_renew_seconds: float = 540.0,
        poll_seconds: float = 60.0,
        fetch_batch: int = 50,
        fetch_batch_bytes: int = 32 * 1024 * 1024,
        sent_folder_name: str | None = None,
        use_idle: bool | None = None,
        use_move: bool | None = None,
        use_move_command: bool | None = None,
        max_retries: int | None = 6,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        ssl_context: ssl.SSLContext | None = None,
        client_id: dict[str, str] | None = None,
        password_env: str | None = "MAILBOT_IMAP_PASSWORD",
    ) -> None:
        """
        use_idle / use_move / use_move_command: None = as the server offers; False forces the
        fallback (polling / keywords instead of moving / COPY+UID EXPUNGE instead of MOVE).
        max_retries: reconnect attempts per operation before ConnectionLost (None: forever).
        sleep, jitter: injectable so tests record the backoff instead of waiting.
        """
        self.url = url if isinstance(url, MailboxURL) else parse_mailbox_url(
            url, password_env=password_env)
        if not self.url.is_imap:
            raise ValueError("ImapSource needs an imap:// or imaps:// URL")
        self.identity = self.url.identity
        self.folder = self.url.folder
        self.timeout = timeout
        self.idle_renew_seconds = idle_renew_seconds
        self.poll_seconds = poll_seconds
        self.fetch_batch = max(1, fetch_batch)
        self.fetch_batch_bytes = fetch_batch_bytes
        self.sent_folder_name = sent_folder_name
        self.use_idle = use_idle
        self.use_move = use_move
        self.use_move_command = use_move_command
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.jitter = jitter
        self.ssl_context = ssl_context
        self.client_id = dict(CLIENT_ID if client_id is None else client_id)
        self.server_id: dict[str, str] = {}
        self.reconnects = 0  # successful reconnections after a drop (for status output)
        self._client: IMAPClient | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._selected: str | None = None
        self._uidvalidity: dict[str, int] = {}  # by the server's folder name
        self._failures = 0  # consecutive drops / failed connects, drives the backoff
        # Per connection: the personal namespace (prefix, separator) and resolved names.
        self._namespace: tuple[str, str] | None = None
        self._resolved: dict[str, str] = {}
        self._listed_up_to: int | None = None  # the highest inbox UID the last listing saw

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        self.ensure_connected()

    def close(self) -> None:
        client, self._client, self._selected = self._client, None, None
        if client is None:
            return
        try:
            # A polite LOGOUT, but never a long wait for it: we are leaving either way.
            client.socket().settimeout(min(self.timeout, CLOSE_TIMEOUT))
            client.logout()
        except Exception:  # noqa: BLE001 - closing a dead connection must not fail
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> ImapSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_connected(self) -> IMAPClient:
        """The live client; connects (with backoff after failures) when there is none."""
        while self._client is None:
            if self._failures:
                self._backoff()
            try:
                self._client = self._connect()
            except LoginError as exc:
                raise MailboxError(f"login to {self.identity} refused: {exc}") from exc
            except ssl.SSLCertVerificationError as exc:  # no retry can fix a wrong certificate
                raise MailboxError(f"{self.identity}: TLS certificate not trusted: "
                                   f"{exc.verify_message}") from exc
            except DROP_ERRORS as exc:
                self._note_failure(exc, "connect")
        return self._client

    def _connect(self) -> IMAPClient:
        u = self.url
        ctx = self.ssl_context
        if ctx is None and u.tls:
            ctx = ssl.create_default_context(cafile=u.cafile)
        client = IMAPClient(u.host, port=u.port, ssl=u.scheme == "imaps", ssl_context=ctx,
                            timeout=self.timeout)
        # imapclient turns on imaplib's protocol trace (debug=5), which formats the repr of
        # every literal whether or not anyone logs it: ~1.8 ms of CPU per 300 KB message, and
        # at DEBUG level it would write whole messages (forms, keys) into the log. Off.
        client._imap.debug = 0
        try:
            client.normalise_times = False  # keep INTERNALDATE timezone-aware
            if u.starttls:
                if not client.has_capability("STARTTLS"):
                    raise MailboxError(f"{self.identity}: server does not offer STARTTLS")
                client.starttls(ctx)
            elif not u.tls and not _is_loopback(u.host):
                log.warning("IMAP to %s without TLS: the password travels in clear", u.host)
            password = u.password or ""
            if password.isascii() and u.user.isascii():
                client.login(u.user, password)
            else:  # LOGIN is ASCII-only; SASL PLAIN carries UTF-8
                client.plain_login(u.user, password)
            self._send_id(client)  # first after login: nothing may come before it
            self._capabilities = frozenset(
                c.decode() if isinstance(c, bytes) else c for c in client.capabilities())
        except BaseException:
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001
                pass
            raise
        self._selected = None
        self._namespace, self._resolved = None, {}
        log.info("connected to %s", self.identity)
        return client

    def _send_id(self, client: IMAPClient) -> None:
        """RFC 2971 ID as the first command after login, sent whatever the capabilities say
        (asking would put a CAPABILITY before it); a server without ID answers BAD or NO."""
        try:
            answer = _SEND_ID(client, self.client_id)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # a refused ID is no reason to give up
            log.info("%s: server did not take ID: %s", self.identity, exc)
            return
        try:
            self.server_id = _id_dict(answer)
        except Exception:  # noqa: BLE001 - an odd answer to ID is only informative
            self.server_id = {}

    def _backoff(self) -> None:
        """Exponential backoff, capped, with jitter in [delay/2, delay]."""
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (self._failures - 1))
        self.sleep(delay * (0.5 + 0.5 * self.jitter()))

    def _note_failure(self, exc: BaseException, what: str) -> None:
        self._discard()
        self._failures += 1
        log.warning("%s: %s failed (%s: %s), attempt %d", self.identity, what,
                    type(exc).__name__, exc, self._failures)
        if self.max_retries is not None and self._failures > self.max_retries:
            failures, self._failures = self._failures, 0
            raise ConnectionLost(
                f"{self.identity}: no connection after {failures} attempts") from exc

    def _discard(self) -> None:
        client, self._client, self._selected = self._client, None, None
        if client is not None:
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001 - the socket is already dead
                pass

    def _call(self, op: Callable[[IMAPClient], T], what: str) -> T:
        """Run op on a live connection; after a drop reconnect (with backoff) and retry."""
        while True:
            dropped_before = self._failures > 0
            client = self.ensure_connected()
            try:
                result = op(client)
            except DROP_ERRORS as exc:
                self._note_failure(exc, what)
                continue
            except imaplib.IMAP4.error as exc:  # the server said NO or BAD: no retry helps
                raise MailboxError(f"{self.identity}: {what} failed: {_reason(exc)}") from exc
            if dropped_before:
                self.reconnects += 1
            self._failures = 0
            return result

    # -- capabilities ----------------------------------------------------------------------
    def _has(self, cap: str) -> bool:
        self.ensure_connected()
        return cap in self._capabilities

    def supports_move(self) -> bool:
        if self.use_move is not None:
            return self.use_move
        return self._has("MOVE") or self._has("UIDPLUS")

    def supports_idle(self) -> bool:
        if self.use_idle is not None:
            return self.use_idle and self._has("IDLE")
        return self._has("IDLE")

    # -- folders ---------------------------------------------------------------------------
    def personal_namespace(self) -> tuple[str, str]:
        """(prefix, separator) of the first personal namespace the server announces, e.g.
        ("INBOX.", ".") on Cyrus/Courier, ("", "/") on a default Dovecot; ("", "") without
        NAMESPACE."""
        return self._call(self._personal_namespace, "namespace")

    def resolve_folder(self, folder: str) -> str:
        """The server's name for `folder`: INBOX stays INBOX; a name that exists as given, or
        already starts with the personal prefix, is used as given; any other name goes under
        the prefix (RFC 2342). Cached per connection."""
        return self._call(lambda client: self._resolve(client, folder), "namespace")

    def _personal_namespace(self, client: IMAPClient) -> tuple[str, str]:
        if self._namespace is None:
            prefix, sep = "", ""
            if "NAMESPACE" in self._capabilities:
                try:
                    personal = client.namespace().personal
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error as exc:  # then folders are used as named
                    log.warning("%s: NAMESPACE failed: %s", self.identity, exc)
                    personal = None
                if personal:
                    prefix, sep = (_text(personal[0][0] or ""),
                                   _text(personal[0][1] or ""))
            self._namespace = (prefix, sep)
            if prefix:
                log.info("%s: personal namespace %r (separator %r)", self.identity, prefix,
                         sep)
        return self._namespace

    def _resolve(self, client: IMAPClient, folder: str) -> str:
        if folder.upper() == INBOX:
            return INBOX
        name = self._resolved.get(folder)
        if name is None:
            prefix, _sep = self._personal_namespace(client)
            if not prefix or _under(folder, prefix) or client.folder_exists(folder):
                name = folder
            else:
                name = prefix + folder
            self._resolved[folder] = name
        return name

    def _exists(self, client: IMAPClient, name: str) -> bool:
        return name.upper() == INBOX or client.folder_exists(name)

    def _select(self, client: IMAPClient, folder: str) -> None:
        if self._selected == folder:
            return
        info = client.select_folder(folder)
        validity = info.get(b"UIDVALIDITY")
        if validity is not None:
            old = self._uidvalidity.get(folder)
            if old is not None and old != int(validity):
                log.warning("%s: UIDVALIDITY of %s changed %s -> %s", self.identity, folder,
                            old, validity)
            self._uidvalidity[folder] = int(validity)
        self._selected = folder

    def _ensure_folder(self, client: IMAPClient, folder: str) -> str:
        """The server's name for `folder`, created (and subscribed) when missing."""
        name = self._resolve(client, folder)
        if self._exists(client, name):
            return name
        try:
            client.create_folder(name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # created meanwhile by someone else is fine
            if not client.folder_exists(name):
                shown = repr(name) if name == folder else f"{name!r} (for {folder!r})"
                raise MailboxError(f"{self.identity}: cannot create folder {shown}: "
                                   f"{_reason(exc)}") from exc
        log.info("%s: created folder %r", self.identity, name)
        try:
            client.subscribe_folder(name)  # so webmail and desktop clients show it
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            pass
        return name

    def uidvalidity(self) -> int:
        """Read on a fresh SELECT, so a change shows without waiting for a reconnect."""
        def op(client: IMAPClient) -> int:
            name = self._resolve(client, self.folder)
            self._selected = None
            self._select(client, name)
            return self._uidvalidity.get(name, 0)

        return self._call(op, "select")

    def folder_uidvalidity(self, folder: str) -> int:
        """UIDVALIDITY of any folder (0 when it does not exist)."""
        def op(client: IMAPClient) -> int:
            name = self._resolve(client, folder)
            if not self._exists(client, name):
                return 0
            self._select(client, name)
            return self._uidvalidity.get(name, 0)

        return self._call(op, "select")

    # -- listing ---------------------------------------------------------------------------
    def list_messages(self, since_uid: int = 0) -> list[MessageRef]:
        def op(client: IMAPClient) -> list[MessageRef]:
            name = self._resolve(client, self.folder)
            if self._selected == name:
                client.noop()  # a long-selected folder: let the server announce new mail first
            self._select(client, name)
            # "UID n:*" always matches the last message, even below n: filter afterwards.
            uids = [u for u in client.search(["UID", f"{since_uid + 1}:*"]) if u > since_uid]
            self._listed_up_to = max([since_uid, *uids])
            return self._meta(client, self.folder, uids)

        return self._call(op, "list")

    def list_folder(self, folder: str) -> list[MessageRef]:
        def op(client: IMAPClient) -> list[MessageRef]:
            name = self._resolve(client, folder)
            if not self._exists(client, name):
                return []
            self._select(client, name)
            return self._meta(client, folder, client.search("ALL"))

        return self._call(op, f"list {folder}")

    def find_message_id(self, folder: str, message_id: str) -> list[MessageRef]:
        """Messages in `folder` whose Message-ID header is `message_id` (e.g. to find a
        message again after MOVE gave it a UID we did not learn)."""
        def op(client: IMAPClient) -> list[MessageRef]:
            name = self._resolve(client, folder)
            if not self._exists(client, name):
                return []
            self._select(client, name)
            return self._meta(client, folder,
                              client.search(["HEADER", "Message-ID", message_id]))

        return self._call(op, f"search {folder}")

    def flagged(self, folder: str = INBOX) -> list[MessageRef]:
        def op(client: IMAPClient) -> list[MessageRef]:
            name = self._resolve(client, folder)
            if not self._exists(client, name):
                return []
            self._select(client, name)
            return self._meta(client, folder, client.search("FLAGGED"))

        return self._call(op, f"flagged {folder}")

    def marked(self, folder: str, *, having: Iterable[str] = (),
               lacking: Iterable[str] = ()) -> list[MessageRef]:
        """Messages in `folder` with every flag/keyword of `having` and none of `lacking`,
        found by one SEARCH (e.g. FLAGGED UNKEYWORD $MailbotApproved)."""
        criteria = search_criteria(having, lacking)

        def op(client: IMAPClient) -> list[MessageRef]:
            name = self._resolve(client, folder)
            if not self._exists(client, name):
                return []
            if self._selected == name:
                client.noop()  # a folder selected before: let the server tell what changed
            self._select(client, name)
            return self._meta(client, folder, client.search(criteria))

        return self._call(op, f"search {folder}")

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        """Message-ID of each ref still there, from BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]."""
        out: dict[MessageRef, str | None] = {}
        for source, group in _by_folder(refs).items():
            for i in range(0, len(group), SEARCH_CHUNK):
                chunk = group[i:i + SEARCH_CHUNK]

                def op(client: IMAPClient, source: str = source,
                       chunk: list[MessageRef] = chunk) -> dict[int, Any]:
                    self._select(client, self._resolve(client, source))
                    return client.fetch([r.uid for r in chunk],
                                        ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])

                data = self._call(op, "fetch")
                for ref in chunk:
                    d = data.get(ref.uid)
                    if d is None:  # expunged meanwhile
                        continue
                    header = next((bytes(v) for k, v in d.items() if isinstance(k, bytes)
                                   and k.startswith(b"BODY[HEADER") and v is not None), b"")
                    out[ref] = _header_message_id(header)
        return out

    def remove_flags(self, refs: Sequence[MessageRef], flags: Iterable[str]) -> None:
        """Clear flags or keywords (STORE -FLAGS.SILENT)."""
        flags = list(flags)
        for source, group in _by_folder(refs).items():
            uids = [r.uid for r in group]

            def op(client: IMAPClient, source: str = source, uids: list[int] = uids) -> None:
                self._select(client, self._resolve(client, source))
                client.remove_flags(uids, flags, silent=True)

            self._call(op, "store")

    def create_folder(self, folder: str) -> str:
        """The server's name for `folder`, created (and subscribed) when missing."""
        return self._call(lambda client: self._ensure_folder(client, folder),
                          f"create {folder}")

    def _meta(self, client: IMAPClient, folder: str, uids: Sequence[int]) -> list[MessageRef]:
        """Refs for uids of the selected folder, labelled `folder` (the caller's name)."""
        refs: list[MessageRef] = []
        uids = sorted(uids)
        for i in range(0, len(uids), SEARCH_CHUNK):
            chunk = uids[i:i + SEARCH_CHUNK]
            data = client.fetch(chunk, ["RFC822.SIZE", "FLAGS", "INTERNALDATE"])
            for uid in chunk:
                d = data.get(uid)
                if d is None:  # expunged between SEARCH and FETCH
                    continue
                refs.append(MessageRef(
                    uid=uid,
                    key=str(uid),
                    size=int(d.get(b"RFC822.SIZE", 0)),
                    flags=frozenset(_text(f) for f in d.get(b"FLAGS", ())),
                    internal_date=_utc(d.get(b"INTERNALDATE")),
                    folder=folder,
                ))
        return refs

    # -- fetching --------------------------------------------------------------------------
    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for folder, batch in self._batches(refs):
            def op(client: IMAPClient, folder: str = folder,
                   batch: list[MessageRef] = batch) -> dict[int, Any]:
                self._select(client, self._resolve(client, folder))
                return client.fetch([r.uid for r in batch], ["BODY.PEEK[]"])

            data = self._call(op, "fetch")
            for ref in batch:
                d = data.get(ref.uid)
                body = d.get(b"BODY[]") if d else None
                if body is not None:
                    yield ref, bytes(body)

    def fetch_range(self, ref: MessageRef, offset: int, length: int) -> bytes | None:
        """`length` bytes of the raw message from `offset` (BODY.PEEK[]<offset.length>),
        shorter at the end, b"" past it; None when the message has vanished."""
        if offset < 0 or length <= 0:
            raise ValueError("fetch_range needs offset >= 0 and length > 0")

        def op(client: IMAPClient) -> bytes | None:
            self._select(client, self._resolve(client, ref.folder))
            data = client.fetch([ref.uid], [f"BODY.PEEK[]<{offset}.{length}>"])
            for key, value in (data.get(ref.uid) or {}).items():
                if isinstance(key, bytes) and key.startswith(b"BODY[]"):
                    return bytes(value) if value is not None else b""
            return None

        return self._call(op, "fetch")

    def _batches(self, refs: Sequence[MessageRef]) -> Iterator[tuple[str, list[MessageRef]]]:
        """Consecutive refs of one folder, at most fetch_batch of them and ~fetch_batch_bytes."""
        batch: list[MessageRef] = []
        size = 0
        for ref in refs:
            if batch and (ref.folder != batch[0].folder or len(batch) >= self.fetch_batch
                          or size + ref.size > self.fetch_batch_bytes):
                yield batch[0].folder, batch
                batch, size = [], 0
            batch.append(ref)
            size += ref.size
        if batch:
            yield batch[0].folder, batch

    # -- changing the mailbox --------------------------------------------------------------
    def move(self, refs: Sequence[MessageRef], folder: str) -> None:
        if not refs:
            return
        for source, group in _by_folder(refs).items():
            uids = [r.uid for r in group]

            def op(client: IMAPClient, source: str = source, uids: list[int] = uids) -> None:
                target = self._ensure_folder(client, folder)
                self._select(client, self._resolve(client, source))
                use_cmd = self.use_move_command
                if use_cmd is None or use_cmd:
                    use_cmd = "MOVE" in self._capabilities
                if use_cmd:
                    client.move(uids, target)
                elif "UIDPLUS" in self._capabilities:
                    # COPY, then expunge exactly these UIDs: never someone else's \Deleted mail.
                    client.copy(uids, target)
                    client.add_flags(uids, [DELETED])
                    client.uid_expunge(uids)
                else:
                    raise MailboxError(f"{self.identity}: no MOVE or UIDPLUS; "
                                       "use the processed keyword instead")

            self._call(op, f"move to {folder}")

    def add_keyword(self, refs: Sequence[MessageRef], keyword: str) -> None:
        self.add_flags(refs, [keyword])

    def add_flags(self, refs: Sequence[MessageRef], flags: Iterable[str]) -> None:
        """Set flags or keywords (e.g. \\Seen, \\Flagged, $MailbotProcessed)."""
        flags = list(flags)
        for source, group in _by_folder(refs).items():
            uids = [r.uid for r in group]

            def op(client: IMAPClient, source: str = source, uids: list[int] = uids) -> None:
                self._select(client, self._resolve(client, source))
                client.add_flags(uids, flags, silent=True)

            self._call(op, "store")

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int | None:
        """APPEND to folder (created if missing); the new UID when the server says (UIDPLUS)."""
        flags = tuple(flags)

        def op(client: IMAPClient) -> int | None:
            resp = client.append(self._ensure_folder(client, folder), raw, flags=flags)
            return _appenduid(resp)

        return self._call(op, f"append to {folder}")

    def sent_folder(self) -> str:
        """The server's name of the folder for Sent copies (CONTRACTS.md): the \\Sent
        special-use folder, else the configured name, else the first of SENT_FALLBACKS that
        exists (as named or under the namespace prefix), else "Sent" under the namespace
        (created by the first append)."""
        def op(client: IMAPClient) -> str:
            names: set[str] = set()
            for fl, _delim, name in client.list_folders():
                if b"\\Sent" in fl or "\\Sent" in fl:
                    return str(name)
                names.add(str(name))
            if self.sent_folder_name:
                return self._resolve(client, self.sent_folder_name)
            prefix, _sep = self._personal_namespace(client)
            for candidate in SENT_FALLBACKS:
                for name in (candidate, prefix + candidate):
                    if name in names:
                        return name
            return self._resolve(client, SENT_DEFAULT)

        return self._call(op, "list folders")

    def folder_state(self, folder: str) -> Hashable | None:
        if not self._has("CONDSTORE"):
            return None  # flags can change without any STATUS item showing it

        def op(client: IMAPClient) -> Hashable:
            name = self._resolve(client, folder)
            try:
                status = client.folder_status(name, STATE_ITEMS)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                return ("missing", name)  # not made yet (or gone): a change when it comes
            return tuple(sorted((bytes(k), int(v)) for k, v in status.items()))

        return self._call(op, f"status {folder}")

    # -- waiting ---------------------------------------------------------------------------
    def wait_for_changes(self, timeout: float) -> bool:
        if not self.supports_idle():
            self.sleep(min(self.poll_seconds, timeout))
            return True
        try:
            client = self.ensure_connected()
            name = self._resolve(client, self.folder)
            self._select(client, name)
            if self._arrived_since_listing(client):
                return True  # came while we were busy: IDLE would only tell of later mail
            return self._idle(client, timeout)
        except DROP_ERRORS as exc:
            # Whatever happened while we were not listening is found by listing again.
            self._note_failure(exc, "idle")
            return True
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"{self.identity}: idle failed: {_reason(exc)}") from exc

    def _arrived_since_listing(self, client: IMAPClient) -> bool:
        seen = self._listed_up_to
        if seen is None:
            return False
        client.noop()  # the server syncs its view of the mailbox first (SEARCH may not)
        return any(u > seen for u in client.search(["UID", f"{seen + 1}:*"]))

    def _idle(self, client: IMAPClient, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Renew IDLE in time: servers drop idle clients (RFC 2177: 29 min; providers ~10).
            try:
                client.idle()
                responses = client.idle_check(timeout=min(remaining, self.idle_renew_seconds))
                _text_done, more = client.idle_done()
            except BaseException:
                # Interrupted (Ctrl-C, a stop request) or dropped in or around IDLE: the
                # connection is in an unknown state, so drop it rather than wait for answers.
                self._discard()
                raise
            self._failures = 0
            if _changes(responses) or _changes(more):
                return True


def _changes(responses: Iterable[Any]) -> bool:
    """True when an IDLE response says the mailbox changed (not a keep-alive)."""
    for resp in responses or ():
        if isinstance(resp, tuple) and len(resp) >= 2 and isinstance(resp[0], int):
            return True  # n EXISTS / n EXPUNGE / n FETCH / n RECENT
        if isinstance(resp, tuple) and resp and resp[0] == b"BYE":
            raise imaplib.IMAP4.abort("server said BYE during IDLE")
    return False


# System flags as SEARCH keys (RFC 3501 6.4.4): (set, not set).
_SEARCH_KEYS = {"\\FLAGGED": ("FLAGGED", "UNFLAGGED"), "\\SEEN": ("SEEN", "UNSEEN"),
                "\\ANSWERED": ("ANSWERED", "UNANSWERED"), "\\DELETED": ("DELETED", "UNDELETED"),
                "\\DRAFT": ("DRAFT", "UNDRAFT")}


def search_criteria(having: Iterable[str] = (), lacking: Iterable[str] = ()) -> list[str]:
    """SEARCH keys for messages with every flag of `having` and none of `lacking`: system
    flags by their own keys (FLAGGED / UNFLAGGED), keywords by KEYWORD / UNKEYWORD; ALL when
    both are empty. ValueError for a flag that cannot be searched (\\Recent, a blank)."""
    criteria: list[str] = []
    for flags, which, word in ((having, 0, "KEYWORD"), (lacking, 1, "UNKEYWORD")):
        for flag in flags:
            flag = flag.strip()
            if flag.startswith("\\"):
                keys = _SEARCH_KEYS.get(flag.upper())
                if keys is None:
                    raise ValueError(f"cannot search for the flag {flag!r}")
                criteria.append(keys[which])
            elif flag and not any(c in flag for c in ' ()[]{%*"\\'):
                criteria += [word, flag]
            else:
                raise ValueError(f"not an IMAP keyword: {flag!r}")
    return criteria or ["ALL"]


def _header_message_id(header: bytes) -> str | None:
    """The Message-ID in a header block (None when there is none)."""
    value = BytesHeaderParser().parsebytes(header).get("Message-ID")
    return clean_message_id(value)


def _under(folder: str, prefix: str) -> bool:
    """True when `folder` already starts with the namespace prefix (INBOX in any case)."""
    head = folder[:len(prefix)]
    if prefix.upper().startswith(INBOX):
        return head[:5].upper() == prefix[:5].upper() and head[5:] == prefix[5:]
    return head == prefix


def _reason(exc: BaseException) -> str:
    """The server's words from an imapclient error ("create failed: [NOPERM] ..." -> the
    part after "failed:")."""
    text = str(exc)
    head, sep, rest = text.partition(" failed: ")
    return (rest if sep and " " not in head else text).strip()


def _by_folder(refs: Sequence[MessageRef]) -> dict[str, list[MessageRef]]:
    out: dict[str, list[MessageRef]] = {}
    for r in refs:
        out.setdefault(r.folder, []).append(r)
    return out


def _appenduid(resp: Any) -> int | None:
    text = resp.decode(errors="replace") if isinstance(resp, bytes) else str(resp)
    if "APPENDUID" not in text:
        return None
    try:
        return int(text.split("APPENDUID", 1)[1].split("]", 1)[0].split()[1])
    except (IndexError, ValueError):
        return None


def _id_dict(answer: Any) -> dict[str, str]:
    """Server ID answer ((k, v, k, v, ...) or a tuple of such) as a dict of str."""
    items = answer
    if isinstance(answer, tuple) and len(answer) == 1 and isinstance(answer[0], tuple):
        items = answer[0]
    if not isinstance(items, tuple | list):
        return {}
    flat = [_text(x) if x is not None else "" for x in items]
    return dict(zip(flat[0::2], flat[1::2], strict=False))


def _text(v: bytes | str | int) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

