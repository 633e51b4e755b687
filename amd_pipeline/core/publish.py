"""The analysts' copy: a complete copy of the working file, published atomically beside the old one. No dagster.

The copy is built from a read-only snapshot of the working file, synced to disk and renamed over the
target (:func:`publish_copy`); publishes of one target are serialised across processes by a lock file beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import filelock
import pandas as pd

from amd_pipeline.core.errors import FileHeldError, PublishHeldError, StoreLockedError
from amd_pipeline.core.export import export_published
from amd_pipeline.core.portable import held_open, pid_alive, sync_file, sync_folder
from amd_pipeline.core.schema import INTRADAY_COLUMNS, OPERATIONS_DDL, has_table
from amd_pipeline.core.settings import check_storage_version
from amd_pipeline.core.views import create_views


@dataclasses.dataclass(frozen=True)
class Published:
    """One publish: how long it took, the file's size, and what the copy holds.

    The contents are read while the copy is built, so describing the dataset costs no second opening of the file.
    """

    rows: int
    seconds: float
    bytes: int
    campaigns: int = 0  # distinct (operation, campaign_id)
    operations: int = 0  # distinct operations with a row in amd_daily
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)  # campaign-days per completeness status
    daily: pd.DataFrame | None = None  # the last 30 days: local_date, total over campaigns, final


# Waits between tries to rename the new copy over a held published file: a virus scanner or indexer lets
# go within a second; a program with the file open does not, and the publish is left to the next one.
REPLACE_WAITS = (0.1, 0.25, 0.5)


def publish_copy(
    working: Path,
    target: Path,
    *,
    storage_version: str,
    parquet_dir: str | Path | None,
    operation: str | None,
    lock_timeout: float,
    sleep: Callable[[float], None],
    started: float,
) -> Published:
    """Publish the working file ``working`` at ``target`` under the publish lock.

    :meth:`~amd_pipeline.core.store.AmdStore.publish` says how and why; ``started`` is when the publish began
    (``time.perf_counter``).
    """
    with _publish_lock(target, lock_timeout):
        _remove_stale_copies(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.unlink(missing_ok=True)
        conn = duckdb.connect()
        try:
            _attach_working(conn, working, lock_timeout, sleep)
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
            described = _describe(conn) if has_table(conn, "amd_daily") else {}
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
                    raise PublishHeldError(exc.path, exc.holders, exc.reason, working=working) from exc
            _replace(tmp, target, working, sleep)
        except BaseException:
            with contextlib.suppress(OSError):  # if it cannot go now, the next publish removes it
                tmp.unlink(missing_ok=True)
            raise
        sync_folder(target.parent)
    return Published(seconds=time.perf_counter() - started, bytes=target.stat().st_size, **({"rows": 0} | described))


def _attach_working(
    conn: duckdb.DuckDBPyConnection, working: Path, lock_timeout: float, sleep: Callable[[float], None]
) -> None:
    """Attach ``working`` read-only, waiting while another writer (the sensor) holds it for a moment."""
    waited, delay = 0.0, 0.05
    while True:
        try:
            conn.execute("ATTACH ? AS working (READ_ONLY)", [str(working)])
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or waited >= lock_timeout:
                raise
            sleep(delay)
            waited, delay = waited + delay, min(delay * 2, 5.0)


def _replace(tmp: Path, target: Path, working: Path, sleep: Callable[[float], None]) -> None:
    """Rename ``tmp`` over ``target``.

    While a program holds ``target`` (Windows), wait a little, then raise :class:`PublishHeldError`.
    """
    for wait in (*REPLACE_WAITS, None):
        try:
            os.replace(tmp, target)
            return
        except PermissionError as exc:
            if not held_open(exc):  # permissions (a read-only folder): waiting will not cure it
                raise
            if wait is None:
                raise PublishHeldError.of(target, exc, working=working) from exc
        sleep(wait)


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
    """Remove the temporary copies beside ``target`` of publishes whose process has ended.

    The copies are ``.amd.duckdb.<pid>[.<thread>].tmp``: left by a publish killed midway, or by one whose held
    file kept its copy from being removed then.
    """
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
