"""The rows a benchmark loaded, checked against the simulator's ground truth (``truth_for_day``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb

from amd_pipeline.wolkvox.simulator import truth_for_day


def read_rows(path: Path, sql: str, params: Sequence = ()) -> list[tuple]:
    """The rows ``sql`` selects from the DuckDB file at ``path``, opened read-only as an analyst would."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(sql, list(params)).fetchall()
    finally:
        conn.close()


def verify(duckdb_path: Path, windows: int) -> str:
    """The DuckDB file's amd_daily against the simulator's ground truth, in one line."""
    rows = read_rows(duckdb_path, "SELECT campaign_id, local_date, total_amd FROM amd_daily")
    bad = sum(1 for c, d, n in rows if n != truth_for_day(c, d))
    if len(rows) != windows or bad:
        return f"MISMATCH ({len(rows)} rows for {windows} windows, {bad} differ from the ground truth)"
    return f"{len(rows)} rows = ground truth"


def verify_operations(
    duckdb_path: Path, ops: list[str], campaigns: list[str], days: list[dt.date], since: float
) -> str:
    """The rows rewritten since ``since`` in the one published file, per operation, against its simulator's truth."""
    rows = read_rows(
        duckdb_path,
        "SELECT operation, campaign_id, local_date, total_amd FROM amd_daily "
        "WHERE local_date BETWEEN ? AND ? AND fetched_at >= to_timestamp(?)",
        [days[0], days[-1], since],
    )
    parts = []
    for op in ops:
        own = [(c, d, n) for o, c, d, n in rows if o == op]
        bad = sum(1 for c, d, n in own if n != truth_for_day(c, d, op))
        expected = len(campaigns) * len(days)
        parts.append(
            f"{op} {len(own)}/{expected} rows"
            + (" = truth" if not bad and len(own) == expected else f", {bad} differ: MISMATCH")
        )
    return "; ".join(parts)


def check_totals(published: Path, today: dt.date) -> dict:
    """Every closed day's row of the published file against the ground truth; today's only as a bound."""
    if not published.exists():
        return {"rows": 0, "closed": 0, "mismatches": 0, "examples": [], "not_final": 0, "today_over": 0}
    rows = read_rows(published, "SELECT campaign_id, local_date, total_amd, is_final FROM amd_daily")
    closed = [r for r in rows if r[1] < today]
    bad = [(c, d, n, truth_for_day(c, d)) for c, d, n, _ in closed if n != truth_for_day(c, d)]
    return {
        "rows": len(rows),
        "closed": len(closed),
        "mismatches": len(bad),
        "examples": bad[:5],
        "not_final": sum(1 for r in closed if not r[3]),
        # A partial day can only be below (or at) the whole day's total.
        "today_over": sum(1 for c, d, n, _ in rows if d >= today and n > truth_for_day(c, d)),
        "keys": {(c, d) for c, d, _, _ in rows},
    }
