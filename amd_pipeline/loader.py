"""Fetch windows back to back, normalise them and write them in bounded batches. No dagster.

The asset is a thin shell around :func:`load`. Batches bound both memory and what a crash can cost:
each batch's API calls are made first, then its rows are written in one transaction, so a failure
loses at most the calls of one unwritten batch and never leaves a half-written batch.

When several campaigns share a window, one ``campaign_id=all`` call can answer for all of them
(``CampaignAll``): ``on`` always uses it, ``off`` never, ``auto`` uses it until the server refuses
it, then falls back to one call per campaign and remembers the refusal (``on_all_refused``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd

from amd_pipeline.normalize import FETCHED_EMPTY, Fetched, InvalidValueError, records_for, to_frame
from amd_pipeline.settings import check_campaign_id
from amd_pipeline.store import REQUEST_COLUMNS, AmdStore, TableSpec
from amd_pipeline.windows import Window
from amd_pipeline.wolkvox import errors
from amd_pipeline.wolkvox.client import WolkvoxClient

DEFAULT_BATCH_SIZE = 250
ALL = "all"


class CampaignAll(enum.StrEnum):
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


@dataclasses.dataclass
class Progress:
    windows_done: int
    windows_total: int
    calls: int
    retries: int
    elapsed: float


@dataclasses.dataclass
class LoadReport:
    """What a load did, for metadata and the CLI."""

    windows: int = 0
    rows_written: int = 0
    batches: int = 0
    calls: int = 0
    retries: int = 0
    all_calls: int = 0
    totals: Counter[str] = dataclasses.field(default_factory=Counter)
    windows_by_campaign: Counter[str] = dataclasses.field(default_factory=Counter)
    empty_by_campaign: Counter[str] = dataclasses.field(default_factory=Counter)
    rejects: list[InvalidValueError] = dataclasses.field(default_factory=list)
    written: list[dict] = dataclasses.field(default_factory=list)  # the records written, one per window
    skipped: int = 0  # windows already final, not fetched again (``skip_final``)
    deferred: list[WindowRequest] = dataclasses.field(default_factory=list)  # left for when the quota resets
    changes: list[tuple[str, dt.date, int, int]] = dataclasses.field(default_factory=list)  # restated totals
    median_latency: float | None = None
    elapsed: float = 0.0


class LoadFailedError(Exception):
    """A load stopped early; ``report`` says what was written before it stopped."""

    def __init__(self, report: LoadReport, cause: BaseException):
        self.report = report
        self.cause = cause
        super().__init__(str(cause))


class RejectedValuesError(ValueError):
    """Some windows held values that were rejected; every other window was written."""

    def __init__(self, rejects: Sequence[InvalidValueError]):
        self.rejects = list(rejects)
        lines = "\n".join(f"  - {r}" for r in self.rejects[:20])
        more = f"\n  ... and {len(self.rejects) - 20} more" if len(self.rejects) > 20 else ""
        super().__init__(f"{len(self.rejects)} window(s) rejected, not written:\n{lines}{more}")


def plan_calls(requests: Iterable[WindowRequest], *, use_all: bool = False) -> list[Call]:
    """The calls that answer ``requests``, in window order.

    With ``use_all``, a window wanted for several campaigns is one ``campaign_id=all`` call.

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
        if use_all and len(campaigns) > 1:
            calls.append(Call(ALL, window, tuple(campaigns)))
        else:
            calls.extend(Call(c, window, (c,)) for c in campaigns)
    return calls


def _per_campaign(calls: Iterable[Call]) -> list[Call]:
    return [Call(c, call.window, (c,)) for call in calls for c in call.covers]


def call_allowance(requests: Sequence[WindowRequest], campaign_all: CampaignAll, max_attempts: int) -> int:
    """The most HTTP attempts a load of ``requests`` may make: its planned calls x attempts.

    In ``auto`` mode the plan may turn into one refused ``all`` call plus one call per campaign.
    """
    calls = len(plan_calls(requests, use_all=campaign_all != CampaignAll.OFF))
    if campaign_all == CampaignAll.AUTO:
        calls = max(calls, 1 + len(plan_calls(requests)))
    return calls * max_attempts


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a load will cost, before it starts (``--dry-run`` and run metadata)."""

    windows: int
    calls: int
    daily_quota: int | None = None
    quota_remaining: int | None = None
    median_latency: float | None = None
    budget_limit: int | None = None  # this pipeline's share of the daily quota
    budget_used: int = 0  # calls already made today by every process

    @property
    def budget_remaining(self) -> int | None:
        return max(self.budget_limit - self.budget_used, 0) if self.budget_limit is not None else None

    @property
    def quota_share(self) -> float | None:
        return self.calls / self.daily_quota if self.daily_quota else None

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
        return self.calls * self.median_latency if self.median_latency is not None else None

    def describe(self) -> str:
        parts = [f"{self.windows} windows, {self.calls} calls"]
        if self.daily_quota:
            parts.append(f"{self.quota_share:.1%} of the daily quota of {self.daily_quota}")
        if self.quota_remaining is not None:
            parts.append(f"{self.quota_remaining} calls left today")
        if self.budget_limit is not None:
            parts.append(f"{self.budget_remaining} of the pipeline's daily budget of {self.budget_limit} left")
        if self.eta_seconds is not None:
            parts.append(f"ETA {self.eta_seconds:.0f} s at {self.median_latency * 1000:.0f} ms per call (median seen)")
        else:
            parts.append("ETA unknown (no latency observed yet)")
        return ", ".join(parts)


def load(
    client: WolkvoxClient,
    store: AmdStore,
    table: TableSpec,
    requests: Sequence[WindowRequest],
    *,
    campaign_all: CampaignAll = CampaignAll.OFF,
    on_all_refused: Callable[[], None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    skip_final: bool = False,
    request_tags: Mapping[str, str] | None = None,
) -> LoadReport:
    """Fetch every requested window, write them batch by batch (``batch_size`` rows), and report.

    The client may make at most :func:`call_allowance` HTTP attempts in this load, whatever happens.
    With ``skip_final``, windows whose stored row is already final are not fetched again. Every HTTP
    attempt is written to ``api_requests`` with the batch it belongs to, tagged with ``request_tags``
    (``source``, ``run_id``). When the daily call budget or the token's quota runs out, what was
    fetched is written and the remaining windows are listed in ``report.deferred``.

    Raises:
        LoadFailedError: carrying the report of what was written, caused by a
            ``RejectedValuesError`` (raised after every other window was written), by a
            ``WolkvoxError`` (fatal, quota spent, retries given up: the rows fetched so far are
            written first), or by the store (locked file, another time zone).
    """
    report = LoadReport(windows=len(requests))
    try:
        store.prepare(table)
        if skip_final:
            final = store.final_keys(table, [(r.campaign_id, r.window.start) for r in requests])
            requests = [r for r in requests if (r.campaign_id, r.window.start) not in final]
            report.skipped = report.windows - len(requests)
        client.max_calls = client.stats.calls + call_allowance(requests, campaign_all, client.retry.max_attempts)
        _load(
            client,
            store,
            table,
            requests,
            report,
            campaign_all=campaign_all,
            on_all_refused=on_all_refused,
            batch_size=batch_size,
            on_progress=on_progress,
            clock=clock,
            request_tags=dict(request_tags or {}),
        )
    except Exception as exc:
        raise LoadFailedError(report, exc) from exc
    return report


def _attempts_frame(client: WolkvoxClient, tags: dict[str, str]) -> pd.DataFrame:
    """The client's attempts since the last write, as ``api_requests`` rows (and forget them)."""
    rows = [{**attempt, **tags} for attempt in client.attempts]
    client.attempts.clear()
    frame = pd.DataFrame.from_records(rows, columns=list(REQUEST_COLUMNS))
    frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True)
    return frame.astype({"attempt": "Int32", "http_status": "Int32", "latency_ms": "float64", "bytes": "Int64"})


def _load(
    client,
    store,
    table,
    requests,
    report,
    *,
    campaign_all,
    on_all_refused,
    batch_size,
    on_progress,
    clock,
    request_tags,
):
    pending = deque(plan_calls(requests, use_all=campaign_all != CampaignAll.OFF))
    started = clock()
    done = 0
    records: list[dict] = []
    store_failed = False

    def flush() -> None:
        nonlocal store_failed
        if (records or client.attempts) and not store_failed:
            store_failed = True  # until the write succeeds: a failed write is not retried in `finally`
            written = store.replace(table, to_frame(records), requests=_attempts_frame(client, request_tags))
            store_failed = False
            report.rows_written += written.rows
            report.changes.extend(written.changes)
            if not records:
                return
            report.batches += 1
            for record in records:
                campaign = record["campaign_id"]
                report.totals[campaign] += record["total_amd"]
                report.windows_by_campaign[campaign] += 1
                report.written.append(record)
                if record["fetch_status"] == FETCHED_EMPTY:
                    report.empty_by_campaign[campaign] += 1
            records.clear()

    try:
        while pending:
            call = pending.popleft()
            try:
                answer = client.amd_accumulated(call.campaign, call.window)
            except (errors.BudgetExhaustedError, errors.QuotaExhaustedError):
                # Come back when the quota resets: what was fetched is written, the rest is deferred.
                report.deferred = [WindowRequest(c, p.window) for p in [call, *pending] for c in p.covers]
                raise
            except (errors.BadRequestError, errors.UnexpectedResponseError):
                if call.campaign != ALL or campaign_all != CampaignAll.AUTO:
                    raise
                # `plan_calls` refuses a campaign named `all`, so the fallback always makes progress.
                # The server refuses campaign_id=all: one call per campaign from here on.
                if on_all_refused:
                    on_all_refused()
                pending = deque(_per_campaign([call, *pending]))
                continue
            if call.campaign == ALL:
                report.all_calls += 1
            good, rejects = records_for(Fetched(call.covers, call.window, answer))
            records.extend(good)
            report.rejects.extend(rejects)
            done += len(call.covers)
            if on_progress:
                on_progress(Progress(done, report.windows, client.stats.calls, client.stats.retries, clock() - started))
            if len(records) >= batch_size:
                flush()
    finally:
        # Write what was fetched even when a call failed: nothing fetched is lost.
        flush()
        if not store_failed:  # and say which windows could not be written, and why
            store.record_issues(
                [(r.campaign_id, r.window.start, r.window.local_date, "rejected", str(r)) for r in report.rejects]
                + [
                    (r.campaign_id, r.window.start, r.window.local_date, "deferred", "daily call budget or quota")
                    for r in report.deferred
                ]
            )
        report.calls = client.stats.calls
        report.retries = client.stats.retries
        report.median_latency = client.stats.median_latency()
        report.elapsed = clock() - started
    if report.rejects:
        raise RejectedValuesError(report.rejects)
