import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amd_pipeline.wolkvox.windows import ONE_SECOND, day_window, parse_day_key

ZONES = [
    "America/Bogota",
    "America/Lima",
    "America/Santiago",  # DST, and midnight skipped on spring-forward days
    "America/Havana",  # same
    "America/New_York",
    "Europe/Madrid",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Asia/Kathmandu",  # +05:45
]


def test_a_bogota_day_is_sent_as_midnight_to_one_second_before_the_next_midnight():
    window = day_window(dt.date(2026, 11, 25), "America/Bogota")
    assert (window.date_ini, window.date_end) == ("20261125000000", "20261125235959")
    assert window.start == dt.datetime(2026, 11, 25, 5, tzinfo=dt.UTC)
    assert window.end == dt.datetime(2026, 11, 26, 5, tzinfo=dt.UTC)


def test_the_boundary_second_belongs_to_exactly_one_day():
    today = day_window(dt.date(2026, 11, 25), "America/Bogota")
    tomorrow = day_window(dt.date(2026, 11, 26), "America/Bogota")
    last_second = today.end - ONE_SECOND
    assert today.start <= last_second < today.end
    assert not (tomorrow.start <= last_second < tomorrow.end)
    assert tomorrow.start == today.end


def test_a_day_whose_midnight_does_not_exist_starts_at_the_transition():
    # Chile springs forward at 24:00 on 2026-09-05: 2026-09-06 starts at 01:00 and lasts 23 h.
    window = day_window(dt.date(2026, 9, 6), "America/Santiago")
    assert window.date_ini == "20260906010000"
    assert window.end - window.start == dt.timedelta(hours=23)
    previous = day_window(dt.date(2026, 9, 5), "America/Santiago")
    assert previous.date_end == "20260905235959"
    assert previous.end == window.start


@pytest.mark.parametrize(("day", "hours"), [(dt.date(2026, 3, 8), 23), (dt.date(2026, 11, 1), 25)])
def test_dst_days_in_new_york_are_23_and_25_hours(day, hours):
    window = day_window(day, "America/New_York")
    assert window.end - window.start == dt.timedelta(hours=hours)
    assert (window.date_ini[8:], window.date_end[8:]) == ("000000", "235959")


@settings(max_examples=400, deadline=None)
@given(zone=st.sampled_from(ZONES), day=st.dates(dt.date(2000, 1, 1), dt.date(2040, 12, 30)))
def test_adjacent_windows_never_overlap_or_leave_a_gap(zone, day):
    window = day_window(day, zone)
    following = day_window(day + dt.timedelta(days=1), zone)
    tz = ZoneInfo(zone)
    assert window.end == following.start
    assert window.start < window.end
    assert window.start.astimezone(tz).date() == day
    assert (window.end - ONE_SECOND).astimezone(tz).date() == day
    assert (window.start - ONE_SECOND).astimezone(tz).date() < day
    assert dt.timedelta(hours=22) <= window.end - window.start <= dt.timedelta(hours=26)
    assert window.date_ini.startswith(day.strftime("%Y%m%d"))
    assert window.date_end == (window.end - ONE_SECOND).astimezone(tz).strftime("%Y%m%d%H%M%S")


@pytest.mark.parametrize("zone", ["America/Bogota", "America/New_York", "Europe/Madrid"])
def test_windows_match_dagsters_daily_partitions(zone):
    days = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone=zone)
    for key in ["2026-03-08", "2026-03-29", "2026-10-25", "2026-11-01", "2026-11-25"]:
        expected = days.time_window_for_partition_key(key)
        window = day_window(parse_day_key(key), zone)
        assert window.start == expected.start
        assert window.end == expected.end


def test_a_bad_partition_key_is_named_in_the_error():
    with pytest.raises(ValueError, match="2026-13-01"):
        parse_day_key("2026-13-01")
