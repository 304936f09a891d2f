"""One clock for the whole daemon, so tests can set the time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


# Asia/Shanghai: UTC+8 all year (China keeps no summer time), so no tz database is needed.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


def local(moment: datetime) -> datetime:
    """A moment in Beijing time (naive values are UTC, as the database keeps them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(SHANGHAI)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return _now()


def set_clock(fn: Callable[[], datetime] | None) -> None:
    """Replace the clock (tests); None restores the system clock."""
    global _now
    _now = fn if fn is not None else (lambda: datetime.now(UTC))


class FrozenClock:
    """A settable clock for tests: `clock.advance(minutes=10)` instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current
