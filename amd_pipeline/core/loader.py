"""Fetch windows back to back, normalise them and write them in bounded batches. No dagster.

The asset is a thin shell around :func:`load`. Batches bound memory and what a crash costs: one transaction
each, written at ``batch_size`` windows or ``BATCH_SECONDS`` after the last write, so a crash loses at most one
unwritten batch of calls (plus the answers fetched ahead) and never leaves half a batch. A thread of its own
(``_Fetcher``) makes the calls while the load's thread parses and writes. ``campaign_id=all`` (``CampaignAll``,
``plan.py``) falls back to per-campaign calls when refused (``on_all_refused``). Every answer is kept
(``api_answers``): Dagster splits a UI backfill into one run per campaign, so a backfill's run asks ``all`` even
for one campaign (``prefer_all``) and the later runs take their closed windows from it (``in_hand``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import queue
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from amd_pipeline.core.errors import InvalidValueError, LoadFailedError, RejectedValuesError
from amd_pipeline.core.normalize import FETCHED_EMPTY, Fetched, records_for, to_frame
from amd_pipeline.core.plan import ALL, Call, CampaignAll, WindowRequest, call_allowance, per_campaign, plan_calls
from amd_pipeline.core.schema import ANSWER_COLUMNS, TableSpec, attempts_frame
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox import errors
from amd_pipeline.wolkvox.client import WolkvoxClient
from amd_pipeline.wolkvox.models import Answer

DEFAULT_BATCH_SIZE = 2500
BATCH_SECONDS = 10.0  # a batch is also written once this long has passed since the last write


@dataclasses.dataclass
class Progress:
    """A load's progress so far: windows done of the total, calls, retries and seconds since it started."""

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
    from_answers: int = 0  # windows served from answers this backfill already fetched (no call)
    deferred: list[WindowRequest] = dataclasses.field(default_factory=list)  # left for when the quota resets
    changes: list[tuple[str, dt.date, int, int]] = dataclasses.field(default_factory=list)  # restated totals
    median_latency: float | None = None
    elapsed: float = 0.0


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
    prefer_all: bool = False,
    in_hand: Mapping[dt.datetime, Mapping] | None = None,
    on_written: Callable[[list[dict]], None] | None = None,
) -> LoadReport:
    """Fetch every requested window, write them batch by batch (``batch_size`` rows), and report.

    The client may make at most :func:`call_allowance` HTTP attempts in this load, whatever happens.
    With ``skip_final``, windows whose stored row is already final are not fetched again. Every HTTP
    attempt is written to ``api_requests`` with the batch it belongs to, tagged with ``request_tags``
    (``source``, ``run_id``, ``backfill_id``), and every answer to ``api_answers``. Windows whose
    start is in ``in_hand`` (:meth:`AmdStore.answers_in_hand`: a ``campaign_id=all`` answer this
    backfill fetched after the window closed) are taken from it, with no call. When the daily call
    budget or the token's quota runs out, what was fetched is written and the remaining windows are
    listed in ``report.deferred``. ``on_written`` gets each batch's records once its transaction has
    committed (while the next calls are in flight).

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
        in_hand = in_hand or {}
        served = [r for r in requests if r.window.start in in_hand]
        requests = [r for r in requests if r.window.start not in in_hand]
        client.max_calls = client.stats.calls + call_allowance(
            requests, campaign_all, client.retry.max_attempts, prefer_all
        )
        _load(
            client,
            store,
            table,
            requests,
            report,
            served=served,
            in_hand=in_hand,
            prefer_all=prefer_all,
            campaign_all=campaign_all,
            on_all_refused=on_all_refused,
            batch_size=batch_size,
            on_progress=on_progress,
            clock=clock,
            request_tags=dict(request_tags or {}),
            on_written=on_written,
        )
    except Exception as exc:
        raise LoadFailedError(report, exc) from exc
    return report


def _answer_rows(call: Call, answer: Answer, tags: Mapping[str, str]) -> list[dict]:
    """One answer as ``api_answers`` rows: one per data row, or one without a campaign when it had none."""
    base = {
        "answer_id": uuid.uuid4().hex,
        "api_campaign": call.campaign,
        "window_start": call.window.start,
        "window_end": call.window.end,
        "local_date": call.window.local_date,
        "fetched_at": answer.received_at,
        "empty": not answer.rows,
        **{name: tags.get(name) for name in ("source", "run_id", "backfill_id")},
    }
    if not answer.rows:
        return [{**base, "campaign_id": None, "total_amd": None, "data_row": None}]
    rows = []
    for row in answer.rows:
        campaign, total = row.get("campaign_id"), row.get("total_amd")
        rows.append(
            {
                **base,
                "campaign_id": str(campaign).strip() if campaign is not None else None,
                "total_amd": str(total) if total is not None else None,
                "data_row": json.dumps(row, default=str),
            }
        )
    return rows


def _answers_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(ANSWER_COLUMNS))
    for column in ("window_start", "window_end", "fetched_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.astype({"empty": "bool"})


class _Fetcher(threading.Thread):
    """Makes a load's calls one after another, in order, in a thread of its own.

    Only this thread calls the API, so there is still one request in flight; what it fetched is parsed
    and written by the load's own thread meanwhile, so a write no longer waits for a call or the next
    call for a write. It hands over ``("answer", call, answer)``, ``("refused",)`` when the server
    refuses ``campaign_id=all`` in ``auto`` mode (it goes on per campaign), ``("error", exc, deferred)``
    or ``("done",)``. At most ``AHEAD`` answers wait to be taken: enough to call during a write, few
    enough that a write that fails (a file locked for minutes) wastes at most that many calls.
    ``stop()`` makes it end after the call in flight.
    """

    AHEAD = 2

    def __init__(self, client: WolkvoxClient, pending: deque[Call], campaign_all: CampaignAll):
        super().__init__(name="amd-pipeline-fetcher", daemon=True)
        self.client = client
        self.pending = pending
        self.campaign_all = campaign_all
        self.queue: queue.Queue = queue.Queue(maxsize=self.AHEAD)
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def _hand(self, item: tuple) -> bool:
        while not self._halt.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        pending = self.pending
        try:
            while pending and not self._halt.is_set():
                call = pending.popleft()
                try:
                    answer = self.client.amd_accumulated(call.campaign, call.window)
                except (errors.BudgetExhaustedError, errors.QuotaExhaustedError) as exc:
                    # Come back when the quota resets: what was fetched is written, the rest is deferred.
                    deferred = [WindowRequest(c, p.window) for p in [call, *pending] for c in p.covers]
                    self._hand(("error", exc, deferred))
                    return
                except (errors.BadRequestError, errors.UnexpectedResponseError) as exc:
                    if call.campaign != ALL or self.campaign_all != CampaignAll.AUTO:
                        self._hand(("error", exc, None))
                        return
                    # The server refuses campaign_id=all: one call per campaign from here on. `plan_calls`
                    # refuses a campaign named `all`, so the fallback always makes progress.
                    pending = deque(per_campaign([call, *pending]))
                    if not self._hand(("refused",)):
                        return
                    continue
                if not self._hand(("answer", call, answer)):
                    return
            self._hand(("done",))
        except BaseException as exc:  # a bug or an interrupt here must reach the load, not die with the thread
            self._hand(("error", exc, None))


def _load(
    client,
    store,
    table,
    requests,
    report,
    *,
    served,
    in_hand,
    prefer_all,
    campaign_all,
    on_all_refused,
    batch_size,
    on_progress,
    clock,
    request_tags,
    on_written=None,
):
    pending = deque(plan_calls(requests, use_all=campaign_all != CampaignAll.OFF, prefer_all=prefer_all))
    started = clock()
    done = 0
    records: list[dict] = []
    answers: list[dict] = []
    store_failed = False
    last_flush = [clock()]

    def flush() -> None:
        nonlocal store_failed
        last_flush[0] = clock()
        if (records or client.attempts or answers) and not store_failed:
            store_failed = True  # until the write succeeds: a failed write is not retried in `finally`
            written = store.replace(
                table,
                to_frame(records),
                requests=attempts_frame(client.attempts, request_tags),
                answers=_answers_frame(answers) if answers else None,
            )
            answers.clear()
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
            batch = records.copy()
            records.clear()
            if on_written:
                on_written(batch)

    def take(call: Call, answer: Answer) -> None:
        nonlocal done
        good, rejects = records_for(Fetched(call.covers, call.window, answer))
        records.extend(good)
        report.rejects.extend(rejects)
        done += len(call.covers)
        if on_progress:
            on_progress(Progress(done, report.windows, client.stats.calls, client.stats.retries, clock() - started))
        if len(records) >= batch_size or (records and clock() - last_flush[0] >= BATCH_SECONDS):
            flush()

    fetcher = _Fetcher(client, pending, campaign_all)
    try:
        # Windows this backfill already has a closed answer for: no call (the answer is the same one).
        for call in plan_calls(served, use_all=True, prefer_all=True):
            kept = in_hand[call.window.start]
            take(call, Answer(rows=tuple(kept["rows"]), empty=kept["empty"], received_at=kept["fetched_at"]))
            report.from_answers += len(call.covers)
        fetcher.start()
        while True:
            item = fetcher.queue.get()
            if item[0] == "done":
                break
            if item[0] == "error":
                _, exc, deferred = item
                if deferred is not None:
                    report.deferred = deferred
                raise exc
            if item[0] == "refused":
                if on_all_refused:
                    on_all_refused()
                continue
            _, call, answer = item
            if call.campaign == ALL:
                report.all_calls += 1
            answers.extend(_answer_rows(call, answer, request_tags))
            take(call, answer)
    finally:
        # No call after this: the call in flight (if any) ends first, so its attempt is written too; a
        # retry wait is cut short (a run interrupted while the server is gone ends now, not 30 s later).
        fetcher.stop()
        if fetcher.is_alive():
            client.stop()
            fetcher.join()
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
