"""The analyst views, defined in one place: named for what a row is. No dagster.

They read ``amd_daily``, ``amd_intraday``, ``campaigns``, ``amd_window_issues`` and ``amd_meta`` (``timezone``,
``start_date``), so "today" and "the last 8 weeks" are the operation's local days whatever the
reader's session time zone is.
"""

from __future__ import annotations

import duckdb

# today in the operation's zone, and the first day of the partition matrix (else the first stored day)
_TODAY = "timezone((SELECT value FROM amd_meta WHERE key = 'timezone'), now())::DATE"
_FIRST_DAY = (
    "coalesce((SELECT value FROM amd_meta WHERE key = 'start_date')::DATE, (SELECT min(local_date) FROM amd_daily))"
)

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
        SELECT d.campaign_id,
               c.campaign_name,
               d.local_date,
               d.total_amd,
               d.is_final,
               round(avg(d.total_amd) OVER (
                   PARTITION BY d.campaign_id ORDER BY d.local_date
                   RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW), 2) AS avg_7d,
               d.total_amd - w.total_amd AS vs_week_before
        FROM amd_daily d
        LEFT JOIN campaigns c ON c.campaign_id = d.campaign_id
        LEFT JOIN amd_daily w ON w.campaign_id = d.campaign_id AND w.local_date = d.local_date - 7
    """,
    # One row per campaign and day from the first day to today: fetched, zero, partial, rejected,
    # deferred, or missing (never fetched). Campaigns are those with a row or an issue.
    "amd_completeness": f"""
        WITH ids AS (
            SELECT campaign_id FROM amd_daily UNION SELECT campaign_id FROM amd_window_issues
        ), days AS (
            SELECT unnest(generate_series({_FIRST_DAY}, {_TODAY}, INTERVAL 1 DAY))::DATE AS local_date
        )
        SELECT ids.campaign_id,
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
        FROM ids CROSS JOIN days
        LEFT JOIN amd_daily a ON a.campaign_id = ids.campaign_id AND a.local_date = days.local_date
        LEFT JOIN amd_window_issues i ON i.campaign_id = ids.campaign_id AND i.local_date = days.local_date
    """,
    # One row per campaign and weekday: the mean total of its final days in the last 8 weeks.
    "amd_weekday_profile": f"""
        SELECT campaign_id,
               isodow(local_date) AS weekday_number,
               dayname(local_date) AS weekday,
               round(avg(total_amd), 2) AS avg_total_amd,
               count(*) AS days
        FROM amd_daily
        WHERE is_final AND local_date > {_TODAY} - 56
        GROUP BY ALL
    """,
    # One row per campaign and final day far from that campaign's usual for the weekday: its total
    # against the median and MAD of the same weekday's last 8 final days before it (at least 4).
    "amd_unusual_days": f"""
        WITH final AS (
            SELECT campaign_id, local_date, total_amd, isodow(local_date) AS weekday_number
            FROM amd_daily WHERE is_final
        ), scored AS (
            SELECT *,
                   median(total_amd) OVER w AS usual_total_amd,
                   mad(total_amd) OVER w AS mad,
                   count(*) OVER w AS history_days
            FROM final
            WINDOW w AS (PARTITION BY campaign_id, weekday_number ORDER BY local_date
                         ROWS BETWEEN {UNUSUAL_HISTORY} PRECEDING AND 1 PRECEDING)
        )
        SELECT campaign_id,
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
    # Today so far: the snapshots of today next to the usual cumulative at the same time of day, the
    # median over the same weekday's days of the last 8 weeks of each day's last snapshot at or before it.
    "amd_intraday_today": f"""
        WITH snapshots AS (
            SELECT campaign_id, local_date, fetched_at, total_amd,
                   timezone((SELECT value FROM amd_meta WHERE key = 'timezone'), fetched_at)::TIME AS time_of_day
            FROM amd_intraday
        ), today AS (
            SELECT * FROM snapshots WHERE local_date = {_TODAY}
        ), past AS (
            SELECT * FROM snapshots
            WHERE local_date < {_TODAY} AND local_date >= {_TODAY} - 56 AND isodow(local_date) = isodow({_TODAY})
        ), then_at AS (
            SELECT t.campaign_id, t.fetched_at, p.local_date, arg_max(p.total_amd, p.fetched_at) AS total_then
            FROM today t JOIN past p ON p.campaign_id = t.campaign_id AND p.time_of_day <= t.time_of_day
            GROUP BY ALL
        )
        SELECT t.campaign_id,
               t.local_date,
               t.fetched_at,
               t.time_of_day,
               t.total_amd,
               median(h.total_then) AS usual_total_amd,
               count(h.local_date) AS usual_days
        FROM today t
        LEFT JOIN then_at h ON h.campaign_id = t.campaign_id AND h.fetched_at = t.fetched_at
        GROUP BY ALL
    """,
}


def create_views(conn: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every analyst view on ``conn`` (its tables must exist)."""
    for name, sql in VIEWS.items():
        conn.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
