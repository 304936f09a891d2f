"""The analysis pool: worker processes that turn archived bytes into facts, and their care.

Workers read the archived bytes themselves (no copy over the pipe) and hand back
MessageFacts. A worker that dies (out of memory, a crash in C code) or is killed for running
too long breaks its pool; `AnalysisPool` replaces it, and `analyse_alone` runs one message
in a worker of its own to find out which message did it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, NamedTuple

from mailbot.config import load_rule_settings
from mailbot.intake import archive

if TYPE_CHECKING:
    from mailbot.intake.facts import MessageFacts

log = logging.getLogger(__name__)

# analyse(archive_dir, sha256, rules_dir) -> MessageFacts, run in a worker (picklable by name)
Analyse = Callable[[str, str, str], "MessageFacts"]


def analyse_archived(archive_dir: str, sha256: str, rules_dir: str) -> MessageFacts:
    """Worker side: read the archived bytes (checking the hash) and analyse them."""
    from mailbot.intake.analyse import analyse_message

    raw = archive.load(archive_dir, sha256, verify=True)
    facts = analyse_message(raw, load_rule_settings(rules_dir))
    for att in facts.attachments:
        att.data = None  # the bytes stay in the archive; the recorder needs only the facts
    return facts


def forkserver_context() -> Any:
    """A start method safe while other threads run: workers fork from a clean server."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mailbot.intake.analyse"])
    return ctx


def kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes: the pool breaks and fails what it holds.

    ProcessPoolExecutor names its processes only in `_processes` (stable since 3.2).
    """
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.kill()
        except (OSError, ValueError):
            pass


def workers_can_start(pool: cf.ProcessPoolExecutor) -> bool:
    """Run a trivial task in `pool` (then shut it down): False when even that fails."""
    try:
        pool.submit(os.getpid).result(timeout=60)
        return True
    except Exception:  # noqa: BLE001 - broken pool, timeout: the workers do not run
        log.error("a new parse worker could not run even a trivial task")
        return False
    finally:
        kill_workers(pool)  # a probe that hangs must not hold its worker
        pool.shutdown(wait=False, cancel_futures=True)


def worker_init() -> None:
    """Ignore stop signals, and die with the daemon, however it dies.

    SIGTERM or SIGINT sent to the whole process group (systemd, Ctrl-C) is the daemon's to
    handle: it finishes the current step and then stops its workers. A killed daemon
    (SIGKILL, OOM) cannot tell its pool to stop, and a worker waiting for work never notices
    on its own: on Linux the kernel kills the worker with its parent (the daemon, or the
    forkserver, which leaves with it: PR_SET_PDEATHSIG); elsewhere a thread watches for the
    parent to change. So no worker outlives the daemon holding its sockets and files open.
    """
    import ctypes
    import sys

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    if (sys.platform.startswith("linux")
            and ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0):
        # The daemon may have died between fork and prctl, and then no signal comes: our
        # parent must still be the daemon, or the forkserver with the daemon as its parent.
        daemon = multiprocessing.parent_process()  # the daemon, whichever start method
        parent = os.getppid()
        if daemon is not None and parent != daemon.pid:
            try:  # /proc/PID/stat is "pid (comm) state ppid ..."; comm may hold ") "
                with open(f"/proc/{parent}/stat", encoding="ascii", errors="replace") as fh:
                    grandparent: int | None = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                grandparent = None
            if grandparent != daemon.pid:
                os._exit(0)
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class InFlight(NamedTuple):
    """One submitted analysis: its row, its future, and the pool running it."""

    row_id: int
    sha256: str
    future: cf.Future[Any]
    pool: cf.ProcessPoolExecutor


class AnalysisPool:
    """The parse workers: one pool, replaced when a dead worker has broken it."""

    def __init__(self, workers: int, archive_dir: str, rules_dir: str,
                 analyse: Analyse = analyse_archived) -> None:
        self.workers = workers
        self.archive_dir = archive_dir
        self.rules_dir = rules_dir
        self.analyse = analyse
        self._pool: cf.ProcessPoolExecutor | None = None

    def _get(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import mailbot.intake.analyse  # noqa: F401 - workers start with it imported

            if threading.active_count() == 1:
                # fork: workers start at once and are our direct children (see worker_init).
                # They never touch the inherited database or IMAP sockets, and leave with
                # os._exit, so nothing is closed twice.
                ctx = multiprocessing.get_context("fork")
            else:
                # A fork would copy locks other threads hold (a pool replaced while the
                # recorder runs).
                ctx = forkserver_context()
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                                initializer=worker_init)
        return self._pool

    def start(self) -> None:
        """Start the parse workers now (a pool forks them on its first task only)."""
        self._get().submit(os.getpid).result()

    def submit(self, row_id: int, sha: str) -> InFlight:
        """Submit one analysis; a pool broken by a dead worker is replaced first."""
        for _ in range(2):
            pool = self._get()
            try:
                return InFlight(row_id, sha, pool.submit(self.analyse, self.archive_dir, sha,
                                                         self.rules_dir), pool)
            except BrokenProcessPool:
                log.warning("a parse worker died; starting a new pool")
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
        raise BrokenProcessPool("a new parse pool broke at once")

    def lone(self) -> cf.ProcessPoolExecutor:
        """A pool of one worker, for analysing one suspect message alone."""
        return cf.ProcessPoolExecutor(max_workers=1, mp_context=forkserver_context(),
                                      initializer=worker_init)

    def submit_alone(self, pool: cf.ProcessPoolExecutor, sha: str) -> cf.Future[Any]:
        return pool.submit(self.analyse, self.archive_dir, sha, self.rules_dir)

    def close(self, *, kill: bool) -> None:
        """Shut the pool down; `kill` first when analyses are in flight (one might hang)."""
        if self._pool is not None:
            if kill:
                kill_workers(self._pool)  # before shutdown, which forgets the processes
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
