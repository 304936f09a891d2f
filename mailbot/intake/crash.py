"""The one test hook in production code: die here, like a power cut, when asked.

tests/intake/test_crash.py sets MAILBOT_TEST_CRASH_AT to a point's name (after_archive_commit,
before_moved_commit, after_move in ingest.py; during_processing in processor.py) and the
process SIGKILLs itself there. Inert unless the variable is set.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "MAILBOT_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when MAILBOT_TEST_CRASH_AT names this point (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
