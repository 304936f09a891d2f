"""The daemon's jobs after the mail, in the order CONTRACTS.md gives for `run --once`:
staff flags and folders, issuance, the outbox (with the Sent copies), then the jobs that
fall due (expiry, the CRL refresh, the daily staff digest); app/schedule.py says when the
daemon runs them between mail.

A job is `fn(daemon) -> str | None`: it commits its own work and may return a one-line
summary (`run --once` prints it); a failure is reported by the daemon while the other jobs
still run. Each job's module adds itself to JOBS here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailbot.app.crl_job import crl_job
from mailbot.app.digest import digest_job
from mailbot.app.issuance_job import issuance_job
from mailbot.app.mailbox_staff import mailbox_job
from mailbot.app.outbox_job import outbox_job
from mailbot.cases.workflow import Policy, expire_incomplete
from mailbot.faults import crash_point

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)

Job = Callable[["Daemon"], "str | None"]


def expire_job(daemon: Daemon) -> str | None:
    """Incomplete cases older than [cases] incomplete_expiry_days become expired."""
    with daemon.sessions() as s:
        expired = expire_incomplete(s, Policy.from_config(daemon.cfg.cases))
        s.commit()
    for case in expired:
        crash_point("expiry_after_commit")
        log.info("case %s expired: incomplete for too long", case.ref)
    return f"expired {len(expired)}" if expired else None


# (name, job) in the order they run after the mail job.
JOBS: list[tuple[str, Job]] = [
    ("mailbox", mailbox_job),
    ("issuance", issuance_job),
    ("outbox", outbox_job),
    ("expiry", expire_job),
    ("crl", crl_job),
    ("digest", digest_job),
]
