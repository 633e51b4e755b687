"""DuckDB storage: schema, idempotent batch writes, read-only queries. No dagster import.

A batch replaces its (campaign_id, window_start) keys in ONE transaction: delete the keys, insert
the rows by name, commit. A crash leaves the previous state; a rerun writes the same rows again.
The file is opened per batch, after the API calls, and closed within milliseconds, so analysts can
read between batches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from amd_pipeline.normalize import COLUMNS


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """An AMD table: one row per campaign and window of its grain."""

    name: str
    description: str

    @property
    def ddl(self) -> str:
        return f"""
        CREATE TABLE IF NOT EXISTS {self.name} (
            campaign_id VARCHAR NOT NULL,
            window_start TIMESTAMPTZ NOT NULL,
            window_end TIMESTAMPTZ NOT NULL,
            local_date DATE NOT NULL,
            total_amd BIGINT NOT NULL CHECK (total_amd >= 0),
            fetch_status VARCHAR NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (campaign_id, window_start)
        )"""


AMD_DAILY = TableSpec(
    "amd_daily",
    "AMD detections (calls answered by a machine) per campaign and local day of the operation. "
    "One row per campaign and day; window_end is exclusive.",
)


class StoreLockedError(RuntimeError):
    """Another process holds the DuckDB file for longer than the store waits."""


class AmdStore:
    """The DuckDB file analysts read.

    Args:
        path: the database file; its folder is created on first write.
        lock_timeout: seconds to keep retrying while another process holds the file.
        sleep: waits between those retries (tests pass a fake).
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 120.0, sleep: Callable[[float], None] = time.sleep):
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._sleep = sleep

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying with backoff while another process holds its lock."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        waited, delay = 0.0, 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if waited >= self.lock_timeout:
                    raise StoreLockedError(
                        f"{self.path} is locked by another process for over {self.lock_timeout:.0f} s "
                        "(an open notebook or database GUI?); close it and rerun"
                    ) from exc
                self._sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    def replace(self, table: TableSpec, frame: pd.DataFrame) -> int:
        """Replace the frame's (campaign_id, window_start) rows in one transaction. Returns rows written."""
        if list(frame.columns) != list(COLUMNS):
            raise ValueError(f"frame columns {list(frame.columns)} are not the AMD columns {list(COLUMNS)}")
        if frame.empty:
            return 0
        conn = self.connect()
        try:
            conn.execute(table.ddl)
            conn.register("batch", frame)
            conn.execute("BEGIN TRANSACTION")
            try:
                conn.execute(
                    f"DELETE FROM {table.name} USING batch "
                    f"WHERE {table.name}.campaign_id = batch.campaign_id "
                    f"AND {table.name}.window_start = batch.window_start"
                )
                conn.execute(f"INSERT INTO {table.name} BY NAME SELECT * FROM batch")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return len(frame)

    def query(self, sql: str, params: list | None = None, *, timezone: str | None = None) -> pd.DataFrame:
        """Run ``sql`` on a read-only connection and return a frame."""
        conn = self.connect(read_only=True)
        try:
            if timezone:
                conn.execute(f"SET TimeZone = '{ZoneInfo(timezone).key}'")  # ZoneInfo rejects anything but a zone name
            return conn.execute(sql, params or []).df()
        finally:
            conn.close()
