"""Which Dagster runs cover a campaign x day rectangle, and whether the quota allows them.

Shared by everything that launches loads (the CLI and the schedules), so that they split work into
runs, count calls and refuse over-budget work the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from amd_pipeline.core.plan import Plan
from amd_pipeline.orchestration.partitions import day_key

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
