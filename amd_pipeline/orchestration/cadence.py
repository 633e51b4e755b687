"""The refresh cadence: how often a cron fires, what a refresh costs, and whether a day of them fits the budget."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from croniter import croniter

from amd_pipeline.wolkvox.windows import local_day_start


def ticks_per_day(cron: str, timezone: str, day: dt.date | None = None) -> int:
    """How many times ``cron`` fires during one local day in ``timezone`` (``day``: a typical one by default)."""
    zone = ZoneInfo(timezone)
    day = day or dt.date(2026, 1, 7)  # a Wednesday without a DST change
    start, end = local_day_start(day, zone), local_day_start(day + dt.timedelta(days=1), zone)
    ticks = croniter(cron, start.astimezone(zone) - dt.timedelta(seconds=1))
    count = 0
    while ticks.get_next(dt.datetime) < end:
        count += 1
    return count


def calls_per_refresh(campaigns: int, use_all: bool) -> int:
    """Calls of one refresh of today: one ``campaign_id=all`` call, or one per campaign."""
    if campaigns == 0:
        return 0
    return 1 if use_all and campaigns > 1 else campaigns


@dataclasses.dataclass(frozen=True)
class Cadence:
    """The refresh cadence against the daily budget.

    Attributes:
        calls_per_tick: calls one refresh makes.
        ticks: how often the cron fires per day.
        limit: the daily call budget (``None``: unknown, nothing to fit).
    """

    calls_per_tick: int
    ticks: int
    limit: int | None

    @property
    def calls_per_day(self) -> int:
        """The calls a day of ticks makes: calls per tick x ticks."""
        return self.calls_per_tick * self.ticks

    @property
    def min_interval_minutes(self) -> int | None:
        """The least minutes between refreshes that keep them within half the budget, if the cron is too fast."""
        if self.limit is None or self.calls_per_day <= self.limit / 2:
            return None
        refreshes = max(1, int(self.limit / 2 // max(self.calls_per_tick, 1)))
        return -(-1440 // refreshes)

    def describe(self) -> str:
        """One line: the calls per day, and whether they fit half of the daily budget (else the interval that does)."""
        base = f"{self.calls_per_tick} call(s) per refresh x {self.ticks} ticks = {self.calls_per_day} calls/day"
        if self.limit is None:
            return f"{base} (daily budget unknown)"
        if self.min_interval_minutes is None:
            return f"{base}, within half of the daily budget of {self.limit}"
        return (
            f"{base} would pass half of the daily budget of {self.limit}: refreshing every "
            f"{self.min_interval_minutes} min to stay within the budget"
        )


def refresh_days(today: dt.date, start_date: dt.date, last_refresh: dt.datetime | None, timezone: str) -> dt.date:
    """The first day a refresh covers: yesterday too when no refresh ran since today's local midnight.

    So the last minutes of every day are read after the day closed, and its row becomes final.
    """
    yesterday = today - dt.timedelta(days=1)
    if yesterday < start_date:
        return today
    midnight = local_day_start(today, ZoneInfo(timezone))
    return yesterday if last_refresh is None or last_refresh < midnight else today
