"""Budget periods: `total` (never resets), `daily`, `weekly` (ISO weeks, from Monday), `monthly`, as
calendar periods in UTC or in `BASTION_BUDGET_TIMEZONE`.

A key's spend is kept per period under the period's id (`d2026-12-03`, `w2026-W49`, `m2026-12`,
`total`), so a new period starts from zero without anything being reset. The clock may be moved by
`BASTION_CLOCK_OFFSET_SECONDS` (for tests that cross a period's turn without waiting for it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("total", "daily", "weekly", "monthly")


@dataclass(frozen=True, slots=True)
class Window:
    id: str
    starts: datetime | None  # None for `total`
    resets: datetime | None  # None for `total`
    resets_epoch: float  # `resets` as epoch seconds (infinity for `total`)


def window(period: str, now: datetime) -> Window:
    """The period containing `now` (an aware datetime in the budget's time zone)."""
    if period == "total":
        return Window("total", None, None, float("inf"))
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        starts, ends, label = day, day + timedelta(days=1), f"d{day:%Y-%m-%d}"
    elif period == "weekly":
        starts = day - timedelta(days=day.weekday())
        ends = starts + timedelta(days=7)
        year, week, _ = starts.isocalendar()
        label = f"w{year}-W{week:02d}"
    elif period == "monthly":
        starts = day.replace(day=1)
        ends = (starts + timedelta(days=32)).replace(day=1)
        label = f"m{starts:%Y-%m}"
    else:
        raise ValueError(f"unknown budget period '{period}' (one of {', '.join(PERIODS)})")
    # Aware arithmetic is wall-clock arithmetic: a day across a DST change is 23 or 25 hours, as it should.
    return Window(label, starts, ends, ends.timestamp())


class Periods:
    """The current window of each period, recomputed only when one has ended (a request pays for a
    clock read and a comparison)."""

    def __init__(self, zone: str = "UTC", offset_seconds: float = 0.0) -> None:
        self.zone = UTC if zone.upper() == "UTC" else ZoneInfo(zone)
        self.offset = offset_seconds
        self._current: dict[str, Window] = {}

    def epoch(self) -> float:
        return time.time() + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.epoch(), self.zone)

    def current(self, period: str) -> Window:
        known = self._current.get(period)
        if known is not None and self.epoch() < known.resets_epoch:
            return known
        fresh = self._current[period] = window(period, self.now())
        return fresh
