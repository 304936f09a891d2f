"""The daemon's jobs after the mail, in the order CONTRACTS.md gives for `run --once`:
staff flags and folders, issuance, outbox, then the jobs that fall due (expiry).

A job is `fn(daemon) -> None`; it commits its own work, and a failure is reported by the
daemon while the other jobs still run. Each job's module adds itself to JOBS here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailbot.app.issuance_job import issuance_job
from mailbot.app.mailbox_staff import mailbox_job
from mailbot.cases.workflow import Policy, expire_incomplete

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)

Job = Callable[["Daemon"], None]


def expire_job(daemon: Daemon) -> None:
    """Incomplete cases older than [cases] incomplete_expiry_days become expired."""
    with daemon.sessions() as s:
        expired = expire_incomplete(s, Policy.from_config(daemon.cfg.cases))
        s.commit()
    for case in expired:
        log.info("case %s expired: incomplete for too long", case.ref)


# (name, job) in the order they run after the mail job.
JOBS: list[tuple[str, Job]] = [
    ("mailbox", mailbox_job),
    ("issuance", issuance_job),
    ("expiry", expire_job),
]
