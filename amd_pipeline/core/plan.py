"""What a load will call, and what it will cost, before any call is made. No dagster.

A load's partitions are window requests (:class:`WindowRequest`: a campaign and its window); :func:`plan_calls`
turns them into calls (:class:`Call`). When several campaigns share a window, one ``campaign_id=all`` call
can answer for all of them (``CampaignAll``): ``on`` always uses it, ``off`` never, ``auto`` uses it until
the server refuses it, then falls back to one call per campaign (:func:`per_campaign`).
:func:`call_allowance` bounds the HTTP attempts a load may make; :class:`Plan` is the cost the CLI's
``--dry-run`` and the run metadata show.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Iterable, Sequence

from amd_pipeline.core.settings import check_campaign_id
from amd_pipeline.wolkvox.windows import Window

ALL = "all"


class CampaignAll(enum.StrEnum):
    """When a load uses ``campaign_id=all``: ``on`` always, ``off`` never, ``auto`` until the server refuses it."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclasses.dataclass(frozen=True)
class WindowRequest:
    """One partition: a campaign and its window."""

    campaign_id: str
    window: Window


@dataclasses.dataclass(frozen=True)
class Call:
    """One API call: ``campaign`` is a campaign id or ``"all"``; ``covers`` the campaigns it answers for."""

    campaign: str
    window: Window
    covers: tuple[str, ...]


def plan_calls(requests: Iterable[WindowRequest], *, use_all: bool = False, prefer_all: bool = False) -> list[Call]:
    """The calls that answer ``requests``, in window order.

    With ``use_all``, a window wanted for several campaigns is one ``campaign_id=all`` call; with
    ``prefer_all`` too, so is a window wanted for one campaign (its answer serves the backfill's other runs).

    Raises:
        SettingsError: a request's campaign is not a campaign id (``all`` included: a partition
            named ``all`` must never reach the API as if it were a campaign).
    """
    by_window: dict[dt.datetime, tuple[Window, list[str]]] = {}
    for request in requests:
        check_campaign_id(request.campaign_id, "campaign partition")
        window, campaigns = by_window.setdefault(request.window.start, (request.window, []))
        if request.campaign_id not in campaigns:
            campaigns.append(request.campaign_id)
    calls: list[Call] = []
    for start in sorted(by_window):
        window, campaigns = by_window[start]
        if use_all and (len(campaigns) > 1 or prefer_all):
            calls.append(Call(ALL, window, tuple(campaigns)))
        else:
            calls.extend(Call(c, window, (c,)) for c in campaigns)
    return calls


def per_campaign(calls: Iterable[Call]) -> list[Call]:
    """The same calls with each ``all`` call split into one call per campaign it covers."""
    return [Call(c, call.window, (c,)) for call in calls for c in call.covers]


def call_allowance(
    requests: Sequence[WindowRequest], campaign_all: CampaignAll, max_attempts: int, prefer_all: bool = False
) -> int:
    """The most HTTP attempts a load of ``requests`` may make: its planned calls x attempts.

    In ``auto`` mode the plan may turn into one refused ``all`` call plus one call per campaign.
    """
    calls = len(plan_calls(requests, use_all=campaign_all != CampaignAll.OFF, prefer_all=prefer_all))
    if campaign_all == CampaignAll.AUTO:
        calls = max(calls, 1 + len(plan_calls(requests)))
    return calls * max_attempts


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a load will cost, before it starts (``--dry-run`` and run metadata)."""

    windows: int
    calls: int
    from_answers: int = 0  # windows served from answers already in hand (no call)
    daily_quota: int | None = None
    quota_remaining: int | None = None
    median_latency: float | None = None
    budget_limit: int | None = None  # this pipeline's share of the daily quota
    budget_used: int = 0  # calls already made today by every process

    @property
    def budget_remaining(self) -> int | None:
        """Calls left in this pipeline's daily budget (never below 0); None without a budget."""
        return max(self.budget_limit - self.budget_used, 0) if self.budget_limit is not None else None

    @property
    def quota_share(self) -> float | None:
        """The calls as a fraction of the token's daily quota; None when the quota is unknown."""
        return self.calls / self.daily_quota if self.daily_quota else None

    @property
    def other_use(self) -> bool:
        """Other integrations already spent more of today's quota than it has."""
        return self.quota_remaining is not None and self.quota_remaining < 0

    @property
    def quota_days(self) -> int | None:
        """Whole days of quota the calls need."""
        return math.ceil(self.calls / self.daily_quota) if self.daily_quota else None

    @property
    def exceeds_remaining(self) -> bool:
        """More calls than the token's quota or this pipeline's budget leaves today."""
        return any(left is not None and self.calls > left for left in (self.quota_remaining, self.budget_remaining))

    @property
    def eta_seconds(self) -> float | None:
        """Seconds the calls should take at the median latency seen; None before any latency was seen."""
        return self.calls * self.median_latency if self.median_latency is not None else None

    def describe(self) -> str:
        """The plan in one line: windows, calls, quota and budget left, and the ETA."""
        served = f" ({self.from_answers} from answers already in hand)" if self.from_answers else ""
        parts = [f"{self.windows} windows{served}, {self.calls} calls"]
        if self.daily_quota:
            parts.append(f"{self.quota_share:.1%} of the daily quota of {self.daily_quota}")
        if self.quota_remaining is not None:
            parts.append(f"{max(self.quota_remaining, 0)} calls left today")
        if self.budget_limit is not None:
            parts.append(f"{self.budget_remaining} of the pipeline's daily budget of {self.budget_limit} left")
        if self.eta_seconds is not None:
            parts.append(f"ETA {self.eta_seconds:.0f} s at {self.median_latency * 1000:.0f} ms per call (median seen)")
        else:
            parts.append("ETA unknown (no latency observed yet)")
        return ", ".join(parts)
