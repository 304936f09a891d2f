"""When the daemon's periodic jobs fall due, computed with apscheduler's triggers on the
project clock (tests set the clock instead of sleeping).

The daemon runs every job in its one main thread (the mailbox connection, the SQLite writer
and the signer are not shared between threads); apscheduler says when. Between due times the
daemon waits in IDLE (or polls), so new mail is answered at once and a due job never waits
for mail:

* ``marks``   staff's flags and folders, every [mailbox_staff] flag_poll_seconds (the flag
              sits in 已处理, which an IDLE on INBOX never sees);
* ``outbox``  when the earliest queued mail's next attempt comes (set by the daemon from
              the outbox after each cycle, not a fixed interval);
* ``expiry``  incomplete cases past [cases] incomplete_expiry_days, hourly;
* ``crl``     the CRL brought up to date before nextUpdate, hourly;
* ``digest``  the staff digest, daily at [outbox] digest_hour, Beijing time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailbot import clock
from mailbot.config import Config

HOURLY = 3600


def triggers(cfg: Config, start: datetime) -> dict[str, BaseTrigger]:
    """The periodic jobs of this configuration and their triggers, counted from `start`
    (the project clock: an interval trigger would otherwise start from the wall clock)."""
    def every(seconds: float) -> IntervalTrigger:
        return IntervalTrigger(seconds=seconds, start_date=start + timedelta(seconds=seconds),
                               timezone=clock.SHANGHAI)

    found: dict[str, BaseTrigger] = {}
    staff = cfg.mailbox_staff
    if staff.enabled and staff.flag_poll_seconds > 0:
        found["marks"] = every(staff.flag_poll_seconds)
    found["expiry"] = every(HOURLY)
    found["crl"] = every(HOURLY)
    if cfg.outbox.staff_addresses:
        found["digest"] = CronTrigger(hour=cfg.outbox.digest_hour, timezone=clock.SHANGHAI)
    return found


@dataclass
class Schedule:
    """The next fire time of each periodic job; `due` takes the ones whose time has come."""

    triggers: dict[str, BaseTrigger]
    start: datetime = field(default_factory=clock.now)
    next_at: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, trigger in self.triggers.items():
            first = trigger.get_next_fire_time(None, self.start)
            if first is not None:
                self.next_at[name] = first

    @classmethod
    def for_config(cls, cfg: Config) -> Schedule:
        start = clock.now()
        return cls(triggers(cfg, start), start)

    def due(self, now: datetime | None = None) -> list[str]:
        """The jobs due at `now`, in the order of their due time; each is moved on to its
        next fire time after `now` (a job missed several times runs once)."""
        now = now or clock.now()
        due = sorted((at, name) for name, at in self.next_at.items() if at <= now)
        for at, name in due:
            if name not in self.triggers:  # a one-off (set_due): done once taken
                del self.next_at[name]
                continue
            following = self.triggers[name].get_next_fire_time(at, now)
            while following is not None and following <= now:
                following = self.triggers[name].get_next_fire_time(following, now)
            if following is None:
                del self.next_at[name]
            else:
                self.next_at[name] = following
        return [name for _at, name in due]

    def set_due(self, name: str, at: datetime | None) -> None:
        """A one-off due time computed elsewhere (the outbox's next retry); None: none."""
        if at is None:
            self.next_at.pop(name, None)
        else:
            self.next_at[name] = at

    def seconds_until_next(self, now: datetime | None = None) -> float | None:
        """How long until the next job falls due (0 when one is due); None with no jobs."""
        if not self.next_at:
            return None
        now = now or clock.now()
        return max(0.0, (min(self.next_at.values()) - now).total_seconds())
