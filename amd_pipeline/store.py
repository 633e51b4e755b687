"""DuckDB storage: schema, idempotent batch writes, read-only queries. No dagster import.

A batch replaces its (campaign_id, window_start) keys in ONE transaction: delete the keys, insert
the rows by name, commit. A crash leaves the previous state; a rerun writes the same rows again.
The file is opened per batch, after the API calls, and closed within milliseconds, so analysts can
read between batches.

The file remembers the time zone its days are in (table ``amd_meta``). A store given another zone
refuses to write (:class:`TimezoneMismatchError`) instead of adding a second row for the same local
day; :meth:`AmdStore.migrate_timezone` moves a file to a new zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from amd_pipeline.normalize import COLUMNS
from amd_pipeline.windows import day_window

META_DDL = "CREATE TABLE IF NOT EXISTS amd_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
TIMEZONE_KEY = "timezone"


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


class TimezoneMismatchError(RuntimeError):
    """The file's days are in another time zone than the one this load was asked to use."""


@dataclasses.dataclass(frozen=True)
class Migration:
    """What :meth:`AmdStore.migrate_timezone` did (or would do): days kept and days dropped for a refetch."""

    old: str | None
    new: str
    kept_days: int
    dropped_days: list
    dropped_rows: int


class AmdStore:
    """The DuckDB file analysts read.

    Args:
        path: the database file; its folder is created on first write.
        timezone: the IANA zone of the days written; writes refuse a file that records another one.
        lock_timeout: seconds to keep retrying while another process holds the file.
        sleep: waits between those retries (tests pass a fake).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timezone: str | None = None,
        lock_timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = Path(path)
        self.timezone = timezone
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
                self._claim_timezone(conn, table)
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

    def check_timezone(self, table: TableSpec) -> None:
        """Record this store's zone in a new file, or raise :class:`TimezoneMismatchError` (before any call)."""
        if self.timezone is None:
            return
        conn = self.connect()
        try:
            conn.execute(table.ddl)
            conn.execute("BEGIN TRANSACTION")
            try:
                self._claim_timezone(conn, table)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _claim_timezone(self, conn: duckdb.DuckDBPyConnection, table: TableSpec) -> None:
        if self.timezone is None:
            return
        conn.execute(META_DDL)
        found = conn.execute("SELECT value FROM amd_meta WHERE key = ?", [TIMEZONE_KEY]).fetchone()
        stored = found[0] if found else None
        if stored is None and _days_in_other_zone(conn, table, self.timezone):
            stored = "another time zone (the file does not say which)"
        if stored is not None and stored != self.timezone:
            raise TimezoneMismatchError(
                f"{self.path} holds days in {stored}, but WOLKVOX_TIMEZONE is {self.timezone}: set "
                f"WOLKVOX_TIMEZONE back, or move the file with `amd-pipeline migrate-timezone --to {self.timezone}` "
                "(it keeps days whose windows are unchanged and drops the others for a backfill to refetch)"
            )
        if found is None:
            conn.execute("INSERT INTO amd_meta VALUES (?, ?)", [TIMEZONE_KEY, self.timezone])

    def stored_timezone(self) -> str | None:
        """The zone the file's days are in, when it records one."""
        if not self.path.exists():
            return None
        conn = self.connect(read_only=True)
        try:
            if not _has_table(conn, "amd_meta"):
                return None
            found = conn.execute("SELECT value FROM amd_meta WHERE key = ?", [TIMEZONE_KEY]).fetchone()
            return found[0] if found else None
        finally:
            conn.close()

    def migrate_timezone(self, table: TableSpec, new: str, *, dry_run: bool = False) -> Migration:
        """Move the file's days to zone ``new``, in one transaction.

        A stored day whose window is the same span of instants in ``new`` (the zones agree that day,
        e.g. America/Bogota and America/Lima) is kept as it is; every other day's rows are deleted,
        since their totals cover another span, and the result lists those days for a backfill.
        """
        conn = self.connect(read_only=dry_run)
        try:
            has_meta = _has_table(conn, "amd_meta")
            found = (
                conn.execute("SELECT value FROM amd_meta WHERE key = ?", [TIMEZONE_KEY]).fetchone()
                if has_meta
                else None
            )
            days = _stored_days(conn, table)
            dropped = sorted({d for d, start, end in days if (w := day_window(d, new)).start != start or w.end != end})
            rows = 0
            if dropped:
                rows = conn.execute(
                    f"SELECT count(*) FROM {table.name} WHERE local_date IN (SELECT unnest(?::DATE[]))", [dropped]
                ).fetchone()[0]
            if not dry_run:
                conn.execute("BEGIN TRANSACTION")
                conn.execute(META_DDL)
                if dropped:
                    conn.execute(f"DELETE FROM {table.name} WHERE local_date IN (SELECT unnest(?::DATE[]))", [dropped])
                conn.execute("DELETE FROM amd_meta WHERE key = ?", [TIMEZONE_KEY])
                conn.execute("INSERT INTO amd_meta VALUES (?, ?)", [TIMEZONE_KEY, new])
                conn.execute("COMMIT")
            kept = len({d for d, _, _ in days}) - len(dropped)
            return Migration(found[0] if found else None, new, kept, dropped, rows)
        finally:
            conn.close()

    def query(self, sql: str, params: list | None = None, *, timezone: str | None = None) -> pd.DataFrame:
        """Run ``sql`` on a read-only connection and return a frame."""
        conn = self.connect(read_only=True)
        try:
            if timezone:
                conn.execute(f"SET TimeZone = '{ZoneInfo(timezone).key}'")  # ZoneInfo rejects anything but a zone name
            return conn.execute(sql, params or []).df()
        finally:
            conn.close()


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])


def _stored_days(conn: duckdb.DuckDBPyConnection, table: TableSpec) -> list:
    """Distinct (local_date, window_start, window_end) of the table (UTC-aware datetimes)."""
    if not _has_table(conn, table.name):
        return []
    rows = conn.execute(
        f"SELECT DISTINCT local_date, epoch(window_start), epoch(window_end) FROM {table.name}"
    ).fetchall()
    return [(d, dt.datetime.fromtimestamp(s, dt.UTC), dt.datetime.fromtimestamp(e, dt.UTC)) for d, s, e in rows]


def _days_in_other_zone(conn: duckdb.DuckDBPyConnection, table: TableSpec, timezone: str) -> bool:
    """True when a file that records no zone holds a day whose window is not that day in ``timezone``."""
    return any(
        (w := day_window(d, timezone)).start != start or w.end != end for d, start, end in _stored_days(conn, table)
    )
