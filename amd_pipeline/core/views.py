"""The analyst views, defined in one place: named for what a row is. No dagster.

They read ``amd_daily``, ``amd_intraday``, ``campaigns``, ``amd_window_issues`` and ``amd_operations``
(each operation's ``timezone`` and ``start_date``). Every view's first column is ``operation`` and
every window, join and group is per (operation, campaign): two operations' campaign ids may collide.
"Today" and "the last 8 weeks" are each operation's own local days, whatever the reader's session time
zone is.
"""

from __future__ import annotations

import duckdb


# today in operation ``alias``'s zone (``alias`` has an ``operation`` column)
def _today(alias: str) -> str:
    return f"timezone((SELECT o.timezone FROM amd_operations o WHERE o.operation = {alias}.operation), now())::DATE"


# The unusual-days rule (the view amd_unusual_days and the check amd_daily_unusual_days).
UNUSUAL_HISTORY = 8  # the same weekday's last 8 final days before the day
UNUSUAL_MIN_HISTORY = 4  # fewer than this: no verdict
UNUSUAL_THRESHOLD = 3.5  # robust z-score beyond which a day is unusual (Iglewicz and Hoaglin)
# The scale is 1.4826 x MAD (the standard deviation, for normal data), but at least 5% of the median and
# at least 1: eight near-equal days (MAD about 0) must not make an ordinary difference "unusual".
UNUSUAL_MIN_SHARE = 0.05
UNUSUAL_MIN_SCALE = 1.0
_SCALE = f"greatest(1.4826 * mad, {UNUSUAL_MIN_SHARE} * abs(usual_total_amd), {UNUSUAL_MIN_SCALE})"

VIEWS: dict[str, str] = {
    # One row per campaign and local day: the total, whether it is final, its 7-day mean (the day and
    # the 6 before it that have a row) and the change against the same weekday a week earlier.
    "amd_daily_trend": """
        SELECT d.operation,
               d.campaign_id,
               c.campaign_name,
               d.local_date,
               d.total_amd,
               d.is_final,
               round(avg(d.total_amd) OVER (
                   PARTITION BY d.operation, d.campaign_id ORDER BY d.local_date
                   RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW), 2) AS avg_7d,
               d.total_amd - w.total_amd AS vs_week_before
        FROM amd_daily d
        LEFT JOIN campaigns c ON c.operation = d.operation AND c.campaign_id = d.campaign_id
        LEFT JOIN amd_daily w ON w.operation = d.operation AND w.campaign_id = d.campaign_id
                             AND w.local_date = d.local_date - 7
    """,
    # One row per campaign and day from the operation's first day (its start date, else its first
    # stored day) to its today: fetched, zero, partial, rejected, deferred, or missing (never fetched).
    # Campaigns are those with a row or an issue.
    "amd_completeness": f"""
        WITH ids AS (
            SELECT operation, campaign_id FROM amd_daily UNION SELECT operation, campaign_id FROM amd_window_issues
        ), ops AS (
            SELECT DISTINCT operation FROM ids
        ), bounds AS (
            SELECT ops.operation,
                   coalesce((SELECT o.start_date FROM amd_operations o WHERE o.operation = ops.operation),
                            (SELECT min(d.local_date) FROM amd_daily d WHERE d.operation = ops.operation)) AS first_day,
                   {_today("ops")} AS today
            FROM ops
        ), days AS (
            SELECT operation, unnest(generate_series(first_day, today, INTERVAL 1 DAY))::DATE AS local_date
            FROM bounds
        )
        SELECT ids.operation,
               ids.campaign_id,
               days.local_date,
               CASE
                   WHEN a.campaign_id IS NOT NULL AND NOT a.is_final THEN 'partial'
                   WHEN a.campaign_id IS NOT NULL AND a.total_amd = 0 THEN 'zero'
                   WHEN a.campaign_id IS NOT NULL THEN 'fetched'
                   WHEN i.status IS NOT NULL THEN i.status
                   ELSE 'missing'
               END AS status,
               a.total_amd,
               a.fetched_at,
               i.detail
        FROM ids JOIN days ON days.operation = ids.operation
        LEFT JOIN amd_daily a ON a.operation = ids.operation AND a.campaign_id = ids.campaign_id
                             AND a.local_date = days.local_date
        LEFT JOIN amd_window_issues i ON i.operation = ids.operation AND i.campaign_id = ids.campaign_id
                                     AND i.local_date = days.local_date
    """,
    # One row per campaign and weekday: the mean total of its final days in the operation's last 8 weeks.
    "amd_weekday_profile": f"""
        SELECT d.operation,
               d.campaign_id,
               isodow(d.local_date) AS weekday_number,
               dayname(d.local_date) AS weekday,
               round(avg(d.total_amd), 2) AS avg_total_amd,
               count(*) AS days
        FROM amd_daily d
        WHERE d.is_final AND d.local_date > {_today("d")} - 56
        GROUP BY ALL
    """,
    # One row per campaign and final day far from that campaign's usual for the weekday: its total
    # against the median and MAD of the same weekday's last 8 final days before it (at least 4).
    "amd_unusual_days": f"""
        WITH final AS (
            SELECT operation, campaign_id, local_date, total_amd, isodow(local_date) AS weekday_number
            FROM amd_daily WHERE is_final
        ), scored AS (
            SELECT *,
                   median(total_amd) OVER w AS usual_total_amd,
                   mad(total_amd) OVER w AS mad,
                   count(*) OVER w AS history_days
            FROM final
            WINDOW w AS (PARTITION BY operation, campaign_id, weekday_number ORDER BY local_date
                         ROWS BETWEEN {UNUSUAL_HISTORY} PRECEDING AND 1 PRECEDING)
        )
        SELECT operation,
               campaign_id,
               local_date,
               dayname(local_date) AS weekday,
               total_amd,
               usual_total_amd,
               mad,
               history_days,
               round((total_amd - usual_total_amd) / {_SCALE}, 2) AS score,
               CASE WHEN total_amd > usual_total_amd THEN 'high' ELSE 'low' END AS direction
        FROM scored
        WHERE history_days >= {UNUSUAL_MIN_HISTORY}
          AND abs(total_amd - usual_total_amd) > {UNUSUAL_THRESHOLD} * {_SCALE}
    """,
    # Today so far: the snapshots of the operation's today next to the usual cumulative at the same time
    # of day, the median over the same weekday's days of the last 8 weeks of each day's last snapshot at or
    # before it.
    "amd_intraday_today": f"""
        WITH snapshots AS (
            SELECT s.operation, s.campaign_id, s.local_date, s.fetched_at, s.total_amd,
                   timezone((SELECT o.timezone FROM amd_operations o WHERE o.operation = s.operation),
                            s.fetched_at)::TIME AS time_of_day,
                   {_today("s")} AS op_today
            FROM amd_intraday s
        ), today AS (
            SELECT * FROM snapshots WHERE local_date = op_today
        ), past AS (
            SELECT * FROM snapshots
            WHERE local_date < op_today AND local_date >= op_today - 56 AND isodow(local_date) = isodow(op_today)
        ), then_at AS (
            SELECT t.operation, t.campaign_id, t.fetched_at, p.local_date,
                   arg_max(p.total_amd, p.fetched_at) AS total_then
            FROM today t JOIN past p ON p.operation = t.operation AND p.campaign_id = t.campaign_id
                                    AND p.time_of_day <= t.time_of_day
            GROUP BY ALL
        )
        SELECT t.operation,
               t.campaign_id,
               t.local_date,
               t.fetched_at,
               t.time_of_day,
               t.total_amd,
               median(h.total_then) AS usual_total_amd,
               count(h.local_date) AS usual_days
        FROM today t
        LEFT JOIN then_at h ON h.operation = t.operation AND h.campaign_id = t.campaign_id
                           AND h.fetched_at = t.fetched_at
        GROUP BY ALL
    """,
}


def create_views(conn: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every analyst view on ``conn`` (its tables must exist)."""
    for name, sql in VIEWS.items():
        conn.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def only_operation(conn: duckdb.DuckDBPyConnection, operation: str) -> None:
    """Make ``conn`` see ``operation``'s rows alone (``query``, ``report`` and ``export`` read through it).

    Each table of its file that has an ``operation`` column is shadowed by a temporary view of that operation's
    rows under the same name (DuckDB looks in ``temp`` first), so any SQL, and these views, read that operation only.
    """
    database = conn.execute("SELECT current_database()").fetchone()[0]
    literal = "'" + operation.replace("'", "''") + "'"  # a view takes no bound parameter
    tables = conn.execute(
        "SELECT DISTINCT table_name FROM duckdb_columns() WHERE database_name = ? AND column_name = 'operation'",
        [database],
    ).fetchall()
    for (table,) in tables:
        conn.execute(
            f'CREATE TEMP VIEW "{table}" AS SELECT * FROM "{database}".main."{table}" WHERE operation = {literal}'
        )
