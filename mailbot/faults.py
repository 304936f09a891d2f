"""The one test hook in production code: die at a named point, like a power cut, when asked.

A test starts mailbot with MAILBOT_TEST_CRASH_AT=<point> and the process SIGKILLs itself the
moment it reaches `crash_point("<point>")`: no cleanup, no finally, no commit, exactly what a
power cut or `kill -9` would leave (tests/intake/test_crash.py, tests/app/test_faults.py).
The variable is read once, at import; without it a crash point is one string comparison.
Only these one-line calls stand in the code: no point changes what the code does.

The points, in the order the flow reaches them (POINTS):

intake (mailbot/intake/ingest.py, processor.py)
  after_archive_commit      rows and archive files committed, the mailbox not yet touched
  before_moved_commit       messages moved to 已处理, the move not yet recorded (moved_at)
  after_move                the move recorded
  during_processing         facts and cases written in the open transaction, not committed
  after_cases_commit        cases recorded and their mail queued (outbox rows), committed
staff marks (mailbot/app/mailbox_staff.py)
  mark_before_keyword       the approval or rejection committed, the keyword not yet set on
                            the mail in the mailbox
issuance (mailbot/app/issuance_job.py)
  issue_before_commit       the pair signed, the rows and the issued mail not yet committed
  issue_after_commit        the pair, the move to issued and the issued mail committed
  revoke_before_commit      certificates revoked and the CRL made, not yet committed
  revoke_after_commit       the revocation committed, the CRL file not yet written
outbox sender (mailbot/outbox/sender.py)
  send_after_render         a batch's rendered bytes committed, none claimed yet
  send_after_claim          a rendered row claimed (its lease committed, with the previous
                            row's outcome), not yet handed to SMTP
  send_after_accept         the SMTP server accepted the mail, `sent` not yet committed: the
                            documented window (the mail is sent once more, and only it)
  send_after_sent_commit    the row committed as sent
Sent copy (mailbot/app/outbox_job.py)
  copy_after_append         the copy APPENDed to the Sent folder, not yet recorded
  copy_after_commit         the copy recorded
delivered (mailbot/app/outbox_job.py)
  delivered_before_commit   issued/revoked cases moved to delivered, not yet committed
  delivered_after_commit    the move to delivered committed
CRL refresh (mailbot/app/crl_job.py)
  crl_before_write          a new CRL committed, the file at [ca] crl_path not yet written
  crl_after_write           the file written
expiry (mailbot/app/jobs.py)
  expiry_after_commit       incomplete cases expired and their notices queued, committed
digest (mailbot/app/digest.py)
  digest_after_commit       the staff digest queued, committed

tests/app/test_faults.py checks that POINTS names every call, each once.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "MAILBOT_TEST_CRASH_AT"

POINTS: tuple[str, ...] = (
    "after_archive_commit", "before_moved_commit", "after_move", "during_processing",
    "after_cases_commit",
    "mark_before_keyword",
    "issue_before_commit", "issue_after_commit", "revoke_before_commit", "revoke_after_commit",
    "send_after_render", "send_after_claim", "send_after_accept", "send_after_sent_commit",
    "copy_after_append", "copy_after_commit",
    "delivered_before_commit", "delivered_after_commit",
    "crl_before_write", "crl_after_write",
    "expiry_after_commit",
    "digest_after_commit",
)

_CRASH_AT = os.environ.get(CRASH_ENV) or None  # read once: the switch is set at start or never


def crash_point(name: str) -> None:
    """SIGKILL this process when MAILBOT_TEST_CRASH_AT names this point (tests only)."""
    if name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
