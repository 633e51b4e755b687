"""Exports of the published file for tools that do not speak DuckDB: Parquet or CSV. No dagster.

``amd_daily``, ``campaigns``, ``amd_intraday`` and every analyst view (:data:`amd_pipeline.core.views.VIEWS`)
are written into a staging folder inside the target, each file synced, then renamed into place one by
one: a reader sees every file whole, the previous one or the new one, never half of one. In Parquet the
tables that grow with the days are partitioned by month (``amd_daily/month=2026-11/data_0.parquet``,
Hive style, which pandas, polars, DuckDB and Spark read as one dataset with a ``month`` column);
the others are one file each. Timestamps are written in UTC.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from amd_pipeline.core.errors import FileHeldError
from amd_pipeline.core.portable import held_open, sync_file
from amd_pipeline.core.views import VIEWS, only_operation

FORMATS = ("parquet", "csv")
TABLES = ("amd_daily", "campaigns", "amd_intraday")
# Written per month in Parquet: they gain rows every day.
MONTHLY = frozenset({"amd_daily", "amd_intraday", "amd_daily_trend", "amd_completeness"})
STAGING_PREFIX = ".export-"


@dataclasses.dataclass(frozen=True)
class Exported:
    """What one export wrote: rows per table or view, the files, and how long it took."""

    rows: dict[str, int]
    files: int
    seconds: float


def exported_names(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables and views of :data:`TABLES` and :data:`VIEWS` that ``conn``'s file holds, in that order."""
    present = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    return [name for name in (*TABLES, *VIEWS) if name in present]


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_published(
    source: str | Path,
    out: str | Path,
    fmt: str,
    *,
    connect: Callable[[], duckdb.DuckDBPyConnection] | None = None,
    operation: str | None = None,
) -> Exported:
    """Write the tables and views of the DuckDB file ``source`` into folder ``out`` as ``fmt`` files.

    Args:
        source: a published file (opened read-only).
        out: the folder; created if missing. Files of an earlier export that this one does not write
            (a month that went away) are removed after the new files are in place.
        fmt: ``parquet`` or ``csv``.
        connect: opens ``source`` read-only (the CLI passes one that waits for a lock); default
            ``duckdb.connect(source, read_only=True)``.
        operation: only that operation's rows in every file (a BPO client's own numbers); default every
            operation's.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    rows: dict[str, int] = {}
    try:
        conn = connect() if connect is not None else duckdb.connect(str(source), read_only=True)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute("SET threads = 1")  # one file per month, named the same in every export
            if operation is not None:
                only_operation(conn, operation)
            for name in exported_names(conn):
                rows[name] = conn.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
                if fmt == "parquet" and name in MONTHLY:
                    conn.execute(
                        f"COPY (SELECT *, strftime(local_date, '%Y-%m') AS month FROM {name}) "
                        f"TO {_quoted(staging / name)} (FORMAT parquet, PARTITION_BY (month))"
                    )
                elif fmt == "parquet":
                    conn.execute(
                        f"COPY (SELECT * FROM {name}) TO {_quoted(staging / (name + '.parquet'))} (FORMAT parquet)"
                    )
                else:
                    conn.execute(
                        f"COPY (SELECT * FROM {name}) TO {_quoted(staging / (name + '.csv'))} (HEADER, DELIMITER ',')"
                    )
        finally:
            conn.close()
        written = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
        for relative in written:
            sync_file(staging / relative)
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staging / relative, out / relative)
            except PermissionError as exc:
                if not held_open(exc):
                    raise
                raise FileHeldError.of(out / relative, exc) from exc
        _remove_stale(out, set(written), [name for name in rows if fmt == "parquet" and name in MONTHLY])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(rows=rows, files=len(written), seconds=time.perf_counter() - started)


def _remove_stale(out: Path, written: set[Path], partitioned: list[str]) -> None:
    """Files under the partitioned tables' folders that this export did not write, and empty folders."""
    for name in partitioned:
        folder = out / name
        for path in sorted(folder.rglob("*"), reverse=True):
            relative = path.relative_to(out)
            if path.is_file() and relative not in written:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
