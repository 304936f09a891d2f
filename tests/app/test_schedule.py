"""When the daemon's periodic jobs fall due (app/schedule.py), on the test clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailbot.app.schedule import Schedule
from mailbot.config import Config


def test_jobs_fall_due_on_the_project_clock(frozen_clock) -> None:
    cfg = Config()
    cfg.outbox.staff_addresses = ["staff@example.cn"]
    cfg.outbox.digest_hour = 8
    s = Schedule.for_config(cfg)  # 2026-11-25 09:00 UTC = 17:00 Beijing
    assert s.seconds_until_next() == cfg.mailbox_staff.flag_poll_seconds
    assert s.due() == []
    frozen_clock.advance(seconds=cfg.mailbox_staff.flag_poll_seconds)
    assert s.due() == ["marks"]
    assert s.due() == []  # taken: the next is one interval on
    frozen_clock.advance(hours=1)
    assert set(s.due()) == {"marks", "expiry", "crl"}  # a job missed many times runs once
    frozen_clock.current = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # 08:00 Beijing
    assert "digest" in s.due()


def test_no_digest_without_staff_and_no_flag_poll_when_off(frozen_clock) -> None:
    cfg = Config()
    cfg.mailbox_staff.flag_poll_seconds = 0
    s = Schedule.for_config(cfg)
    assert set(s.next_at) == {"expiry", "crl"}


def test_a_one_off_due_time_is_taken_once(frozen_clock) -> None:
    s = Schedule.for_config(Config())
    s.set_due("outbox", frozen_clock() + timedelta(seconds=2))
    assert s.seconds_until_next() == 2
    frozen_clock.advance(seconds=2)
    assert "outbox" in s.due()
    assert "outbox" not in s.next_at
    s.set_due("outbox", None)
    assert "outbox" not in s.next_at
