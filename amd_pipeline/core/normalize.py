"""Raw campaign_6 answers -> a typed frame, one row per campaign and window. Pure pandas.

Every value Wolkvox sends is a string. ``total_amd`` is parsed strictly: digits only (surrounding
white space ignored). Anything else (``""``, ``null``, ``"1,234"``, ``"12.5"``, ``"-3"``, letters)
raises :class:`InvalidValueError` naming the campaign, window and raw value; it never becomes 0 or
NaN. A campaign the answer leaves out, or a "no rows" answer, is a real zero with
``fetch_status = 'fetched_empty'``. A row fetched before its window ended (today's) is partial:
``is_final`` is false until a fetch after the window's end replaces it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from amd_pipeline.core.errors import InvalidValueError
from amd_pipeline.wolkvox.models import Answer
from amd_pipeline.wolkvox.windows import Window

FETCHED = "fetched"
FETCHED_EMPTY = "fetched_empty"

# The column spec of every AMD table: name -> pandas dtype. The store's DDL mirrors it.
COLUMNS: dict[str, str] = {
    "campaign_id": "str",
    "window_start": "datetime64[us, UTC]",
    "window_end": "datetime64[us, UTC]",
    "local_date": "object",  # datetime.date values; DuckDB stores them as DATE
    "total_amd": "int64",
    "fetch_status": "str",
    "fetched_at": "datetime64[us, UTC]",
    "is_final": "bool",  # fetched after the window ended: the total can only change by restatement
}

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: "١٢" is not a count we accept


@dataclasses.dataclass(frozen=True)
class Fetched:
    """One answer and what it was asked for: the campaigns it must cover and the window."""

    campaign_ids: tuple[str, ...]
    window: Window
    answer: Answer


def parse_total(raw: Any, *, campaign_id: str, window: Window) -> int:
    """Parse ``total_amd`` strictly into a non-negative integer."""
    if isinstance(raw, bool) or raw is None:
        raise InvalidValueError(campaign_id, window, "total_amd", raw, "not a count")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _DIGITS.fullmatch(raw.strip()):
        value = int(raw.strip())
    else:
        raise InvalidValueError(campaign_id, window, "total_amd", raw, "not a whole non-negative number")
    if value < 0:
        raise InvalidValueError(campaign_id, window, "total_amd", raw, "negative")
    return value


def records_for(fetched: Fetched) -> tuple[list[dict[str, Any]], list[InvalidValueError]]:
    """The typed records of one answer (one per requested campaign), and what was rejected.

    Rows for campaigns that were not asked for (``campaign_id=all`` answers) are ignored. A bad
    ``total_amd`` or a campaign sent twice rejects that campaign only; a row without
    ``campaign_id`` cannot be attributed, so it rejects every campaign of the answer.
    """
    window, answer = fetched.window, fetched.answer
    wanted = set(fetched.campaign_ids)
    totals: dict[str, int] = {}
    rejected: dict[str, InvalidValueError] = {}
    for row in answer.rows:
        raw_id = row.get("campaign_id")
        campaign_id = str(raw_id).strip() if raw_id is not None else ""
        if not campaign_id:
            reason = "missing in a data row"
            return [], [InvalidValueError(c, window, "campaign_id", raw_id, reason) for c in fetched.campaign_ids]
        if campaign_id not in wanted or campaign_id in rejected:
            continue
        try:
            if campaign_id in totals:
                raise InvalidValueError(campaign_id, window, "campaign_id", raw_id, "appears twice in one answer")
            if "total_amd" not in row:
                raise InvalidValueError(campaign_id, window, "total_amd", None, "missing in the data row")
            totals[campaign_id] = parse_total(row["total_amd"], campaign_id=campaign_id, window=window)
        except InvalidValueError as exc:
            totals.pop(campaign_id, None)
            rejected[campaign_id] = exc
    records = [
        {
            "campaign_id": campaign_id,
            "window_start": window.start,
            "window_end": window.end,
            "local_date": window.local_date,
            "total_amd": totals.get(campaign_id, 0),
            "fetch_status": FETCHED if campaign_id in totals else FETCHED_EMPTY,
            "fetched_at": answer.received_at,
            "is_final": answer.received_at >= window.end,
        }
        for campaign_id in fetched.campaign_ids
        if campaign_id not in rejected
    ]
    return records, list(rejected.values())


def to_frame(records: Sequence[dict[str, Any]] | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records -> a frame with exactly :data:`COLUMNS`, in that order and with those dtypes."""
    frame = pd.DataFrame.from_records(list(records), columns=list(COLUMNS))
    for column in ("window_start", "window_end", "fetched_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype(COLUMNS[column])
    return frame.astype({"campaign_id": "str", "total_amd": "int64", "fetch_status": "str", "is_final": "bool"})


def normalize(items: Iterable[Fetched]) -> pd.DataFrame:
    """All answers -> one typed frame.

    Raises:
        InvalidValueError: the first rejected value (the loader collects them all instead).
    """
    records: list[dict[str, Any]] = []
    for item in items:
        good, rejects = records_for(item)
        if rejects:
            raise rejects[0]
        records.extend(good)
    return to_frame(records)
