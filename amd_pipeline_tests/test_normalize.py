import datetime as dt

import pytest

from amd_pipeline.core.errors import InvalidValueError
from amd_pipeline.core.normalize import COLUMNS, FETCHED, FETCHED_EMPTY, Fetched, normalize, parse_total
from amd_pipeline.wolkvox.models import Answer
from amd_pipeline.wolkvox.windows import day_window

WINDOW = day_window(dt.date(2026, 11, 25), "America/Bogota")
AT = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def answer(*rows, empty=False) -> Answer:
    return Answer(rows=tuple(rows), empty=empty or not rows, received_at=AT)


@pytest.mark.parametrize(("raw", "value"), [("57", 57), (" 57 ", 57), ("0", 0), ("007", 7), (1534, 1534)])
def test_valid_totals_parse_to_integers(raw, value):
    assert parse_total(raw, campaign_id="20717", window=WINDOW) == value


@pytest.mark.parametrize("raw", ["", "   ", None, "null", "1,234", "12.5", "-3", "abc", "1e3", "١٢", True, -1, 3.0])
def test_invalid_totals_are_rejected_naming_campaign_window_and_raw_value(raw):
    with pytest.raises(InvalidValueError) as caught:
        parse_total(raw, campaign_id="20717", window=WINDOW)
    message = str(caught.value)
    assert "20717" in message and "2026-11-25" in message and repr(raw) in message


def test_a_frame_has_exactly_the_declared_columns_and_dtypes():
    frame = normalize([Fetched(("20717",), WINDOW, answer({"campaign_id": "20717", "total_amd": "57"}))])
    assert list(frame.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == COLUMNS
    row = frame.iloc[0]
    assert (row.campaign_id, row.total_amd, row.fetch_status, row.local_date) == (
        "20717",
        57,
        FETCHED,
        WINDOW.local_date,
    )
    assert row.window_start == WINDOW.start and row.window_end == WINDOW.end


def test_an_empty_answer_is_a_fetched_zero():
    frame = normalize([Fetched(("20717",), WINDOW, answer(empty=True))])
    assert frame.total_amd.tolist() == [0]
    assert frame.fetch_status.tolist() == [FETCHED_EMPTY]


def test_an_all_answer_covers_every_requested_campaign_and_ignores_others():
    rows = answer({"campaign_id": "1", "total_amd": "5"}, {"campaign_id": "9", "total_amd": "100"})
    frame = normalize([Fetched(("1", "2"), WINDOW, rows)])
    assert frame[["campaign_id", "total_amd", "fetch_status"]].values.tolist() == [
        ["1", 5, FETCHED],
        ["2", 0, FETCHED_EMPTY],
    ]


def test_a_campaign_twice_in_one_answer_is_rejected():
    rows = answer({"campaign_id": "1", "total_amd": "5"}, {"campaign_id": "1", "total_amd": "6"})
    with pytest.raises(InvalidValueError, match="twice"):
        normalize([Fetched(("1",), WINDOW, rows)])


def test_a_row_without_total_is_rejected_not_zero():
    with pytest.raises(InvalidValueError, match="total_amd"):
        normalize([Fetched(("1",), WINDOW, answer({"campaign_id": "1"}))])
