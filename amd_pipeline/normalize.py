"""Raw campaign_6 answers -> a typed frame, one row per campaign and window. Pure pandas.

Every value Wolkvox sends is a string. ``total_amd`` is parsed strictly: digits only (surrounding
white space ignored). Anything else (``""``, ``null``, ``"1,234"``, ``"12.5"``, ``"-3"``, letters)
raises :class:`InvalidValueError` naming the campaign, window and raw value; it never becomes 0 or
NaN. A campaign the answer leaves out, or a "no rows" answer, is a real zero with
``fetch_status = 'fetched_empty'``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from amd_pipeline.windows import Window
from amd_pipeline.wolkvox.models import Answer

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
}

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: "١٢" is not a count we accept


class InvalidValueError(ValueError):
    """A value in an answer that cannot be trusted; names campaign, window and the raw value."""

    def __init__(self, campaign_id: str, window: Window, field: str, raw: Any, reason: str):
        self.campaign_id = campaign_id
        self.window = window
        self.field = field
        self.raw = raw
        super().__init__(f"campaign {campaign_id}, window {window}: {field} = {raw!r} rejected: {reason}")


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


def records_for(fetched: Fetched) -> list[dict[str, Any]]:
    """The typed records of one answer: one per requested campaign.

    Rows for campaigns that were not asked for (``campaign_id=all`` answers) are ignored.

    Raises:
        InvalidValueError: a bad ``total_amd``, a row without ``campaign_id``, or a campaign twice.
    """
    window, answer = fetched.window, fetched.answer
    wanted = set(fetched.campaign_ids)
    single = fetched.campaign_ids[0] if len(fetched.campaign_ids) == 1 else None
    totals: dict[str, int] = {}
    for row in answer.rows:
        raw_id = row.get("campaign_id")
        campaign_id = str(raw_id).strip() if raw_id is not None else ""
        if not campaign_id:
            raise InvalidValueError(single or "?", window, "campaign_id", raw_id, "missing in a data row")
        if campaign_id not in wanted:
            continue
        if campaign_id in totals:
            raise InvalidValueError(campaign_id, window, "campaign_id", raw_id, "appears twice in one answer")
        if "total_amd" not in row:
            raise InvalidValueError(campaign_id, window, "total_amd", None, "missing in the data row")
        totals[campaign_id] = parse_total(row["total_amd"], campaign_id=campaign_id, window=window)
    return [
        {
            "campaign_id": campaign_id,
            "window_start": window.start,
            "window_end": window.end,
            "local_date": window.local_date,
            "total_amd": totals.get(campaign_id, 0),
            "fetch_status": FETCHED if campaign_id in totals else FETCHED_EMPTY,
            "fetched_at": answer.received_at,
        }
        for campaign_id in fetched.campaign_ids
    ]


def to_frame(records: Sequence[dict[str, Any]] | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records -> a frame with exactly :data:`COLUMNS`, in that order and with those dtypes."""
    frame = pd.DataFrame.from_records(list(records), columns=list(COLUMNS))
    for column in ("window_start", "window_end", "fetched_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype(COLUMNS[column])
    return frame.astype({"campaign_id": "str", "total_amd": "int64", "fetch_status": "str"})


def normalize(items: Iterable[Fetched]) -> pd.DataFrame:
    """All answers -> one typed frame (raises on the first invalid value)."""
    return to_frame(record for item in items for record in records_for(item))
