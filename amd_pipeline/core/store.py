"""DuckDB storage: :class:`AmdStore`, the one object callers use. No dagster import.

A batch replaces its (campaign_id, window_start) keys in ONE transaction (delete, insert by name, commit): a
crash leaves the previous state, a rerun writes the same rows. The file is opened per batch, after the API
calls, and closed right after the write, so analysts can read between batches. One file serves several
operations (own server, token, zone, campaigns): ``operation`` leads every table and key, since campaign ids
can collide; a store reads and writes its own operation's rows, :meth:`AmdStore.query` reads all. Beside it:
the tables and migration (``schema.py``), zones (``timezones.py``), the analysts' copy (``publish.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from amd_pipeline.core.errors import StoreLockedError
from amd_pipeline.core.normalize import COLUMNS
from amd_pipeline.core.publish import Published, publish_copy
from amd_pipeline.core.schema import (
    ANSWERS_KEEP_DAYS,
    TableSpec,
    ensure_schema,
    has_table,
    needs_migration,
    table_columns,
    transaction,
)
from amd_pipeline.core.settings import (
    DEFAULT_OPERATION,
    DEFAULT_STORAGE_VERSION,
    INT_SETTINGS,
)
from amd_pipeline.core.timezones import Migration, claim_timezone, move_to_timezone, operation_timezone
from amd_pipeline.core.views import create_views, only_operation

DEFAULT_INTRADAY_KEEP_DAYS = INT_SETTINGS["AMD_INTRADAY_KEEP_DAYS"][0]


@dataclasses.dataclass
class Written:
    """What one write did: rows replaced, and final days whose total changed (restatements)."""

    rows: int = 0
    changes: list[tuple[str, dt.date, int, int]] = dataclasses.field(default_factory=list)


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
        """In one transaction, replace the frame's (campaign_id, window_start) rows; append requests and answers.

        ``requests`` are the HTTP attempts that fetched the rows (:data:`REQUEST_COLUMNS`), ``answers`` what the
        answers said (:data:`ANSWER_COLUMNS`).

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
            ensure_schema(conn, table)
            conn.register("batch", self._tagged(frame))
            if has_requests:
                conn.register("attempts", self._tagged(requests))
            if has_answers:
                conn.register("answers", self._tagged(answers))
            with transaction(conn):
                claim_timezone(conn, table, self.path, self.operation, self.timezone)
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
            ensure_schema(conn)
            conn.register("listed_now", frame)
            with transaction(conn):
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
        """Append HTTP attempts made outside a load to ``api_requests``.

        These are the pre-flight ``token_info`` and campaign listings, so the table counts every call the pipeline
        made, as the budget does.
        """
        if requests.empty:
            return
        conn = self.connect()
        try:
            ensure_schema(conn)
            conn.register("attempts", self._tagged(requests))
            conn.execute("INSERT INTO api_requests BY NAME SELECT * FROM attempts")
        finally:
            conn.close()

    def answers_in_hand(self, backfill_id: str | None, windows: list) -> dict[dt.datetime, dict]:
        """Per window, the latest ``campaign_id=all`` answer of backfill ``backfill_id`` fetched after it ended.

        ``windows`` are :class:`~amd_pipeline.wolkvox.windows.Window`; the result is
        ``{window.start: {"fetched_at", "empty", "rows"}}`` with the data rows as the server sent them, for the
        windows that have one. Read-only; nothing without a backfill id (a new backfill always fetches again).
        """
        if not backfill_id or not windows or not self.path.exists():
            return {}
        self._upgrade()
        conn = self.connect(read_only=True)
        try:
            if not has_table(conn, "api_answers"):
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
            if not has_table(conn, table.name):
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
        """Create or update the schema and views, and record this store's zone and first day.

        What a load does before its first call; raises :class:`TimezoneMismatchError` if the file's days are in
        another zone.
        """
        conn = self.connect()
        try:
            ensure_schema(conn, table)
            with transaction(conn):
                claim_timezone(conn, table, self.path, self.operation, self.timezone)
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
        """Record windows a load could not write in ``amd_window_issues``.

        Each is ``(campaign_id, window_start, local_date, status, detail)`` with status ``rejected`` (a value
        failed parsing) or ``deferred`` (the budget or quota ran out). A later write of the window removes its
        issue (in :meth:`replace`).
        """
        if not issues:
            return
        frame = pd.DataFrame(issues, columns=["campaign_id", "window_start", "local_date", "status", "detail"])
        frame["recorded_at"] = pd.Timestamp.now(tz="UTC")
        conn = self.connect()
        try:
            ensure_schema(conn)
            conn.register("issues", self._tagged(frame))
            with transaction(conn):
                conn.execute(
                    "INSERT INTO amd_window_issues BY NAME SELECT * FROM issues ON CONFLICT DO UPDATE SET "
                    "status = excluded.status, detail = excluded.detail, recorded_at = excluded.recorded_at"
                )
        finally:
            conn.close()

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

        On Windows a program that holds ``target`` open makes the rename fail: after the waits of
        :data:`~amd_pipeline.core.publish.REPLACE_WAITS` it raises :class:`PublishHeldError` naming the
        program, with ``target`` unchanged and the temporary copy removed (one left by a killed publish is
        removed by the next).

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
        return publish_copy(
            self.path,
            target,
            storage_version=storage_version,
            parquet_dir=parquet_dir,
            operation=operation,
            lock_timeout=self.lock_timeout,
            sleep=self._sleep,
            started=started,
        )

    def stored_timezone(self) -> str | None:
        """The zone the file's days are in, when it records one."""
        if not self.path.exists():
            return None
        self._upgrade()
        conn = self.connect(read_only=True)
        try:
            return operation_timezone(conn, self.operation) if has_table(conn, "amd_operations") else None
        finally:
            conn.close()

    def _upgrade(self) -> None:
        """Migrate a file from before operations (:func:`_migrate`) with a short write connection.

        A read that follows then finds the columns it asks for. One read-only look per store when the file is current.
        """
        if self._current or not self.path.exists():
            return
        conn = self.connect(read_only=True)
        try:
            old = needs_migration(conn)
        finally:
            conn.close()
        if old:
            conn = self.connect()
            try:
                ensure_schema(conn)
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
        try:
            return move_to_timezone(conn, table, self.operation, new, dry_run=dry_run)
        finally:
            conn.close()

    def query(
        self, sql: str, params: list | None = None, *, timezone: str | None = None, operation: str | None = None
    ) -> pd.DataFrame:
        """Run ``sql`` on a read-only connection and return a frame.

        With ``operation``, every table that has an ``operation`` column is seen through a temporary view
        of that operation's rows under the same name (DuckDB looks in ``temp`` first), so the SQL, and the
        file's views it reads, see that operation alone.
        """
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
        """The operations the file holds: those with a zone recorded or a row.

        A file from before operations holds the default one.
        """
        if not self.path.exists():
            return []
        conn = self.connect(read_only=True)
        try:
            columns = table_columns(conn)
            if "operation" not in columns.get("amd_daily", {"operation"}):
                return [DEFAULT_OPERATION]
            found = [f"SELECT operation FROM {name}" for name in ("amd_operations", "amd_daily") if name in columns]
            return sorted(o for (o,) in conn.execute(" UNION ".join(found)).fetchall()) if found else []
        finally:
            conn.close()


def _keep_snapshots(conn: duckdb.DuckDBPyConnection, keep_days: int, operation: str) -> None:
    """Keep the batch's open days as snapshots and prune the operation's old ones.

    The batch is the registered table ``batch``.
    """
    conn.execute(
        "INSERT INTO amd_intraday SELECT operation, campaign_id, local_date, fetched_at, total_amd FROM batch "
        "WHERE NOT is_final ON CONFLICT DO UPDATE SET total_amd = excluded.total_amd"
    )
    conn.execute(
        "DELETE FROM amd_intraday WHERE operation = ? "
        "AND fetched_at < (SELECT max(fetched_at) FROM batch) - to_days(?)",
        [operation, keep_days],
    )
