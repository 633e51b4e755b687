"""Which Dagster runs cover a campaign x day rectangle, what schedules cost, and what the quota allows.

Shared by everything that launches loads (the CLI and the schedules), so that they split work into
runs, count calls and refuse over-budget work the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from croniter import croniter

from amd_pipeline.core.plan import Plan
from amd_pipeline.orchestration.partitions import day_key
from amd_pipeline.wolkvox.windows import local_day_start

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def campaign_groups(ordered: Sequence[str], selected: Sequence[str]) -> list[list[str]]:
    """Split ``selected`` into runs of campaigns adjacent in the partition order (one Dagster run each).

    A ranged run covers a rectangle of the campaign x day matrix, so a subset of campaigns that
    are not neighbours in the partition order needs one run per block of neighbours.
    """
    chosen = set(selected)
    groups: list[list[str]] = []
    current: list[str] = []
    for campaign in ordered:
        if campaign in chosen:
            current.append(campaign)
        elif current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


@dataclasses.dataclass(frozen=True)
class RangedRun:
    """One Dagster run: campaigns ``campaigns`` (adjacent partitions) x days ``start..end``."""

    campaigns: tuple[str, ...]
    start: dt.date
    end: dt.date

    def tags(self) -> dict[str, str]:
        """Dagster's partition range tags: the run's first and last ``campaign|day`` partition keys."""
        return {
            RANGE_START_TAG: str(day_key(self.campaigns[0], self.start)),
            RANGE_END_TAG: str(day_key(self.campaigns[-1], self.end)),
        }


def ranged_runs(ordered: Sequence[str], selected: Sequence[str], start: dt.date, end: dt.date) -> list[RangedRun]:
    """The runs that cover ``selected`` campaigns x ``start..end``, given the partition order."""
    return [RangedRun(tuple(group), start, end) for group in campaign_groups(ordered, selected)]


def quota_refusal(plan: Plan) -> str | None:
    """Why the plan may not start today (it needs more calls than remain), or ``None``."""
    if not plan.exceeds_remaining:
        return None
    if plan.other_use:
        left = (
            f"the token has already made {plan.daily_quota - plan.quota_remaining} of today's {plan.daily_quota} "
            "calls (other integrations share its quota), so none remain today; "
            f"it needs {plan.quota_days} day(s) of quota"
        )
    elif plan.quota_remaining is not None and plan.calls > plan.quota_remaining:
        left = (
            f"only {plan.quota_remaining} of today's {plan.daily_quota} remain; "
            f"it needs {plan.quota_days} day(s) of quota"
        )
    else:
        left = (
            f"only {plan.budget_remaining} of the pipeline's daily budget of {plan.budget_limit} remain "
            "(AMD_QUOTA_SHARE)"
        )
    return (
        f"this load needs {plan.calls} calls but {left}. Load fewer days at a time, or pass --force to spend what "
        "is left (the run stops when it runs out, and a later backfill fetches the rest)"
    )


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
