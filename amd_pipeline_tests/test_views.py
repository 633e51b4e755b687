"""The analyst views on a small hand-made dataset; expected numbers are written out here, not re-computed in SQL."""

import base64
import datetime as dt
import html.parser
import io
import re
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from amd_pipeline.core.normalize import FETCHED, FETCHED_EMPTY, to_frame
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
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


class Tables(html.parser.HTMLParser):
    """Every ``<table>`` of a page, as rows of cell texts (the header row first)."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def coverage(png: bytes, colour: str) -> float:
    """The share of a PNG's pixels that are ``colour`` (``#rrggbb``, give or take 2 of 255 a channel)."""
    from matplotlib import image

    pixels = np.round(image.imread(io.BytesIO(png), format="png")[..., :3] * 255)
    wanted = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(pixels - wanted).max(axis=-1) <= 2).mean())


def test_the_report_is_one_html_page_with_its_charts_embedded_as_real_images(store, tmp_path):
    from matplotlib import image

    from amd_pipeline.core.report import STATUS_COLORS, write_report

    out = tmp_path / "report" / "amd_report.html"
    images = write_report(store, out, days=30, png_dir=tmp_path / "png")
    page = out.read_text()
    embedded = [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert list(images) == ["today", "trend", "weekday", "completeness"] and embedded == list(images.values())
    assert {p.name: p.read_bytes() for p in (tmp_path / "png").iterdir()} == {
        f"report_{name}.png": png for name, png in images.items()
    }
    for png in images.values():
        height, width, _ = image.imread(io.BytesIO(png), format="png").shape
        assert width > 600 and height > 200
    # Each chart shows the data in the colours the report gives it, over more of the image than a legend
    # swatch or a colour bar's end could: a blank canvas, or axes with the data left out, fail here.
    drawn = {
        ("trend", "#4a5568"): 0.02,  # the bars of campaign 1's 13 final days
        ("trend", "#f6ad55"): 0,  # and of today's partial one (5 AMD)
        ("trend", "#c53030"): 0.001,  # the 7-day mean, a line across the chart
        ("today", "#2b6cb0"): 0,  # today's snapshot of campaign 1
        ("weekday", "#440154"): 0.01,  # campaign 2's mean of 0: the scale's bottom
        ("weekday", "#fde725"): 0.01,  # campaign 1's highest weekday mean (95): its top
    }
    # Every status is some campaign's day here: a calendar cell each.
    drawn |= {("completeness", colour): 0.01 for colour in STATUS_COLORS.values()}
    for (chart, colour), least in drawn.items():
        found = coverage(images[chart], colour)
        assert found > least, f"{chart} chart: {found:.3%} of the pixels are {colour}, expected over {least:.1%}"
    assert "Unusual days" in page and "None in these days." in page
    assert "http" not in page.replace(str(store.path), "")  # nothing to fetch: it opens offline
    # The page's one table: per campaign, its days, their total, the partial ones and the span.
    assert Tables(page).tables == [
        [
            ["campaign_id", "days", "total_amd", "partial_days", "first_day", "last_day"],
            ["1", "14", "915", "1", str(day(0)), str(TODAY)],  # 10 + 20 + ... + 130, and today's 5
            ["2", "1", "0", "0", str(day(0)), str(day(0))],  # its final zero; rejected and deferred are no rows
        ]
    ]


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
