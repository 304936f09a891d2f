"""Crash test: `mailbot run --once` SIGKILLed at the worst moments, against a real Dovecot.

The hook: MAILBOT_TEST_CRASH_AT=<point> makes the process kill itself with SIGKILL exactly
there (mailbot.intake.ingest.crash_point; inert without the variable). Points:
  after_archive_commit  rows committed, mailbox not yet touched
  before_moved_commit   messages moved to 已处理, the move not yet recorded (moved_at)
  after_move            messages moved to 已处理; the recorder thread may have recorded
                        some of them meanwhile
  during_processing     facts recorded in the open transaction, not committed
After each crash a plain second run must leave every message recorded once, one case per
application, the inbox empty and the audit chain intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailbot.cases.audit import verify_chain
from mailbot.cases.models import Case
from mailbot.db import session_factory
from mailbot.intake.models import MESSAGE_ARCHIVED, MESSAGE_PROCESSED, Message
from tests.support.intake import make_config, make_mail, write_config

REPO = Path(__file__).resolve().parents[2]
PROCESSED = "已处理"
pytestmark = pytest.mark.timeout(180)


def _run(config: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILBOT_TEST_CRASH_AT"}
    if crash_at:
        env["MAILBOT_TEST_CRASH_AT"] = crash_at
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "mailbot.cli", "--config", str(config),
                           "run", "--once"], capture_output=True, text=True, timeout=120,
                          cwd=config.parent, env=env)


def _counts(sessions) -> tuple[int, int, set[str]]:
    with sessions() as s:
        rows = s.scalar(select(func.count()).select_from(Message))
        cases = s.scalar(select(func.count()).select_from(Case))
        statuses = set(s.scalars(select(Message.status)))
    return rows, cases, statuses


@pytest.mark.parametrize("crash_at", ["after_archive_commit", "before_moved_commit", "after_move",
                                      "during_processing"])
def test_killed_run_loses_nothing_and_repeats_nothing(crash_at, tmp_path, db_url, engine,
                                                      dovecot_user) -> None:
    cfg = make_config(tmp_path, db_url, dovecot_user.url)
    config = write_config(tmp_path / "mailbot.toml", cfg)
    for i in range(3):
        dovecot_user.append(make_mail(subject=f"厦门崩溃测试{i}有限公司+数字证书申办"))
    sessions = session_factory(engine)

    crashed = _run(config, crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    rows, cases, statuses = _counts(sessions)
    if crash_at in ("before_moved_commit", "after_move"):  # processing runs beside the move
        assert rows == 3 and cases <= 3 and statuses <= {MESSAGE_ARCHIVED, MESSAGE_PROCESSED}
    else:
        assert rows == 3 and cases == 0 and statuses == {MESSAGE_ARCHIVED}
    inbox_after_crash = len(dovecot_user.uids("INBOX"))
    if crash_at == "during_processing":
        # the recorder thread works beside intake: the move may or may not have happened
        assert inbox_after_crash in (0, 3)
    else:
        assert inbox_after_crash == (3 if crash_at == "after_archive_commit" else 0)

    again = _run(config, None)
    assert again.returncode == 0, again.stderr
    rows, cases, statuses = _counts(sessions)
    assert rows == 3 and cases == 3 and statuses == {MESSAGE_PROCESSED}
    assert dovecot_user.uids("INBOX") == [] and len(dovecot_user.uids(PROCESSED)) == 3
    with sessions() as s:
        assert verify_chain(s).ok
        assert all(m.moved_at is not None and m.case_id is not None
                   for m in s.scalars(select(Message)))

    third = _run(config, None)  # and a further run changes nothing
    assert third.returncode == 0, third.stderr
    assert _counts(sessions)[:2] == (3, 3)
