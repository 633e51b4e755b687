"""Each operation's time zone in the file (table ``amd_operations``), and moving an operation to another. No dagster.

A store given another zone than the one its operation's days are in refuses to write
(:class:`~amd_pipeline.core.errors.TimezoneMismatchError`, :func:`claim_timezone`) instead of adding a second
row for the same local day; :func:`move_to_timezone` moves an operation to a new zone. Two operations in two
zones in one file is normal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import duckdb

from amd_pipeline.core.errors import TimezoneMismatchError
from amd_pipeline.core.schema import TableSpec, ensure_schema, has_table, transaction
from amd_pipeline.core.settings import DEFAULT_OPERATION
from amd_pipeline.wolkvox.windows import day_window


def timezone_refusal(path: str | Path, operation: str, stored: str, wanted: str) -> str:
    """Why a file whose ``operation`` days are in ``stored`` takes no load in zone ``wanted``, and what to do.

    The store's :class:`TimezoneMismatchError` and the CLI's check before any call say it alike.
    """
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


def claim_timezone(
    conn: duckdb.DuckDBPyConnection, table: TableSpec, path: Path, operation: str, timezone: str | None
) -> None:
    """Record ``operation``'s zone, or raise :class:`TimezoneMismatchError` when its rows are in another.

    Other operations' zones do not matter. Runs inside the caller's transaction; does nothing without a zone.
    """
    if timezone is None:
        return
    stored = operation_timezone(conn, operation)
    if stored is None and days_in_other_zone(conn, table, timezone, operation):
        stored = "another time zone (the file does not say which)"
    if stored is not None and stored != timezone:
        raise TimezoneMismatchError(timezone_refusal(path, operation, stored, timezone))
    conn.execute(
        "INSERT INTO amd_operations VALUES (?, ?, NULL) "
        "ON CONFLICT (operation) DO UPDATE SET timezone = excluded.timezone",
        [operation, timezone],
    )


def move_to_timezone(
    conn: duckdb.DuckDBPyConnection, table: TableSpec, operation: str, new: str, *, dry_run: bool = False
) -> Migration:
    """Move ``operation``'s days to zone ``new``, in one transaction (:meth:`AmdStore.migrate_timezone`).

    A stored day whose window is the same span of instants in ``new`` (the zones agree that day,
    e.g. America/Bogota and America/Lima) is kept as it is; every other day's rows are deleted,
    since their totals cover another span, and the result lists those days for a backfill.
    """
    op = operation
    found = operation_timezone(conn, op) if has_table(conn, "amd_operations") else None
    days = stored_days(conn, table, op)
    dropped = sorted({d for d, start, end in days if (w := day_window(d, new)).start != start or w.end != end})
    rows = 0
    if dropped:
        rows = conn.execute(
            f"SELECT count(*) FROM {table.name} WHERE operation = ? AND local_date IN (SELECT unnest(?::DATE[]))",
            [op, dropped],
        ).fetchall()[0][0]
    if not dry_run:
        ensure_schema(conn, table)
        with transaction(conn):
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


def operation_timezone(conn: duckdb.DuckDBPyConnection, operation: str) -> str | None:
    """The zone ``amd_operations`` records for ``operation``, or None when it records none."""
    found = conn.execute("SELECT timezone FROM amd_operations WHERE operation = ?", [operation]).fetchall()
    return found[0][0] if found else None


def stored_days(conn: duckdb.DuckDBPyConnection, table: TableSpec, operation: str) -> list:
    """Distinct (local_date, window_start, window_end) of the operation's rows (UTC-aware datetimes)."""
    if not has_table(conn, table.name):
        return []
    rows = conn.execute(
        f"SELECT DISTINCT local_date, epoch(window_start), epoch(window_end) FROM {table.name} WHERE operation = ?",
        [operation],
    ).fetchall()
    return [(d, dt.datetime.fromtimestamp(s, dt.UTC), dt.datetime.fromtimestamp(e, dt.UTC)) for d, s, e in rows]


def days_in_other_zone(conn: duckdb.DuckDBPyConnection, table: TableSpec, timezone: str, operation: str) -> bool:
    """True when an operation that records no zone has a day whose window is not that day in ``timezone``."""
    return any(
        (w := day_window(d, timezone)).start != start or w.end != end
        for d, start, end in stored_days(conn, table, operation)
    )
