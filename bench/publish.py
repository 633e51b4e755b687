"""What publishing the analysts' copy costs: time and size per publish at a small and an operation's scale.

    .venv/bin/python bench/publish.py

Builds working files with synthetic final rows (and one `api_requests` row per campaign-day, the
ledger's size with WOLKVOX_CAMPAIGN_ALL=off) for 3 campaigns x 60 days and 50 campaigns x 3 years,
then publishes each three times and prints the median time and the published file's size.
"""

import datetime as dt
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from amd_pipeline.core.normalize import FETCHED, to_frame
from amd_pipeline.core.schema import AMD_DAILY, REQUEST_COLUMNS
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.windows import day_window


def build(folder: Path, campaigns: int, days: int) -> AmdStore:
    """A working file with ``campaigns`` x ``days`` final rows and a request row for each."""
    store = AmdStore(folder / f"w{campaigns}x{days}.working.duckdb", timezone="America/Bogota")
    store.prepare(AMD_DAILY)
    first = dt.date(2023, 1, 1)
    for start in range(0, days, 100):  # batches of 100 days
        records, attempts = [], []
        for k in range(start, min(start + 100, days)):
            window = day_window(first + dt.timedelta(days=k), "America/Bogota")
            at = window.end + dt.timedelta(minutes=7)
            for c in range(campaigns):
                records.append(
                    {
                        "campaign_id": str(20000 + c),
                        "window_start": window.start,
                        "window_end": window.end,
                        "local_date": window.local_date,
                        "total_amd": (k * 7 + c * 13) % 2000,
                        "fetch_status": FETCHED,
                        "fetched_at": at,
                        "is_final": True,
                    }
                )
                attempts.append(
                    {
                        "requested_at": at,
                        "source": "backfill",
                        "run_id": "bench",
                        "api": "campaign_6",
                        "campaign": str(20000 + c),
                        "date_ini": window.date_ini,
                        "date_end": window.date_end,
                        "attempt": 1,
                        "http_status": 200,
                        "outcome": "ok",
                        "latency_ms": 180.0,
                        "bytes": 96,
                    }
                )
        frame = pd.DataFrame(attempts, columns=list(REQUEST_COLUMNS))
        frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True)
        store.replace(AMD_DAILY, to_frame(records), requests=frame)
    return store


def main() -> None:
    """Build and publish both scales three times each; a line per scale."""
    folder = Path(tempfile.mkdtemp(prefix="amd-publish-"))
    print("scale | rows | publish median (3 runs) | published size | working size")
    for campaigns, days in ((3, 60), (50, 3 * 365)):
        store = build(folder, campaigns, days)
        target = folder / f"p{campaigns}x{days}.duckdb"
        times = [store.publish(target).seconds for _ in range(3)]
        print(
            f"{campaigns} campaigns x {days} days | {campaigns * days} | {statistics.median(times):.3f} s "
            f"| {target.stat().st_size / 1e6:.1f} MB | {store.path.stat().st_size / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
