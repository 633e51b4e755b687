"""DuckDB storage: schema, idempotent batch writes, read-only queries. No dagster import.

A batch replaces its (campaign_id, window_start) keys in ONE transaction: delete the keys, insert
the rows by name, commit. A crash leaves the previous state; a rerun writes the same rows again.
The file is opened per batch, after the API calls, and closed within milliseconds, so analysts can
read between batches.

One file serves several Wolkvox operations (one per BPO client: own server, token, zone, campaigns):
every table the store writes has ``operation`` as its first column and in its key, since two operations'
campaign ids can collide. A store is one operation's (:attr:`AmdStore.operation`): what it writes and
reads is that operation's rows; :meth:`AmdStore.query` reads everything. A file from before operations
is migrated in place on its first write-open (every row becomes :data:`DEFAULT_OPERATION`'s).

Each operation's file remembers the time zone its days are in (table ``amd_operations``). A store given
another zone refuses to write (:class:`TimezoneMismatchError`) instead of adding a second row for the
same local day; :meth:`AmdStore.migrate_timezone` moves an operation to a new zone. Two operations in
two zones in one file is normal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import filelock
import pandas as pd

from amd_pipeline.core.errors import FileHeldError, PublishHeldError, StoreLockedError, TimezoneMismatchError
from amd_pipeline.core.export import export_published
from amd_pipeline.core.normalize import COLUMNS
from amd_pipeline.core.portable import held_open, pid_alive, sync_file, sync_folder
from amd_pipeline.core.settings import (
    DEFAULT_OPERATION,
    DEFAULT_STORAGE_VERSION,
    INT_SETTINGS,
    check_storage_version,
)
from amd_pipeline.core.views import create_views, only_operation
from amd_pipeline.wolkvox.windows import day_window

META_DDL = "CREATE TABLE IF NOT EXISTS amd_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
TIMEZONE_KEY = "timezone"  # in amd_meta before operations: moved to amd_operations by the migration
START_DATE_KEY = "start_date"
# Per operation: the zone its days are in and the first day of its partition matrix.
OPERATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS amd_operations (operation VARCHAR PRIMARY KEY, timezone VARCHAR, start_date DATE)"
)

# The request ledger: one row per HTTP attempt, written in the transaction of the batch it belongs to.
REQUEST_COLUMNS: dict[str, str] = {
    "requested_at": "TIMESTAMPTZ",
    "source": "VARCHAR",
    "run_id": "VARCHAR",
    "api": "VARCHAR",
    "campaign": "VARCHAR",
    "date_ini": "VARCHAR",
    "date_end": "VARCHAR",
    "attempt": "INTEGER",
    "http_status": "INTEGER",
    "outcome": "VARCHAR",
    "latency_ms": "DOUBLE",
    "bytes": "BIGINT",
}
REQUESTS_DDL = (
    "CREATE TABLE IF NOT EXISTS api_requests (operation VARCHAR NOT NULL, "
    + ", ".join(f"{name} {kind}" for name, kind in REQUEST_COLUMNS.items())
    + ")"
)

# Every answer as it came, one row per data row (an empty answer: one row with no campaign), written in
# the transaction of the batch it belongs to. A later run of the same backfill takes a closed window's
# totals from a campaign_id=all answer fetched after the window ended instead of calling again.


def attempts_frame(attempts: list[dict], tags: dict[str, str | None]) -> pd.DataFrame:
    """A client's recorded HTTP attempts as ``api_requests`` rows, tagged (``source``, ``run_id``);
    the list is emptied, so each attempt is written once."""
    taken = len(attempts)  # the calling thread may append meanwhile: those stay for the next batch
    rows = [{**attempt, **tags} for attempt in attempts[:taken]]
    del attempts[:taken]
    frame = pd.DataFrame.from_records(rows, columns=list(REQUEST_COLUMNS))
    frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True)
    return frame.astype({"attempt": "Int32", "http_status": "Int32", "latency_ms": "float64", "bytes": "Int64"})


ANSWER_COLUMNS: dict[str, str] = {
    "answer_id": "VARCHAR",
    "api_campaign": "VARCHAR",  # what was asked: "all" or one campaign id
    "window_start": "TIMESTAMPTZ",
    "window_end": "TIMESTAMPTZ",
    "local_date": "DATE",
    "fetched_at": "TIMESTAMPTZ",
    "empty": "BOOLEAN",  # the server said "no data" (404 envelope or empty data)
    "campaign_id": "VARCHAR",  # of this data row, as sent (trimmed)
    "total_amd": "VARCHAR",  # as sent, before parsing
    "data_row": "VARCHAR",  # the whole data row, JSON
    "source": "VARCHAR",
    "run_id": "VARCHAR",
    "backfill_id": "VARCHAR",  # Dagster's dagster/backfill tag, or the CLI backfill's own id
}
ANSWERS_DDL = (
    "CREATE TABLE IF NOT EXISTS api_answers (operation VARCHAR NOT NULL, "
    + ", ".join(f"{n} {k}" for n, k in ANSWER_COLUMNS.items())
    + ")"
)
ANSWERS_KEEP_DAYS = 14  # answers older than this are pruned when the next load starts (prepare)


CAMPAIGNS_DDL = """
CREATE TABLE IF NOT EXISTS campaigns (
    operation VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    campaign_name VARCHAR,
    type_campaign VARCHAR,
    status VARCHAR,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    listed BOOLEAN NOT NULL,
    PRIMARY KEY (operation, campaign_id)
)"""


ISSUES_DDL = """
CREATE TABLE IF NOT EXISTS amd_window_issues (
    operation VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    local_date DATE NOT NULL,
    status VARCHAR NOT NULL,
    detail VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (operation, campaign_id, window_start)
)"""


# Today so far: one row per campaign, open day and fetch, written with the batch that fetched it.
INTRADAY_COLUMNS = (
    "operation VARCHAR NOT NULL, campaign_id VARCHAR NOT NULL, local_date DATE NOT NULL, "
    "fetched_at TIMESTAMPTZ NOT NULL, total_amd BIGINT NOT NULL"
)
INTRADAY_DDL = (
    f"CREATE TABLE IF NOT EXISTS amd_intraday ({INTRADAY_COLUMNS}, "
    "PRIMARY KEY (operation, campaign_id, local_date, fetched_at))"
)
DEFAULT_INTRADAY_KEEP_DAYS = INT_SETTINGS["AMD_INTRADAY_KEEP_DAYS"][0]


@dataclasses.dataclass(frozen=True)
class Published:
    """One publish: how long it took, the file's size, and what the copy holds (read while building it,
    so describing the dataset costs no second opening of the file)."""

    rows: int
    seconds: float
    bytes: int
    campaigns: int = 0  # distinct (operation, campaign_id)
    operations: int = 0  # distinct operations with a row in amd_daily
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)  # campaign-days per completeness status
    daily: pd.DataFrame | None = None  # the last 30 days: local_date, total over campaigns, final


@dataclasses.dataclass
class Written:
    """What one write did: rows replaced, and final days whose total changed (restatements)."""

    rows: int = 0
    changes: list[tuple[str, dt.date, int, int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """An AMD table: one row per campaign and window of its grain."""

    name: str
    description: str

    @property
    def ddl(self) -> str:
        return f"""
        CREATE TABLE IF NOT EXISTS {self.name} (
            operation VARCHAR NOT NULL,
            campaign_id VARCHAR NOT NULL,
            window_start TIMESTAMPTZ NOT NULL,
            window_end TIMESTAMPTZ NOT NULL,
            local_date DATE NOT NULL,
            total_amd BIGINT NOT NULL CHECK (total_amd >= 0),
            fetch_status VARCHAR NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL,
            is_final BOOLEAN NOT NULL,
            PRIMARY KEY (operation, campaign_id, window_start)
        )"""


AMD_DAILY = TableSpec(
    "amd_daily",
    "AMD detections (calls answered by a machine) per campaign and local day of the operation. "
    "One row per campaign and day; window_end is exclusive.",
)


# Waits between tries to rename the new copy over a held published file: a virus scanner or indexer lets
# go within a second; a program with the file open does not, and the publish is left to the next one.
REPLACE_WAITS = (0.1, 0.25, 0.5)


def timezone_refusal(path: str | Path, operation: str, stored: str, wanted: str) -> str:
    """Why a file whose ``operation`` days are in ``stored`` takes no load in zone ``wanted``, and what to do
    (the store's :class:`TimezoneMismatchError` and the CLI's check before any call say it alike)."""
    keeps = "(it keeps days whose windows are unchanged and drops the others for a backfill to refetch)"
    if operation == DEFAULT_OPERATION:
        return (
            f"{path} holds days in {stored}, but WOLKVOX_TIMEZONE is {wanted}: set WOLKVOX_TIMEZONE={stored} again, "
            f"or move the file's days with `amd-pipeline migrate-timezone --to {wanted}` {keeps}"
        )
    return (
        f"{path} holds days for operation {operation!r} in {stored}, but its defs.yaml says timezone: {wanted}: set "
        f"it back, or move them with `amd-pipeline migrate-timezone --operation {operation} --to {wanted}` {keeps}"
    )


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
        operation: whose rows this store writes and reads (its key in every table); the file may hold
            other operations' rows, which it never touches.
        timezone: the IANA zone of the days written; writes refuse a file that records another one.
        start_date: the first day of the partition matrix, recorded for the completeness view.
        lock_timeout: seconds to keep retrying while another process holds the file.
        sleep: waits between those retries (tests pass a fake).
        intraday_keep_days: snapshots of open days fetched longer ago than this are pruned by writes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        operation: str = DEFAULT_OPERATION,
        timezone: str | None = None,
        start_date: dt.date | None = None,
        lock_timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        intraday_keep_days: int = DEFAULT_INTRADAY_KEEP_DAYS,
    ):
        self.intraday_keep_days = intraday_keep_days
        self.path = Path(path)
        if not operation or not operation.strip():
            raise ValueError("an operation needs a name")
        self.operation = operation
        self.timezone = timezone
        self.start_date = start_date
        self.lock_timeout = lock_timeout
        self._sleep = sleep
        self._current = False  # the file is known to have this version's layout: no need to look again

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

    def replace(
        self,
        table: TableSpec,
        frame: pd.DataFrame,
        *,
        requests: pd.DataFrame | None = None,
        answers: pd.DataFrame | None = None,
    ) -> Written:
        """Replace the frame's (campaign_id, window_start) rows and append ``requests`` (the HTTP
        attempts that fetched them, :data:`REQUEST_COLUMNS`) and ``answers`` (what the answers said,
        :data:`ANSWER_COLUMNS`) in one transaction.

        Rows of open days (``is_final`` false) are also kept as snapshots in ``amd_intraday``, in the
        same transaction, and snapshots older than ``intraday_keep_days`` are pruned: the shape of
        today costs no extra call.

        Returns what was written, with every final day whose total the batch changed.
        """
        if list(frame.columns) != list(COLUMNS):
            raise ValueError(f"frame columns {list(frame.columns)} are not the AMD columns {list(COLUMNS)}")
        has_requests = requests is not None and not requests.empty
        has_answers = answers is not None and not answers.empty
        if frame.empty and not has_requests and not has_answers:
            return Written()
        written = Written(rows=len(frame))
        conn = self.connect()
        try:
            _ensure_schema(conn, table)
            conn.register("batch", self._tagged(frame))
            if has_requests:
                conn.register("attempts", self._tagged(requests))
            if has_answers:
                conn.register("answers", self._tagged(answers))
            with _transaction(conn):
                self._claim_timezone(conn, table)
                written.changes = [
                    (c, d, old, new)
                    for c, d, old, new in conn.execute(
                        f"SELECT t.campaign_id, t.local_date, t.total_amd, b.total_amd FROM {table.name} t "
                        "JOIN batch b ON t.operation = b.operation AND t.campaign_id = b.campaign_id "
                        "AND t.window_start = b.window_start "
                        "WHERE t.is_final AND t.total_amd <> b.total_amd ORDER BY ALL"
                    ).fetchall()
                ]
                conn.execute(
                    f"DELETE FROM {table.name} USING batch "
                    f"WHERE {table.name}.operation = batch.operation "
                    f"AND {table.name}.campaign_id = batch.campaign_id "
                    f"AND {table.name}.window_start = batch.window_start"
                )
                conn.execute(f"INSERT INTO {table.name} BY NAME SELECT * FROM batch")
                conn.execute(
                    "DELETE FROM amd_window_issues USING batch WHERE amd_window_issues.operation = batch.operation "
                    "AND amd_window_issues.campaign_id = batch.campaign_id "
                    "AND amd_window_issues.window_start = batch.window_start"
                )
                if has_requests:
                    conn.execute("INSERT INTO api_requests BY NAME SELECT * FROM attempts")
                if has_answers:
                    conn.execute("INSERT INTO api_answers BY NAME SELECT * FROM answers")
                _keep_snapshots(conn, self.intraday_keep_days, self.operation)
        finally:
            conn.close()
        return written

    def _tagged(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with this store's operation as its first column (frames come without it)."""
        return frame.assign(operation=self.operation)[["operation", *[c for c in frame.columns if c != "operation"]]]

    def record_campaigns(self, rows: list[dict], seen_at: dt.datetime) -> int:
        """Keep the operation's campaign list (``information.php?api=campaigns``) in table ``campaigns``.

        Listed campaigns are added or updated (``last_seen``); campaigns no longer listed are kept,
        with ``listed = false``, so their history still has a name. Returns how many are listed.
        """
        frame = pd.DataFrame(
            [
                {
                    "campaign_id": str(row.get("campaign_id") or "").strip(),
                    "campaign_name": row.get("campaign_name"),
                    "type_campaign": row.get("type_campaign"),
                    "status": row.get("status"),
                }
                for row in rows
                if str(row.get("campaign_id") or "").strip()
            ],
            columns=["campaign_id", "campaign_name", "type_campaign", "status"],
        ).drop_duplicates("campaign_id")
        conn = self.connect()
        try:
            _ensure_schema(conn)
            conn.register("listed_now", frame)
            with _transaction(conn):
                conn.execute(
                    "UPDATE campaigns SET listed = false WHERE operation = ? "
                    "AND campaign_id NOT IN (SELECT campaign_id FROM listed_now)",
                    [self.operation],
                )
                conn.execute(
                    "INSERT INTO campaigns SELECT ?, campaign_id, campaign_name, type_campaign, status, ?, ?, true "
                    "FROM listed_now ON CONFLICT (operation, campaign_id) DO UPDATE SET "
                    "campaign_name = excluded.campaign_name, type_campaign = excluded.type_campaign, "
                    "status = excluded.status, last_seen = excluded.last_seen, listed = true",
                    [self.operation, seen_at, seen_at],
                )
        finally:
            conn.close()
        return len(frame)

    def record_requests(self, requests: pd.DataFrame) -> None:
        """Append HTTP attempts made outside a load (pre-flight ``token_info``, campaign listings) to
        ``api_requests``, so the table counts every call the pipeline made, as the budget does."""
        if requests.empty:
            return
        conn = self.connect()
        try:
            _ensure_schema(conn)
            conn.register("attempts", self._tagged(requests))
            conn.execute("INSERT INTO api_requests BY NAME SELECT * FROM attempts")
        finally:
            conn.close()

    def answers_in_hand(self, backfill_id: str | None, windows: list) -> dict[dt.datetime, dict]:
        """For each of ``windows`` (:class:`~amd_pipeline.wolkvox.windows.Window`), the latest ``campaign_id=all``
        answer of backfill ``backfill_id`` that was fetched after the window ended, if any:
        ``{window.start: {"fetched_at", "empty", "rows"}}`` with the data rows as the server sent them.
        Read-only; nothing without a backfill id (a new backfill always fetches again)."""
        if not backfill_id or not windows or not self.path.exists():
            return {}
        self._upgrade()
        conn = self.connect(read_only=True)
        try:
            if not _has_table(conn, "api_answers"):
                return {}
            conn.register("wanted", pd.DataFrame({"epoch": sorted({int(w.start.timestamp()) for w in windows})}))
            found = conn.execute(
                "WITH latest AS (SELECT answer_id, epoch(window_start)::BIGINT AS epoch FROM api_answers a "
                "JOIN wanted w ON epoch(a.window_start)::BIGINT = w.epoch "
                "WHERE operation = ? AND backfill_id = ? AND api_campaign = 'all' AND fetched_at >= window_end "
                "QUALIFY row_number() OVER (PARTITION BY epoch(a.window_start) ORDER BY fetched_at DESC) = 1) "
                "SELECT l.epoch, a.fetched_at, a.empty, a.data_row FROM api_answers a "
                "JOIN latest l USING (answer_id) WHERE a.operation = ? ORDER BY l.epoch",
                [self.operation, backfill_id, self.operation],
            ).fetchall()
        finally:
            conn.close()
        answers: dict[dt.datetime, dict] = {}
        for epoch, fetched_at, empty, data_row in found:
            start = dt.datetime.fromtimestamp(epoch, dt.UTC)
            answer = answers.setdefault(
                start, {"fetched_at": fetched_at.astimezone(dt.UTC), "empty": bool(empty), "rows": []}
            )
            if data_row is not None:
                answer["rows"].append(json.loads(data_row))
        return answers

    def final_keys(self, table: TableSpec, keys: list[tuple[str, dt.datetime]]) -> set[tuple[str, dt.datetime]]:
        """Which of ``keys`` (campaign_id, window_start) already hold a final row (read-only)."""
        if not keys or not self.path.exists():
            return set()
        self._upgrade()
        conn = self.connect(read_only=True)
        try:
            if not _has_table(conn, table.name):
                return set()
            wanted = pd.DataFrame(
                {"campaign_id": [c for c, _ in keys], "epoch": [int(start.timestamp()) for _, start in keys]}
            )
            conn.register("wanted", wanted)
            found = conn.execute(
                f"SELECT t.campaign_id, epoch(t.window_start)::BIGINT FROM {table.name} t JOIN wanted w "
                "ON t.campaign_id = w.campaign_id AND epoch(t.window_start)::BIGINT = w.epoch "
                "WHERE t.operation = ? AND t.is_final",
                [self.operation],
            ).fetchall()
        finally:
            conn.close()
        return {(c, dt.datetime.fromtimestamp(e, dt.UTC)) for c, e in found}

    def prepare(self, table: TableSpec) -> None:
        """Create or update the schema and the views, record this store's zone and first day, or raise
        :class:`TimezoneMismatchError`: what a load does before its first call."""
        conn = self.connect()
        try:
            _ensure_schema(conn, table)
            with _transaction(conn):
                self._claim_timezone(conn, table)
                if self.start_date is not None:
                    conn.execute(
                        "INSERT INTO amd_operations VALUES (?, NULL, ?) "
                        "ON CONFLICT (operation) DO UPDATE SET start_date = excluded.start_date",
                        [self.operation, self.start_date],
                    )
                create_views(conn)
                conn.execute(
                    "DELETE FROM api_answers WHERE operation = ? "
                    f"AND fetched_at < now() - INTERVAL {ANSWERS_KEEP_DAYS} DAY",
                    [self.operation],
                )
        finally:
            conn.close()

    def record_issues(self, issues: list[tuple[str, dt.datetime, dt.date, str, str]]) -> None:
        """Windows a load could not write: ``(campaign_id, window_start, local_date, status, detail)``
        with status ``rejected`` (a value failed parsing) or ``deferred`` (the budget or quota ran out).

        A later write of the window removes its issue (in :meth:`replace`).
        """
        if not issues:
            return
        frame = pd.DataFrame(issues, columns=["campaign_id", "window_start", "local_date", "status", "detail"])
        frame["recorded_at"] = pd.Timestamp.now(tz="UTC")
        conn = self.connect()
        try:
            _ensure_schema(conn)
            conn.register("issues", self._tagged(frame))
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO amd_window_issues BY NAME SELECT * FROM issues ON CONFLICT DO UPDATE SET "
                    "status = excluded.status, detail = excluded.detail, recorded_at = excluded.recorded_at"
                )
        finally:
            conn.close()

    def _claim_timezone(self, conn: duckdb.DuckDBPyConnection, table: TableSpec) -> None:
        """Record this operation's zone, or raise :class:`TimezoneMismatchError` when its rows are in another
        (other operations' zones do not matter)."""
        if self.timezone is None:
            return
        stored = _operation_timezone(conn, self.operation)
        if stored is None and _days_in_other_zone(conn, table, self.timezone, self.operation):
            stored = "another time zone (the file does not say which)"
        if stored is not None and stored != self.timezone:
            raise TimezoneMismatchError(timezone_refusal(self.path, self.operation, stored, self.timezone))
        conn.execute(
            "INSERT INTO amd_operations VALUES (?, ?, NULL) "
            "ON CONFLICT (operation) DO UPDATE SET timezone = excluded.timezone",
            [self.operation, self.timezone],
        )

    def publish(
        self,
        target: str | Path,
        *,
        storage_version: str = DEFAULT_STORAGE_VERSION,
        parquet_dir: str | Path | None = None,
        operation: str | None = None,
    ) -> Published:
        """Publish a complete copy of this (working) file at ``target``, atomically, with the views.

        The copy is written in DuckDB's ``storage_version`` format (``v1.0.0``: every DuckDB from 1.0
        on opens it), whatever the format of the working file. With ``parquet_dir``, the tables and
        views are also exported there as Parquet (:func:`amd_pipeline.core.export.export_published`), before
        the DuckDB copy is renamed into place.

        The copy is built from a read-only snapshot beside ``target``, synced to disk and renamed over
        it: on Linux and macOS a reader that has ``target`` open keeps the state it opened (even a
        read-write one: the rename does not need its lock), the next connection sees the new state, and
        a crash at any moment leaves either the old file or the new one, never a half-written one.

        On Windows a program that holds ``target`` open makes the rename fail: after
        :data:`REPLACE_WAITS` it raises :class:`PublishHeldError` naming the program, with ``target``
        unchanged and the temporary copy removed (one left by a killed publish is removed by the next).

        With ``operation``, every table of the copy holds only that operation's rows (a BPO client's
        analysts see their own numbers only); without it, every operation's.

        Publishes of one ``target`` are serialised across processes by a lock file beside it
        (``.<name>.publish.lock``), held from the snapshot of the working file to the rename: two
        operations load into one working file at once, and an older snapshot renamed last would drop the
        other's latest batch from the published file.
        """
        started = time.perf_counter()
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._upgrade()  # a working file from before operations: migrated (a short write) before the snapshot
        with _publish_lock(target, self.lock_timeout):
            described = self._publish_locked(target, storage_version, parquet_dir, operation)
        return Published(
            seconds=time.perf_counter() - started, bytes=target.stat().st_size, **({"rows": 0} | described)
        )

    def _publish_locked(
        self, target: Path, storage_version: str, parquet_dir: str | Path | None, operation: str | None
    ) -> dict:
        _remove_stale_copies(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.unlink(missing_ok=True)
        conn = duckdb.connect()
        try:
            waited, delay = 0.0, 0.05
            while True:  # the working file may be held for a moment by another writer (the sensor)
                try:
                    conn.execute("ATTACH ? AS working (READ_ONLY)", [str(self.path)])
                    break
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower() or waited >= self.lock_timeout:
                        raise
                    self._sleep(delay)
                    waited, delay = waited + delay, min(delay * 2, 5.0)
            # Checked to be like v1.0.0 first: ATTACH takes no bound parameter for it.
            version = check_storage_version(storage_version)
            conn.execute(f"ATTACH ? AS published (STORAGE_VERSION '{version}')", [str(tmp)])
            # Tables as plain copies: readers need no key or index, and DuckDB 1.0 cannot read a
            # PRIMARY KEY that 2.0 writes even in the v1.0.0 format. Views are created anew below.
            tables = conn.execute(
                "SELECT table_name, list(column_name) FILTER (column_name = 'operation') <> [] "
                "FROM duckdb_columns() WHERE database_name = 'working' AND table_name IN "
                "(SELECT table_name FROM duckdb_tables() WHERE database_name = 'working') GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            for name, per_operation in tables:
                if operation is not None and per_operation:
                    conn.execute(
                        f'CREATE TABLE published."{name}" AS SELECT * FROM working."{name}" WHERE operation = ?',
                        [operation],
                    )
                else:  # amd_meta: no operation's rows
                    conn.execute(f'CREATE TABLE published."{name}" AS SELECT * FROM working."{name}"')
            conn.execute("DETACH working")
            conn.execute("USE published")
            # a working file from before snapshots (or per-operation zones) existed still gets the tables the views read
            conn.execute(f"CREATE TABLE IF NOT EXISTS amd_intraday ({INTRADAY_COLUMNS})")
            conn.execute(OPERATIONS_DDL.replace(" PRIMARY KEY", ""))
            create_views(conn)
            described = _describe(conn) if _has_table(conn, "amd_daily") else {}
            conn.execute("USE memory")
            conn.execute("DETACH published")
        except BaseException:
            conn.close()
            tmp.unlink(missing_ok=True)
            raise
        conn.close()
        try:
            sync_file(tmp)
            if parquet_dir is not None:  # from the new copy before it is renamed: no reader can hold it
                try:
                    export_published(tmp, Path(parquet_dir), "parquet")
                except FileHeldError as exc:  # a Parquet file open in Power BI: the DuckDB copy waits too
                    raise PublishHeldError(exc.path, exc.holders, exc.reason, working=self.path) from exc
            self._replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):  # if it cannot go now, the next publish removes it
                tmp.unlink(missing_ok=True)
            raise
        sync_folder(target.parent)
        return described

    def _replace(self, tmp: Path, target: Path) -> None:
        """Rename ``tmp`` over ``target``; while a program holds ``target`` (Windows), wait a little, then
        raise :class:`PublishHeldError`."""
        for wait in (*REPLACE_WAITS, None):
            try:
                os.replace(tmp, target)
                return
            except PermissionError as exc:
                if not held_open(exc):  # permissions (a read-only folder): waiting will not cure it
                    raise
                if wait is None:
                    raise PublishHeldError.of(target, exc, working=self.path) from exc
            self._sleep(wait)

    def stored_timezone(self) -> str | None:
        """The zone the file's days are in, when it records one."""
        if not self.path.exists():
            return None
        self._upgrade()
        conn = self.connect(read_only=True)
        try:
            return _operation_timezone(conn, self.operation) if _has_table(conn, "amd_operations") else None
        finally:
            conn.close()

    def _upgrade(self) -> None:
        """Migrate a file from before operations (:func:`_migrate`) with a short write connection, so a read
        that follows finds the columns it asks for. One read-only look per store when the file is current."""
        if self._current or not self.path.exists():
            return
        conn = self.connect(read_only=True)
        try:
            old = _needs_migration(conn)
        finally:
            conn.close()
        if old:
            conn = self.connect()
            try:
                _ensure_schema(conn)
            finally:
                conn.close()
        self._current = True

    def migrate_timezone(self, table: TableSpec, new: str, *, dry_run: bool = False) -> Migration:
        """Move the file's days to zone ``new``, in one transaction.

        A stored day whose window is the same span of instants in ``new`` (the zones agree that day,
        e.g. America/Bogota and America/Lima) is kept as it is; every other day's rows are deleted,
        since their totals cover another span, and the result lists those days for a backfill.
        """
        self._upgrade()
        conn = self.connect(read_only=dry_run)
        op = self.operation
        try:
            found = _operation_timezone(conn, op) if _has_table(conn, "amd_operations") else None
            days = _stored_days(conn, table, op)
            dropped = sorted({d for d, start, end in days if (w := day_window(d, new)).start != start or w.end != end})
            rows = 0
            if dropped:
                rows = conn.execute(
                    f"SELECT count(*) FROM {table.name} "
                    "WHERE operation = ? AND local_date IN (SELECT unnest(?::DATE[]))",
                    [op, dropped],
                ).fetchall()[0][0]
            if not dry_run:
                _ensure_schema(conn, table)
                with _transaction(conn):
                    if dropped:
                        for name in (table.name, "amd_intraday"):  # and the snapshots of a day whose window moves
                            conn.execute(
                                f"DELETE FROM {name} WHERE operation = ? AND local_date IN (SELECT unnest(?::DATE[]))",
                                [op, dropped],
                            )
                    conn.execute(
                        "INSERT INTO amd_operations VALUES (?, ?, NULL) "
                        "ON CONFLICT (operation) DO UPDATE SET timezone = excluded.timezone",
                        [op, new],
                    )
            kept = len({d for d, _, _ in days}) - len(dropped)
            return Migration(found, new, kept, dropped, rows)
        finally:
            conn.close()

    def query(
        self, sql: str, params: list | None = None, *, timezone: str | None = None, operation: str | None = None
    ) -> pd.DataFrame:
        """Run ``sql`` on a read-only connection and return a frame.

        With ``operation``, every table that has an ``operation`` column is seen through a temporary view
        of that operation's rows under the same name (DuckDB looks in ``temp`` first), so the SQL, and the
        file's views it reads, see that operation alone."""
        conn = self.connect(read_only=True)
        try:
            if timezone:
                conn.execute(f"SET TimeZone = '{ZoneInfo(timezone).key}'")  # ZoneInfo rejects anything but a zone name
            if operation is not None:
                only_operation(conn, operation)
            return conn.execute(sql, params or []).df()
        finally:
            conn.close()

    def operations(self) -> list[str]:
        """The operations the file holds: those with a zone recorded or a row (a file from before operations:
        the default one)."""
        if not self.path.exists():
            return []
        conn = self.connect(read_only=True)
        try:
            columns = _columns(conn)
            if "operation" not in columns.get("amd_daily", {"operation"}):
                return [DEFAULT_OPERATION]
            found = [f"SELECT operation FROM {name}" for name in ("amd_operations", "amd_daily") if name in columns]
            return sorted(o for (o,) in conn.execute(" UNION ".join(found)).fetchall()) if found else []
        finally:
            conn.close()


@contextlib.contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed when the body ends, rolled back when it raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _ensure_schema(conn: duckdb.DuckDBPyConnection, table: TableSpec = AMD_DAILY) -> None:
    """Create the tables; migrate a file from before operations (:func:`_migrate`)."""
    for ddl in (
        table.ddl,
        REQUESTS_DDL,
        ANSWERS_DDL,
        META_DDL,
        OPERATIONS_DDL,
        CAMPAIGNS_DDL,
        ISSUES_DDL,
        INTRADAY_DDL,
    ):
        conn.execute(ddl)
    if _needs_migration(conn, table):
        with _transaction(conn):
            _migrate(conn, table)


def _per_operation(table: TableSpec) -> dict[str, str]:
    """The tables whose rows are an operation's, and their DDL."""
    return {
        table.name: table.ddl,
        "campaigns": CAMPAIGNS_DDL,
        "amd_window_issues": ISSUES_DDL,
        "amd_intraday": INTRADAY_DDL,
        "api_requests": REQUESTS_DDL,
        "api_answers": ANSWERS_DDL,
    }


def _columns(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The columns of each table of the connection's own file."""
    found: dict[str, set[str]] = {}
    for name, column in conn.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database()"
    ).fetchall():
        found.setdefault(name, set()).add(column)
    return found


def _needs_migration(conn: duckdb.DuckDBPyConnection, table: TableSpec = AMD_DAILY) -> bool:
    """True for a file from before operations: a table without ``operation``, or a zone in ``amd_meta``."""
    columns = _columns(conn)
    if any(name in columns and "operation" not in columns[name] for name in _per_operation(table)):
        return True
    return "amd_meta" in columns and bool(
        conn.execute("SELECT count(*) FROM amd_meta WHERE key IN (?, ?)", [TIMEZONE_KEY, START_DATE_KEY]).fetchall()[0][
            0
        ]
    )


def _migrate(conn: duckdb.DuckDBPyConnection, table: TableSpec) -> None:
    """Make a file from before operations :data:`DEFAULT_OPERATION`'s, inside the caller's transaction.

    Every row of every per-operation table becomes the default operation's; DuckDB cannot alter a
    primary key, so each such table is rebuilt (create the new one, insert by name, drop, rename).
    A table from before ``is_final`` existed gets it, computed. ``amd_meta``'s zone and first day move to
    ``amd_operations``, and the views are made anew. Nothing else; a second run finds nothing to do.
    """
    columns = _columns(conn)
    for name, ddl in _per_operation(table).items():
        old = columns.get(name)
        if old is None or "operation" in old:
            continue
        extra = ", fetched_at >= window_end AS is_final" if name == table.name and "is_final" not in old else ""
        conn.execute(ddl.replace(f"EXISTS {name} (", f"EXISTS {name}__migrating (", 1))
        conn.execute(
            f"INSERT INTO {name}__migrating BY NAME SELECT ?::VARCHAR AS operation, *{extra} FROM {name}",
            [DEFAULT_OPERATION],
        )
        conn.execute(f"DROP TABLE {name}")
        conn.execute(f"ALTER TABLE {name}__migrating RENAME TO {name}")
    if "amd_meta" in columns:
        meta = dict(
            conn.execute(
                "SELECT key, value FROM amd_meta WHERE key IN (?, ?)", [TIMEZONE_KEY, START_DATE_KEY]
            ).fetchall()
        )
        if meta:
            conn.execute(
                "INSERT INTO amd_operations VALUES (?, ?, ?::DATE) ON CONFLICT (operation) DO NOTHING",
                [DEFAULT_OPERATION, meta.get(TIMEZONE_KEY), meta.get(START_DATE_KEY)],
            )
            conn.execute("DELETE FROM amd_meta WHERE key IN (?, ?)", [TIMEZONE_KEY, START_DATE_KEY])
    create_views(conn)  # the old ones read amd_meta's zone


def _operation_timezone(conn: duckdb.DuckDBPyConnection, operation: str) -> str | None:
    found = conn.execute("SELECT timezone FROM amd_operations WHERE operation = ?", [operation]).fetchall()
    return found[0][0] if found else None


def _keep_snapshots(conn: duckdb.DuckDBPyConnection, keep_days: int, operation: str) -> None:
    """Keep the batch's open days as snapshots (the table ``batch`` is registered), prune the operation's
    old ones."""
    conn.execute(
        "INSERT INTO amd_intraday SELECT operation, campaign_id, local_date, fetched_at, total_amd FROM batch "
        "WHERE NOT is_final ON CONFLICT DO UPDATE SET total_amd = excluded.total_amd"
    )
    conn.execute(
        "DELETE FROM amd_intraday WHERE operation = ? "
        "AND fetched_at < (SELECT max(fetched_at) FROM batch) - to_days(?)",
        [operation, keep_days],
    )


@contextlib.contextmanager
def _publish_lock(target: Path, timeout: float) -> Iterator[None]:
    """Hold ``.<target name>.publish.lock`` beside ``target``: one publish of it at a time, across processes."""
    lock = filelock.FileLock(str(target.with_name(f".{target.name}.publish.lock")), timeout=max(timeout, 300.0))
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise StoreLockedError(f"another publish of {target} has held its lock for over {lock.timeout:.0f} s") from exc
    try:
        yield
    finally:
        lock.release()


def _remove_stale_copies(target: Path) -> None:
    """Remove the temporary copies beside ``target`` (``.amd.duckdb.<pid>[.<thread>].tmp``) of publishes whose
    process has ended: killed mid-publish, or a copy a held file left that could not be removed then."""
    for copy in target.parent.glob(f".{target.name}.*.tmp"):
        pid = copy.name[len(target.name) + 2 : -len(".tmp")].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                copy.unlink()


def _describe(conn: duckdb.DuckDBPyConnection) -> dict:
    """What a published copy holds, for its materialisation's metadata."""
    rows, campaigns, operations, first_day, last_day = conn.execute(
        "SELECT count(*), count(DISTINCT (operation, campaign_id)), count(DISTINCT operation), "
        "min(local_date), max(local_date) FROM amd_daily"
    ).fetchall()[0]
    statuses = dict(conn.execute("SELECT status, count(*) FROM amd_completeness GROUP BY ALL").fetchall())
    daily = conn.execute(
        "SELECT local_date, sum(total_amd) AS total, bool_and(is_final) AS final FROM amd_daily "
        "WHERE local_date > (SELECT max(local_date) FROM amd_daily) - 30 GROUP BY ALL ORDER BY local_date"
    ).df()
    return {
        "rows": rows,
        "campaigns": campaigns,
        "operations": operations,
        "first_day": first_day,
        "last_day": last_day,
        "statuses": statuses,
        "daily": daily,
    }


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def _stored_days(conn: duckdb.DuckDBPyConnection, table: TableSpec, operation: str) -> list:
    """Distinct (local_date, window_start, window_end) of the operation's rows (UTC-aware datetimes)."""
    if not _has_table(conn, table.name):
        return []
    rows = conn.execute(
        f"SELECT DISTINCT local_date, epoch(window_start), epoch(window_end) FROM {table.name} WHERE operation = ?",
        [operation],
    ).fetchall()
    return [(d, dt.datetime.fromtimestamp(s, dt.UTC), dt.datetime.fromtimestamp(e, dt.UTC)) for d, s, e in rows]


def _days_in_other_zone(conn: duckdb.DuckDBPyConnection, table: TableSpec, timezone: str, operation: str) -> bool:
    """True when an operation that records no zone has a day whose window is not that day in ``timezone``."""
    return any(
        (w := day_window(d, timezone)).start != start or w.end != end
        for d, start, end in _stored_days(conn, table, operation)
    )
