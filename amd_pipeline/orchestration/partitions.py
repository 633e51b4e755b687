"""Partitions of the AMD assets: a dynamic ``campaign`` dimension x local days of the operation."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from amd_pipeline.core.loader import WindowRequest
from amd_pipeline.wolkvox.windows import day_window, parse_day_key

CAMPAIGN_DIMENSION = "campaign"
DAY_DIMENSION = "day"
campaigns_partitions = dg.DynamicPartitionsDefinition(name=CAMPAIGN_DIMENSION)


def daily_partitions(start_date: dt.date, timezone: str) -> dg.MultiPartitionsDefinition:
    """Campaign x local day; ``end_offset=1`` makes today (still open) a partition."""
    days = dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone=timezone, end_offset=1)
    return dg.MultiPartitionsDefinition({CAMPAIGN_DIMENSION: campaigns_partitions, DAY_DIMENSION: days})


def day_key(campaign_id: str, day: dt.date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({CAMPAIGN_DIMENSION: campaign_id, DAY_DIMENSION: day.isoformat()})


def window_request(key: str | dg.MultiPartitionKey, timezone: str) -> WindowRequest:
    """The ONE mapping from a ``campaign|day`` partition key to what the API is asked."""
    if not isinstance(key, dg.MultiPartitionKey):
        raise TypeError(f"expected a campaign|day partition key, got {key!r}")
    dims = key.keys_by_dimension
    return WindowRequest(dims[CAMPAIGN_DIMENSION], day_window(parse_day_key(dims[DAY_DIMENSION]), timezone))
