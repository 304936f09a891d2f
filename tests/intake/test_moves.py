"""A lasting move failure is logged once, whatever counts and timings its text carries."""

from __future__ import annotations

import logging

from mailbot.intake.moves import MoveFailures
from mailbot.mailbox.base import MailboxError


def _refused(timing: str) -> MailboxError:
    return MailboxError(f"imap://u@h/INBOX: cannot create folder '已处理': [NOPERM] Permission"
                        f" denied ({timing} secs).")


def test_the_same_failure_is_logged_once_and_its_end_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger="mailbot.intake.moves")
    failures = MoveFailures()
    failures.failed("moving mail to 已处理", _refused("0.002 + 0.000 + 0.001"))
    failures.failed("moving mail to 已处理", _refused("0.001 + 0.000"))
    assert failures.error is not None and "0.001 + 0.000" in failures.error  # the latest text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    failures.failed("moving mail to 已处理", MailboxError("[OVERQUOTA] Quota exceeded"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # another one
    failures.succeeded()
    failures.succeeded()
    assert failures.error is None
    assert len([r for r in caplog.records if "works again" in r.getMessage()]) == 1
