"""The analyst views on a small hand-made dataset; expected numbers are written out here, not re-computed in SQL."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from amd_pipeline.core.normalize import FETCHED, FETCHED_EMPTY, to_frame
from amd_pipeline.core.store import AMD_DAILY, AmdStore
from amd_pipeline.wolkvox.windows import day_window
from amd_pipeline_tests.sample import daily_row, make_planted_store

BOGOTA = ZoneInfo("America/Bogota")
TODAY = dt.datetime.now(BOGOTA).date()
FIRST = TODAY - dt.timedelta(days=13)


def day(k: int) -> dt.date:
    return FIRST + dt.timedelta(days=k)


def row(campaign: str, k: int, total: int, final: bool = True) -> dict:
    window = day_window(day(k), BOGOTA)
    fetched_at = window.end + dt.timedelta(hours=1) if final else dt.datetime.now(dt.UTC)
    return {
        "campaign_id": campaign,
        "window_start": window.start,
        "window_end": window.end,
        "local_date": window.local_date,
        "total_amd": total,
        "fetch_status": FETCHED if total else FETCHED_EMPTY,
        "fetched_at": fetched_at,
        "is_final": fetched_at >= window.end,
    }


@pytest.fixture
def store(tmp_path):
    """Campaign 1: days 0..12 final with totals 10, 20, ..., 130 and today (day 13) partial with 5.
    Campaign 2: day 0 a final zero, day 1 rejected, day 2 deferred, nothing else."""
    store = AmdStore(tmp_path / "amd.duckdb", timezone="America/Bogota", start_date=FIRST)
    store.prepare(AMD_DAILY)
    rows = [row("1", k, 10 * (k + 1)) for k in range(13)] + [row("1", 13, 5, final=False), row("2", 0, 0)]
    store.replace(AMD_DAILY, to_frame(rows))
    store.record_issues(
        [
            ("2", day_window(day(1), BOGOTA).start, day(1), "rejected", "total_amd = '1,234'"),
            ("2", day_window(day(2), BOGOTA).start, day(2), "deferred", "daily call budget or quota"),
        ]
    )
    store.record_campaigns([{"campaign_id": "1", "campaign_name": "Cobranza", "type_campaign": "predictive"}], FIRST)
    return store


def test_the_trend_has_the_7_day_mean_and_the_change_against_a_week_before(store):
    trend = store.query("SELECT * FROM amd_daily_trend WHERE campaign_id = '1' ORDER BY local_date")
    assert len(trend) == 14 and set(trend.campaign_name) == {"Cobranza"}
    by_day = {r.local_date.date(): r for r in trend.itertuples()}
    assert by_day[day(0)].avg_7d == 10.0 and by_day[day(2)].avg_7d == 20.0  # fewer than 7 days so far
    assert by_day[day(12)].avg_7d == 100.0  # (70 + 80 + ... + 130) / 7
    assert by_day[day(13)].avg_7d == 90.71  # (80 + ... + 130 + 5) / 7, today partial
    assert trend.vs_week_before.isna().tolist() == [True] * 7 + [False] * 7  # no row a week before days 0..6
    assert by_day[day(7)].vs_week_before == 70  # 80 - 10
    assert by_day[day(13)].vs_week_before == -65  # 5 - 70
    assert trend.is_final.tolist() == [True] * 13 + [False]


def test_completeness_names_every_campaign_day_since_the_first(store):
    rows = store.query("SELECT campaign_id, local_date, status FROM amd_completeness ORDER BY ALL")
    assert len(rows) == 2 * 14  # two campaigns x day 0 .. today
    status = {(r.campaign_id, r.local_date.date()): r.status for r in rows.itertuples()}
    assert [status["1", day(k)] for k in range(14)] == ["fetched"] * 13 + ["partial"]
    assert [status["2", day(k)] for k in range(4)] == ["zero", "rejected", "deferred", "missing"]
    assert sum(1 for k in range(14) if status["2", day(k)] == "missing") == 11


def test_a_later_fetch_clears_the_windows_issue(store):
    store.replace(AMD_DAILY, to_frame([row("2", 1, 7)]))
    rows = store.query(f"SELECT status FROM amd_completeness WHERE campaign_id = '2' AND local_date = '{day(1)}'")
    assert rows.status.tolist() == ["fetched"]


def test_the_weekday_profile_averages_final_days_per_weekday(store):
    rows = store.query("SELECT * FROM amd_weekday_profile ORDER BY campaign_id, weekday_number")
    one = {r.weekday_number: (r.avg_total_amd, r.days) for r in rows.itertuples() if r.campaign_id == "1"}
    # days k and k + 7 share a weekday: (10(k+1) + 10(k+8)) / 2 for k = 0..5; day 6 is alone (70);
    # today's partial row is left out.
    expected = {day(0).isoweekday(): (45.0, 2), day(1).isoweekday(): (55.0, 2), day(2).isoweekday(): (65.0, 2)}
    expected |= {day(3).isoweekday(): (75.0, 2), day(4).isoweekday(): (85.0, 2), day(5).isoweekday(): (95.0, 2)}
    expected |= {day(6).isoweekday(): (70.0, 1)}
    assert one == expected
    two = [(r.weekday_number, r.avg_total_amd, r.days) for r in rows.itertuples() if r.campaign_id == "2"]
    assert two == [(day(0).isoweekday(), 0.0, 1)]


def test_the_views_use_the_operations_day_whatever_the_session_zone(store):
    for zone in ("UTC", "Asia/Tokyo", "America/Bogota"):
        rows = store.query("SELECT max(local_date) AS last FROM amd_completeness", timezone=zone)
        assert rows["last"][0].date() == TODAY


def test_the_report_is_one_html_page_with_its_charts_embedded_as_real_images(store, tmp_path):
    import base64
    import re

    from amd_pipeline.core.report import write_report

    out = tmp_path / "report" / "amd_report.html"
    images = write_report(store, out, days=30, png_dir=tmp_path / "png")
    page = out.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 4 == len(images)
    for data in embedded:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000  # a drawn chart, not an empty canvas
    assert "Unusual days" in page and "None in these days." in page
    assert "http" not in page.replace(str(store.path), "")  # nothing to fetch: it opens offline
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "report_completeness.png",
        "report_today.png",
        "report_trend.png",
        "report_weekday.png",
    ]
    assert "<td>1</td>" in page and "<td>2</td>" in page  # the per-campaign table is there


def at_local(d: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(hour, minute), BOGOTA)


def test_today_so_far_stands_next_to_the_median_of_the_same_weekday_at_the_same_time(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb", timezone="America/Bogota")
    store.prepare(AMD_DAILY)
    week = dt.timedelta(weeks=1)
    # 1, 2 and 3 weeks ago: 10/20/30 by 01:00 and 15/25/35 by 02:00; 4 weeks ago only a 03:00 snapshot
    # of 100; yesterday (another weekday) and 9 weeks ago (beyond 8) must not count.
    history = [(1, 1, 10), (1, 2, 15), (2, 1, 20), (2, 2, 25), (3, 1, 30), (3, 2, 35), (4, 3, 100), (9, 1, 999)]
    for weeks, hour, total in history:
        d = TODAY - weeks * week
        store.replace(AMD_DAILY, to_frame([daily_row("1", d, total, at_local(d, hour))]))
    yesterday = TODAY - dt.timedelta(days=1)
    store.replace(AMD_DAILY, to_frame([daily_row("1", yesterday, 999, at_local(yesterday, 1))]))
    for hour, total in ((1, 3), (2, 7), (3, 9)):
        store.replace(AMD_DAILY, to_frame([daily_row("1", TODAY, total, at_local(TODAY, hour, 30))]))
    rows = store.query(
        "SELECT time_of_day, total_amd, usual_total_amd, usual_days FROM amd_intraday_today ORDER BY time_of_day"
    )
    assert [(str(r.time_of_day), r.total_amd, r.usual_total_amd, r.usual_days) for r in rows.itertuples()] == [
        ("01:30:00", 3, 20.0, 3),
        ("02:30:00", 7, 25.0, 3),
        ("03:30:00", 9, 30.0, 4),  # 15, 25, 35 and 100
    ]


@pytest.fixture
def planted(tmp_path):
    return make_planted_store(tmp_path / "amd.duckdb")


def test_unusual_days_are_the_planted_ones_and_none_of_the_control_campaign(planted):
    store, first = planted
    rows = store.query("SELECT campaign_id, local_date, direction, history_days FROM amd_unusual_days ORDER BY ALL")
    found = [(r.campaign_id, r.local_date.date(), r.direction) for r in rows.itertuples()]
    assert found == [("1", first + dt.timedelta(days=60), "high"), ("1", first + dt.timedelta(days=62), "low")]
    assert set(rows.history_days) == {8}


def test_the_report_lists_the_unusual_days(planted, tmp_path):
    from amd_pipeline.core.report import write_report

    store, first = planted
    page_path = tmp_path / "report.html"
    write_report(store, page_path, days=30)
    page = page_path.read_text()
    table = page[page.index("<h2>Unusual days</h2>") :]
    assert f"<td>{first + dt.timedelta(days=60)}</td>" in table and f"<td>{first + dt.timedelta(days=62)}</td>" in table
    assert "None in these days." not in table
