"""Fetch windows back to back, normalise them and write them in bounded batches. No dagster.

The asset is a thin shell around :func:`load`. Batches bound both memory and what a crash can cost:
each batch's API calls are made first, then its rows are written in one transaction, so a failure
loses at most the calls of one unwritten batch and never leaves a half-written batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from amd_pipeline.normalize import FETCHED_EMPTY, Fetched, InvalidValueError, records_for, to_frame
from amd_pipeline.store import AmdStore, TableSpec
from amd_pipeline.windows import Window
from amd_pipeline.wolkvox.client import WolkvoxClient

DEFAULT_BATCH_SIZE = 250


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
    totals: Counter[str] = dataclasses.field(default_factory=Counter)
    windows_by_campaign: Counter[str] = dataclasses.field(default_factory=Counter)
    empty_by_campaign: Counter[str] = dataclasses.field(default_factory=Counter)
    rejects: list[InvalidValueError] = dataclasses.field(default_factory=list)
    written: list[tuple[str, dt.datetime]] = dataclasses.field(default_factory=list)
    median_latency: float | None = None


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


def plan_calls(requests: Iterable[WindowRequest]) -> list[Call]:
    """One call per campaign and window, in window order (campaigns in the order given)."""
    ordered = sorted(requests, key=lambda r: r.window.start)
    return [Call(r.campaign_id, r.window, (r.campaign_id,)) for r in ordered]


def _batches(calls: Sequence[Call], size: int) -> Iterator[Sequence[Call]]:
    for i in range(0, len(calls), size):
        yield calls[i : i + size]


def load(
    client: WolkvoxClient,
    store: AmdStore,
    table: TableSpec,
    requests: Sequence[WindowRequest],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LoadReport:
    """Fetch every requested window, write them batch by batch, and report.

    Raises:
        LoadFailedError: carrying the report of what was written, caused by a ``RejectedValuesError``
            (raised after every other window was written), or by a ``WolkvoxError`` (fatal, quota
            spent, retries given up: the windows fetched so far in the batch are written first).
    """
    report = LoadReport(windows=len(requests))
    try:
        _load(client, store, table, requests, report, batch_size, on_progress, clock)
    except Exception as exc:
        raise LoadFailedError(report, exc) from exc
    return report


def _load(client, store, table, requests, report, batch_size, on_progress, clock) -> None:
    calls = plan_calls(requests)
    started = clock()
    done = 0
    for batch in _batches(calls, batch_size):
        records: list[dict] = []
        try:
            for call in batch:
                answer = client.amd_accumulated(call.campaign, call.window)
                try:
                    records.extend(records_for(Fetched(call.covers, call.window, answer)))
                except InvalidValueError as exc:
                    report.rejects.append(exc)
                done += len(call.covers)
                if on_progress:
                    on_progress(
                        Progress(done, report.windows, client.stats.calls, client.stats.retries, clock() - started)
                    )
        finally:
            # Write what this batch fetched even when a call failed: nothing fetched is lost.
            if records:
                frame = to_frame(records)
                report.rows_written += store.replace(table, frame)
                report.batches += 1
                for record in records:
                    report.totals[record["campaign_id"]] += record["total_amd"]
                    report.windows_by_campaign[record["campaign_id"]] += 1
                    report.written.append((record["campaign_id"], record["window_start"]))
                    if record["fetch_status"] == FETCHED_EMPTY:
                        report.empty_by_campaign[record["campaign_id"]] += 1
            report.calls = client.stats.calls
            report.retries = client.stats.retries
            report.median_latency = client.stats.median_latency()
    if report.rejects:
        raise RejectedValuesError(report.rejects)
