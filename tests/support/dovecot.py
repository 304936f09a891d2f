"""A throw-away Dovecot on loopback for the tests (DESIGN.md §6), as a pytest plugin.

Fixtures:
  dovecot         (session) DovecotServer: started once per test run, stopped at the end.
  dovecot_user    (function) DovecotUser: a fresh user with an empty mailbox for one test,
                  with helpers to APPEND raw mail and look at folders and flags.
  dovecot_tls, dovecot_tls_user
                  the same with TLS (a second server, started only when asked for):
                  imaps on `server.tls_port`, STARTTLS on `server.port`, CA file
                  `server.cert_path` (self-signed for 127.0.0.1, made with openssl).
  dovecot_prefixed, dovecot_prefixed_user
                  a server whose personal namespace is (("INBOX." ".")) (Cyrus/Courier
                  style; started only when asked for): `server.prefix`, `server.separator`.
  dovecot_nocreate_user
                  a user on the session's server whose CREATE is answered NO;
                  `allow_create()` / `refuse_create()` switch it.
  dovecot_own, dovecot_own_user
                  a server of the test's own (started only when asked for), which it may
                  `stop()`, `start()` or `restart()` (same port: "Dovecot restarted").

Every user can also `record_commands()` and read back `commands()`: what its connections
sent after login (Dovecot's rawlog), e.g. to check that ID came first.

Skips (with the reason) only when the `dovecot` binary is absent.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from imapclient import IMAPClient

VMAIL = "vmail"
HOST = "127.0.0.1"

CONFIG = """\
# Written by tests/dovecot.py: a throw-away Dovecot for the mailbot tests.
protocols = imap
listen = {host}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
imap_id_log = *
# A user whose home has a rawlog/ directory gets every post-login command recorded there
# (DovecotUser.record_commands); without the directory nothing is written.
rawlog_dir = %h/rawlog
# Test users come and go: no auth cache; a wrong-password test need not wait 2 s.
auth_cache_size = 0
auth_failure_delay = 0

service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
  # No auth penalty: a wrong-password test must not slow the next test's login by seconds.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/etc/passwd.d/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/etc/passwd.d/%u
}}

{namespace}
"""

# The default server: personal folders at the top level, "/" separator, a Chinese \\Sent.
NAMESPACE_PLAIN = """\
namespace inbox {
  inbox = yes
  separator = /
  mailbox 已发送 {
    special_use = \\Sent
    auto = create
  }
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Trash {
    special_use = \\Trash
  }
}"""

# Classic Cyrus / Courier layout: NAMESPACE (("INBOX." ".")); every personal folder lives
# under INBOX. and a top-level CREATE is refused. No \\Sent folder, so the Sent fallback shows.
NAMESPACE_PREFIXED = """\
namespace inbox {
  inbox = yes
  prefix = INBOX.
  separator = .
  mailbox Trash {
    special_use = \\Trash
  }
}"""

NAMESPACES = {"plain": NAMESPACE_PLAIN, "prefixed": NAMESPACE_PREFIXED}


WATCHDOG = """
import os, shutil, signal, sys, time
runner, master, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
while alive(runner):
    time.sleep(1)
try:
    os.kill(master, signal.SIGTERM)
except ProcessLookupError:
    pass
for _ in range(100):
    if not alive(master):
        break
    time.sleep(0.1)
shutil.rmtree(root, ignore_errors=True)
"""


def _alive(pid: int) -> bool:
    """Running and not a zombie (the daemonised master's parent is init, which may be slow
    to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def ensure_vmail() -> tuple[int, int]:
    """The vmail system user that owns the test mail (created once, idempotently)."""
    try:
        pw = pwd.getpwnam(VMAIL)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", VMAIL],
            check=False, capture_output=True)
        pw = pwd.getpwnam(VMAIL)
    return pw.pw_uid, pw.pw_gid


@dataclass
class DovecotServer:
    root: Path
    port: int
    uid: int
    gid: int
    host: str = HOST
    tls_port: int = 0  # 0: no TLS (the default server, DESIGN.md §6); else the imaps port
    namespace: str = "plain"  # "plain" (prefix "", separator "/") or "prefixed" ("INBOX.", ".")

    @property
    def prefix(self) -> str:
        """The personal namespace prefix the server announces (NAMESPACE)."""
        return "INBOX." if self.namespace == "prefixed" else ""

    @property
    def separator(self) -> str:
        return "." if self.namespace == "prefixed" else "/"

    @property
    def cert_path(self) -> Path:
        """The self-signed certificate (also the CA file clients trust) when TLS is on."""
        return self.root / "etc" / "cert.pem"

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def passwd_dir(self) -> Path:
        # One passwd-file per user: a new user is a new file, no reliance on Dovecot noticing
        # that a shared file changed (it does not always, within the same second).
        return self.root / "etc" / "passwd.d"

    @property
    def pid_path(self) -> Path:
        return self.root / "run" / "master.pid"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for sub in ("run", "state", "etc", "etc/passwd.d", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for sub in ("run", "state", "etc", "etc/passwd.d"):
            os.chmod(self.root / sub, 0o755)
        os.chown(self.root / "home", self.uid, self.gid)
        os.chmod(self.root / "home", 0o755)
        ssl_conf = "ssl = no"
        if self.tls_port:
            self._make_certificate()
            ssl_conf = (f"ssl = yes\nssl_cert = <{self.cert_path}\n"
                        f"ssl_key = <{self.root / 'etc' / 'key.pem'}")
        self.config_path.write_text(
            CONFIG.format(host=self.host, port=self.port, tls_port=self.tls_port,
                          root=self.root, ssl=ssl_conf,
                          namespace=NAMESPACES[self.namespace]), encoding="utf-8")
        # Output to a file, not a pipe: the daemonised children would hold a pipe open forever.
        errors = self.root / "dovecot.stderr"
        with open(errors, "wb") as err:
            proc = subprocess.run(["dovecot", "-c", str(self.config_path)],
                                  stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if proc.returncode != 0:
            raise RuntimeError(f"dovecot did not start: {errors.read_text().strip()}\n"
                               f"{self.log_text()}")
        self._wait_ready()
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        """A tiny process that stops this Dovecot if the test run dies without teardown
        (killed, or SIGPIPE from `pytest | head`), so no server outlives its run."""
        pid = int(self.pid_path.read_text().strip())
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(pid), str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _make_certificate(self) -> None:
        """A self-signed P-256 certificate for 127.0.0.1, made with the OpenSSL CLI."""
        key = self.root / "etc" / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={self.host}",
             "-addext", f"subjectAltName=IP:{self.host}", "-keyout", str(key),
             "-out", str(self.cert_path)],
            check=True, capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        os.chmod(self.cert_path, 0o644)

    def _wait_ready(self, limit: float = 15.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), timeout=1.0) as s:
                if s.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port}\n{self.log_text()}")

    def restart(self) -> None:
        """Stop and start again on the same ports, as an operator restarting the service:
        every connection drops; users, mail and flags stay."""
        self.stop()
        self.start()

    def stop(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # -- users -----------------------------------------------------------------------------
    def add_user(self, username: str | None = None, password: str | None = None, *,
                 refuse_create: bool = False) -> DovecotUser:
        """A new user. refuse_create: every CREATE (and APPEND/COPY/MOVE to a new folder)
        answers NO from the start (see DovecotUser.refuse_create)."""
        username = username or f"u{uuid.uuid4().hex[:10]}"
        # Specials a URL must percent-encode (no ":", which the passwd-file uses as separator).
        password = password or f"p@ss/{uuid.uuid4().hex[:8]}%+ #?"
        home = self.root / "home" / username
        extra = ""
        if refuse_create:
            # Dovecot's own files (uidlist, keywords, subscriptions, indexes) outside the
            # Maildir, so a read-only Maildir root still serves INBOX but no new folder.
            extra = "userdb_mail=maildir:~/Maildir:CONTROL=~/control:INDEX=~/index"
        line = f"{username}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::{extra}\n"
        path = self.passwd_dir / username
        path.write_text(line, encoding="utf-8")
        os.chmod(path, 0o644)
        user = DovecotUser(server=self, username=username, password=password, home=home,
                           control_outside=refuse_create)
        if refuse_create:
            user.refuse_create()
        return user

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=30)


@dataclass
class DovecotUser:
    """One test's own mailbox on the shared server."""

    server: DovecotServer
    username: str
    password: str
    home: Path
    control_outside: bool = False  # made with add_user(refuse_create=True)
    _clients: list[IMAPClient] = field(default_factory=list, repr=False)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"

    @property
    def url(self) -> str:
        """imap://USER:PASS@127.0.0.1:PORT/INBOX with user and password percent-encoded."""
        return (f"imap://{quote(self.username, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/INBOX")

    @property
    def url_without_password(self) -> str:
        return f"imap://{quote(self.username, safe='')}@{self.host}:{self.port}/INBOX"

    def client(self) -> IMAPClient:
        """A logged-in imapclient connection (closed when the test ends)."""
        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        c.login(self.username, self.password)
        self._clients.append(c)
        return c

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> int:
        """APPEND a raw message; returns its UID (UIDPLUS APPENDUID)."""
        c = self.client()
        try:
            if folder != "INBOX" and not c.folder_exists(folder):
                c.create_folder(folder)
            resp = c.append(folder, raw, flags=flags)
            # b'[APPENDUID <validity> <uid>] Append completed.'
            text = resp.decode() if isinstance(resp, bytes) else str(resp)
            return int(text.split("APPENDUID", 1)[1].split("]", 1)[0].split()[1])
        finally:
            self._drop(c)

    def uids(self, folder: str = "INBOX") -> list[int]:
        """UIDs in a folder ([] if the folder does not exist)."""
        return sorted(self.flags(folder))

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags/keywords as str, read with a fresh connection."""
        c = self.client()
        try:
            if not c.folder_exists(folder):
                return {}
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["FLAGS"]) if uids else {}
            return {uid: {_s(f) for f in d[b"FLAGS"]} for uid, d in data.items()}
        finally:
            self._drop(c)

    def folders(self) -> list[str]:
        c = self.client()
        try:
            return [name for _flags, _delim, name in c.list_folders()]
        finally:
            self._drop(c)

    # -- folder creation refused ----------------------------------------------------------
    def refuse_create(self) -> None:
        """From now on the server answers NO to CREATE (and to APPEND, COPY or MOVE into a
        folder that does not exist): the Maildir root is made read-only for Dovecot, which
        runs as vmail. Existing folders and INBOX keep working. Needs a user made with
        add_user(refuse_create=True) (Dovecot's control files live outside the Maildir)."""
        if not self.control_outside:
            raise RuntimeError("refuse_create needs a user from add_user(refuse_create=True)")
        c = self.client()  # first login: Dovecot makes the Maildir (and its auto folders)
        try:
            c.list_folders()
            c.select_folder("INBOX", readonly=True)
        finally:
            self._drop(c)
        os.chmod(self.maildir, 0o555)

    def allow_create(self) -> None:
        """Undo refuse_create: CREATE works again (e.g. a quota raised, a permission fixed)."""
        os.chmod(self.maildir, 0o700)

    # -- what the client sent ---------------------------------------------------------------
    def record_commands(self) -> None:
        """Record every command this user's later connections send after login (Dovecot's
        rawlog); read them with `commands()`."""
        rawlog = self.home / "rawlog"
        for d in (self.home, rawlog):
            d.mkdir(exist_ok=True)
            os.chown(d, self.server.uid, self.server.gid)

    def commands(self) -> list[list[str]]:
        """Per connection (oldest first), the command lines the client sent after login, as
        "NAME args" without the tag, e.g. [["ID (...)", "CAPABILITY", "SELECT INBOX"], ...]."""
        rawlog = self.home / "rawlog"
        sessions: list[list[str]] = []
        for path in sorted(rawlog.glob("*.in"), key=lambda p: (p.stat().st_mtime, p.name)):
            lines = path.read_bytes().decode("utf-8", "replace").splitlines()
            # Each line: "<unix time> <tag> <command ...>" (literal data may follow a line).
            sessions.append([ln.split(" ", 2)[2] for ln in lines if ln.count(" ") >= 2])
        return sessions

    def kick(self) -> None:
        """Drop every IMAP connection of this user on the server side."""
        res = self.server.doveadm("kick", self.username)
        if res.returncode not in (0, 68):  # 68: nobody was connected
            raise RuntimeError(f"doveadm kick failed: {res.stderr}")

    def _drop(self, c: IMAPClient) -> None:
        with contextlib.suppress(Exception):
            c.logout()
        with contextlib.suppress(ValueError):
            self._clients.remove(c)

    def close(self) -> None:
        for c in list(self._clients):
            self._drop(c)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _serve(tls: bool, namespace: str = "plain") -> Iterator[DovecotServer]:
    if shutil.which("dovecot") is None:
        pytest.skip("dovecot binary not found (Debian package dovecot-imapd); "
                    "scripts/test installs it")
    uid, gid = ensure_vmail()
    root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))
    server: DovecotServer | None = None
    last_error: Exception | None = None
    for _ in range(3):  # the free port may be taken between probe and bind
        server = DovecotServer(root=root, port=free_port(), uid=uid, gid=gid,
                               tls_port=free_port() if tls else 0, namespace=namespace)
        try:
            server.start()
            break
        except RuntimeError as exc:
            server.stop()
            last_error = exc
            server = None
    if server is None:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start dovecot: {last_error}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot for the whole test run (a fresh user per test keeps tests apart)."""
    yield from _serve(tls=False)


@pytest.fixture(scope="session")
def dovecot_tls() -> Iterator[DovecotServer]:
    """A second Dovecot with TLS: imaps on `tls_port`, STARTTLS on `port`; trust `cert_path`.

    Started only when a test asks for it.
    """
    yield from _serve(tls=True)


@pytest.fixture
def dovecot_tls_user(dovecot_tls: DovecotServer) -> Iterator[DovecotUser]:
    """A fresh user on the TLS server (the helpers talk plain IMAP on `port`)."""
    user = dovecot_tls.add_user()
    yield user
    user.close()


@pytest.fixture
def dovecot_user(dovecot: DovecotServer) -> Iterator[DovecotUser]:
    """A fresh user with an empty mailbox on the session's Dovecot."""
    user = dovecot.add_user()
    yield user
    user.close()


@pytest.fixture
def dovecot_own() -> Iterator[DovecotServer]:
    """A Dovecot of the test's own, which it may stop, start and `restart()` without
    disturbing the session's server (started only when asked for)."""
    yield from _serve(tls=False)


@pytest.fixture
def dovecot_own_user(dovecot_own: DovecotServer) -> Iterator[DovecotUser]:
    """A fresh user on the test's own Dovecot."""
    user = dovecot_own.add_user()
    yield user
    user.close()


@pytest.fixture(scope="session")
def dovecot_prefixed() -> Iterator[DovecotServer]:
    """A Dovecot whose personal namespace is (("INBOX." ".")), like Cyrus and Courier: a
    top-level CREATE is refused, folders live under INBOX.; no \\Sent folder exists.

    Started only when a test asks for it.
    """
    yield from _serve(tls=False, namespace="prefixed")


@pytest.fixture
def dovecot_prefixed_user(dovecot_prefixed: DovecotServer) -> Iterator[DovecotUser]:
    """A fresh user on the INBOX.-prefixed server (helpers take full names: "INBOX.已处理")."""
    user = dovecot_prefixed.add_user()
    yield user
    user.close()


@pytest.fixture
def dovecot_nocreate_user(dovecot: DovecotServer) -> Iterator[DovecotUser]:
    """A fresh user on the session's Dovecot whose CREATE is answered NO (INBOX works, and so
    do folders that exist; `user.append(raw, folder)` into a new folder fails too).
    `user.allow_create()` lifts the refusal, `user.refuse_create()` restores it."""
    user = dovecot.add_user(refuse_create=True)
    yield user
    user.close()
