"""A working file as loads leave it, from the simulator's ground truth, without Dagster or HTTP:
final days, today's snapshots every few hours up to now, the same weekday's snapshots for 8 weeks,
the campaign list and a window issue."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from amd_pipeline.core.normalize import FETCHED, FETCHED_EMPTY, to_frame
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.simulator import truth, truth_for_day
from amd_pipeline.wolkvox.windows import day_window

ZONE = "America/Bogota"
SNAPSHOT_HOURS = 3


def daily_row(campaign: str, day: dt.date, total: int, fetched_at: dt.datetime, zone: str = ZONE) -> dict:
    window = day_window(day, zone)
    return {
        "campaign_id": campaign,
        "window_start": window.start,
        "window_end": window.end,
        "local_date": day,
        "total_amd": total,
        "fetch_status": FETCHED if total else FETCHED_EMPTY,
        "fetched_at": fetched_at,
        "is_final": fetched_at >= window.end,
    }


def snapshot_times(day: dt.date, until: dt.datetime | None = None) -> list[dt.datetime]:
    """Local wall-clock times of ``day`` every SNAPSHOT_HOURS, before ``until``."""
    zone = ZoneInfo(ZONE)
    times = [dt.datetime.combine(day, dt.time(h), zone) for h in range(1, 24, SNAPSHOT_HOURS)]
    return [t for t in times if until is None or t < until]


def make_working_store(path: Path, campaigns: list[str], days: int = 60) -> AmdStore:
    """``days`` final days before today and today so far for ``campaigns``, written through the store."""
    zone = ZoneInfo(ZONE)
    now = dt.datetime.now(zone)
    today = now.date()
    first = today - dt.timedelta(days=days)
    store = AmdStore(path, timezone=ZONE, start_date=first)
    store.prepare(AMD_DAILY)
    # While a past weekday twin of today was open, refreshes kept its snapshots.
    for weeks in range(1, 9):
        past = today - dt.timedelta(weeks=weeks)
        for at in snapshot_times(past):
            store.replace(AMD_DAILY, to_frame(daily_row(c, past, _so_far(c, at), at) for c in campaigns))
    closed = [first + dt.timedelta(days=k) for k in range(days)]
    store.replace(
        AMD_DAILY,
        to_frame(
            daily_row(c, d, truth_for_day(c, d), day_window(d, ZONE).end + dt.timedelta(hours=2))
            for c in campaigns
            for d in closed
        ),
    )
    for at in snapshot_times(today, until=now):
        store.replace(AMD_DAILY, to_frame(daily_row(c, today, _so_far(c, at), at) for c in campaigns))
    store.record_campaigns(
        [{"campaign_id": c, "campaign_name": f"Campaign {c}", "type_campaign": "predictive"} for c in campaigns],
        dt.datetime.now(dt.UTC),
    )
    store.record_issues([(campaigns[0], day_window(today, ZONE).start, today, "deferred", "daily call budget")])
    return store


def _so_far(campaign: str, at: dt.datetime) -> int:
    midnight = dt.datetime.combine(at.date(), dt.time())
    return truth(campaign, midnight, at.replace(tzinfo=None))


PLANTED = {60: 300, 62: 0, 10: 1000}  # day index -> total of campaign 1


def make_planted_store(path: Path) -> tuple[AmdStore, dt.date]:
    """Campaigns 1 and 2: 70 final days of 100, 102, 104, 106, 100, ... ending yesterday. Campaign 1 also
    has a spike (300) on day 60, a zero on day 62, a spike on day 10 (too little history to judge), and
    today partial at 900 (not closed). Returns the store and day 0."""
    today = dt.datetime.now(ZoneInfo(ZONE)).date()
    first = today - dt.timedelta(days=70)
    store = AmdStore(path, timezone=ZONE, start_date=first)
    store.prepare(AMD_DAILY)
    records = []
    for campaign in ("1", "2"):
        for k in range(70):
            d = first + dt.timedelta(days=k)
            usual = 100 + 2 * (k % 4)
            total = PLANTED.get(k, usual) if campaign == "1" else usual
            records.append(daily_row(campaign, d, total, day_window(d, ZONE).end + dt.timedelta(hours=1)))
    records.append(daily_row("1", today, 900, dt.datetime.now(dt.UTC)))
    store.replace(AMD_DAILY, to_frame(records))
    return store, first
