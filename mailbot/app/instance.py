"""One `mailbot run` per database and mailbox, and the line it starts with.

Two daemons on one mailbox and one database would fetch, move and answer the same mail
twice, so `run` (and `run --once`) first takes a lock that the operating system or the
database server drops when the process ends, however it ends (a SIGKILL included):

- SQLite: flock(LOCK_EX|LOCK_NB) on a lock file beside the database, named from a hash of
  the mailbox identity; the holder's pid is written inside for the refusal message.
- PostgreSQL: a session-level advisory lock (pg_try_advisory_lock) keyed by the schema and
  the mailbox identity, on a connection of its own held for the daemon's life; its
  application_name carries the holder's pid and host.

Forked children (the parse workers) would keep the lock alive after a killed daemon: an
flock belongs to the open file description, and a socket stays open while any process
holds it. So in every fork child the lock's descriptor is pointed at /dev/null at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from sqlalchemy import Connection, Engine, make_url, text

from mailbot.config import Config
from mailbot.db import sqlite_path
from mailbot.mailbox.base import MailSource
from mailbot.mailbox.url import MailboxURL, maildir_path, parse_mailbox_url

log = logging.getLogger(__name__)

KEY_NAMESPACE = b"mailbot run\0"  # keeps our advisory keys apart from other applications'
PID_IN_NAME = re.compile(r"mailbot run pid (\d+)\b")
# A holder killed a moment ago on this host: wait this long for the server to end its session.
DEAD_HOLDER_WAIT = 10.0


class InstanceLocked(Exception):
    """Another `mailbot run` already serves this database and mailbox."""

    def __init__(self, mailbox: str, database: str, pid: int | None = None,
                 host: str | None = None) -> None:
        who = "another mailbot run"
        if pid is not None:
            elsewhere = host and not socket.gethostname().startswith(host)  # may be cut short
            who += f" (pid {pid}{f' on {host}' if elsewhere else ''})"
        super().__init__(f"{who} already serves {mailbox} with the database {database}; "
                         "stop it first, or give this one another mailbox or database")
        self.mailbox, self.database, self.pid = mailbox, database, pid


# -- names --------------------------------------------------------------------------------
def mailbox_url(cfg: Config) -> MailboxURL:
    """The configured mailbox as the source sees it (a Maildir path made absolute)."""
    parsed = parse_mailbox_url(cfg.mailbox.url, password_env=None)
    local = maildir_path(cfg)
    return MailboxURL(scheme="maildir", path=str(local)) if local is not None else parsed


def mailbox_identity(cfg: Config) -> str:
    """What one instance serves: the source's identity, the host name in lower case (DNS
    does not tell IMAP.189.CN from imap.189.cn)."""
    url = mailbox_url(cfg)
    return replace(url, host=url.host.lower()).identity if url.is_imap else url.identity


def shown_mailbox(cfg: Config) -> str:
    """The mailbox for people: a URL without the password, the user's '@' escaped."""
    url = mailbox_url(cfg)
    if not url.is_imap:
        return url.identity
    user = f"{quote(url.user, safe='')}@" if url.user else ""
    return (f"{url.scheme}://{user}{url.host}:{url.port}/{url.folder}"
            + ("?starttls" if url.starttls else ""))


def shown_database(url: str) -> str:
    """The database URL for people: the password (in the URL or its query) as ***."""
    parsed = make_url(url)
    if "password" in parsed.query:  # libpq also takes ?password=
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    path = sqlite_path(make_url(url))
    return path.absolute() if path is not None else None


def lock_path(cfg: Config, database_url: str, identity: str) -> Path:
    """The SQLite lock file: beside the database, one per mailbox (a hash of its identity)."""
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    db = _sqlite_file(database_url)
    if db is None:  # an in-memory database has no file to sit beside
        return cfg.var_dir / f"mailbot.run-{digest}.lock"
    return db.with_name(f"{db.name}.run-{digest}.lock")


def advisory_key(schema: str, identity: str) -> int:
    """A signed 64-bit advisory lock key: a schema is a mailbot database of its own."""
    digest = hashlib.sha256(KEY_NAMESPACE + schema.encode() + b"\0" + identity.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# -- the lock -----------------------------------------------------------------------------
_held: list[InstanceLock] = []  # locks of this process, dropped in every fork child


def _drop_in_fork_child() -> None:
    for lock in _held:
        lock._drop_descriptor()
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_fork_child)


class InstanceLock:
    """A held instance lock; `release()` (or leaving the `with`) gives it up."""

    def __init__(self, mailbox: str, database: str, *, fd: int | None = None,
                 path: Path | None = None, conn: Connection | None = None,
                 key: int | None = None) -> None:
        self.mailbox = mailbox
        self.database = database
        self.path = path  # SQLite: the lock file
        self.key = key  # PostgreSQL: the advisory lock key
        self._fd = fd  # the descriptor whose life is the lock's (file, or the server socket)
        self._conn = conn
        self._inherited: Connection | None = None  # a fork child's copy, never used or freed
        _held.append(self)

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def still_held(self) -> bool:
        """False when the lock was lost: PostgreSQL closed our session, or someone removed
        the lock file (a new `run` would lock a new one)."""
        if self._conn is None:
            if self._fd is None or self.path is None:
                return False
            try:
                return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except OSError:
                return False
        try:
            return bool(self._conn.scalar(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND objsubid = 1"
                " AND (classid::bigint << 32 | objid::bigint) = :k"), {"k": self.key}))
        except Exception:  # noqa: BLE001 - a dead connection holds no lock
            return False

    def release(self) -> None:
        if self in _held:
            _held.remove(self)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except Exception as exc:  # noqa: BLE001 - closing the session releases it too
                log.debug("advisory unlock failed: %s", exc)
            finally:
                conn.invalidate()  # not back to the pool: the session carries our name
                conn.close()
            self._fd = None
        elif self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # no stale pid for the next holder's refusals
            except OSError:
                pass
            os.close(fd)  # closing the last descriptor drops the flock

    def _drop_descriptor(self) -> None:
        """In a fork child: stop sharing the lock's file or socket with the parent.

        Not close(): the inherited objects may still name the number, so it stays taken,
        on /dev/null; and no unlock or protocol goodbye, which would end the parent's lock.
        """
        if self._fd is None:
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, self._fd, inheritable=False)
        finally:
            os.close(devnull)
        # Kept referenced: freeing it would run the driver's goodbye on the number.
        self._fd, self._inherited, self._conn = None, self._conn, None


def hold_instance_lock(cfg: Config, engine: Engine) -> InstanceLock:
    """Take this database's lock for the configured mailbox, or raise InstanceLocked.

    Returns the held lock, a context manager that releases it. The engine names the
    database; on PostgreSQL one of its connections is kept for as long as the lock is held.
    """
    identity = mailbox_identity(cfg)
    mailbox = shown_mailbox(cfg)
    database = shown_database(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "postgresql":
        return _advisory_lock(engine, identity, mailbox, database)
    return _file_lock(lock_path(cfg, engine.url.render_as_string(hide_password=False),
                                identity), identity, mailbox, database)


def _file_lock(path: Path, identity: str, mailbox: str, database: str) -> InstanceLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid_in(os.pread(fd, 200, 0).decode("utf-8", "replace"))
        os.close(fd)
        raise InstanceLocked(mailbox, database, pid) from None
    except BaseException:
        os.close(fd)
        raise
    lock = InstanceLock(mailbox, database, fd=fd, path=path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{identity}\n".encode(), 0)
    except OSError as exc:  # the lock holds all the same; only the refusal loses the pid
        log.warning("cannot write the pid into %s: %s", path, exc)
    return lock


def _pid_in(text_: str) -> int | None:
    first = text_.split("\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _app_name(pid: int) -> str:
    """The lock session's application_name (at most 63 bytes, PostgreSQL's limit)."""
    return f"mailbot run pid {pid} on {socket.gethostname()}"[:63]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # there, and someone else's
    return False


def _advisory_lock(engine: Engine, identity: str, mailbox: str,
                   database: str) -> InstanceLock:
    # AUTOCOMMIT: a lock held for days must not keep a transaction (and its snapshot) open.
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        schema = conn.scalar(text("SELECT coalesce(current_schema(), '')")) or ""
        key = advisory_key(schema, identity)
        deadline = time.monotonic() + DEAD_HOLDER_WAIT
        while not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
            pid, name = _advisory_holder(conn, key)
            # A holder killed on this host a moment ago: the server is ending its session.
            dead_here = pid is not None and name == _app_name(pid) and _gone(pid)
            if not dead_here or time.monotonic() > deadline:
                host = (name or "").partition(" on ")[2] or None
                raise InstanceLocked(mailbox, database, pid, None if dead_here else host)
            time.sleep(0.1)
        # Named so that a refused second instance can tell whose the lock is.
        conn.execute(text("SELECT set_config('application_name', :n, false)"),
                     {"n": _app_name(os.getpid())})
        fd = conn.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    return InstanceLock(mailbox, database, fd=fd, conn=conn, key=key)


def _advisory_holder(conn: Connection, key: int) -> tuple[int | None, str | None]:
    """The holder's pid and application_name, where the server shows them."""
    try:
        name = conn.scalar(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND (l.classid::bigint << 32 | l.objid::bigint) = :k"), {"k": key})
    except Exception as exc:  # noqa: BLE001 - the refusal stands without the pid
        log.debug("cannot see the advisory lock's holder: %s", exc)
        return None, None
    found = PID_IN_NAME.match(name or "")
    return (int(found.group(1)) if found else None), name


# -- the start-up line --------------------------------------------------------------------
def startup_line(cfg: Config, source: MailSource) -> str:
    """What `mailbot run` serves, with what, and how it notices new mail; no secrets."""
    if cfg.ca.signer == "sdf":
        signer = f"sdf ({cfg.ca.sdf_library or '[ca] sdf_library unset'}, key {cfg.ca.sdf_key_index})"
    else:
        signer = f"{cfg.ca.signer} ({cfg.var_path(cfg.ca.key_path)})"
    return (f"mailbot: serving {shown_mailbox(cfg)}, database {shown_database(cfg.database_url)},"
            f" signer {signer}, new mail {_how_noticed(cfg, source)} / 开始服务")


def _how_noticed(cfg: Config, source: MailSource) -> str:
    from mailbot.mailbox import maildir

    poll = float(getattr(source, "poll_seconds", cfg.intake.poll_seconds))
    if isinstance(source, maildir.MaildirSource):
        # The Maildir is looked at every WATCH_SECONDS where the mailbox layer has it.
        every = min(poll, float(getattr(maildir, "WATCH_SECONDS", poll)))
        return f"by watching the Maildir every {every:g} s"
    if getattr(source, "use_idle", None) is False:
        return f"by polling every {poll:g} s"
    # Said before the first connection: the server's CAPABILITY decides.
    return f"by IDLE where the server offers it, else polling every {poll:g} s"
