"""Partitions of the AMD assets: a dynamic ``campaign`` dimension x local days of the operation."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from amd_pipeline.core.plan import WindowRequest
from amd_pipeline.wolkvox.windows import day_window, parse_day_key

CAMPAIGN_DIMENSION = "campaign"
DAY_DIMENSION = "day"


def campaigns_partitions(name: str = CAMPAIGN_DIMENSION) -> dg.DynamicPartitionsDefinition:
    """An operation's campaigns, as dynamic partitions named ``name``.

    Dynamic partitions are instance-wide, so each operation has its own name (``campaign`` for the default
    operation, ``<id>__campaign`` for the others).
    """
    return dg.DynamicPartitionsDefinition(name=name)


def daily_partitions(
    start_date: dt.date, timezone: str, campaigns: str = CAMPAIGN_DIMENSION
) -> dg.MultiPartitionsDefinition:
    """Campaign (the dynamic partitions named ``campaigns``) x local day in ``timezone``.

    ``end_offset=1`` makes today (still open) a partition.
    """
    days = dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone=timezone, end_offset=1)
    return dg.MultiPartitionsDefinition({CAMPAIGN_DIMENSION: campaigns_partitions(campaigns), DAY_DIMENSION: days})


def day_key(campaign_id: str, day: dt.date) -> dg.MultiPartitionKey:
    """The ``campaign|day`` partition key of ``campaign_id`` on ``day``."""
    return dg.MultiPartitionKey({CAMPAIGN_DIMENSION: campaign_id, DAY_DIMENSION: day.isoformat()})


def window_request(key: str | dg.MultiPartitionKey, timezone: str) -> WindowRequest:
    """The ONE mapping from a ``campaign|day`` partition key to what the API is asked."""
    if not isinstance(key, dg.MultiPartitionKey):
        raise TypeError(f"expected a campaign|day partition key, got {key!r}")
    dims = key.keys_by_dimension
    return WindowRequest(dims[CAMPAIGN_DIMENSION], day_window(parse_day_key(dims[DAY_DIMENSION]), timezone))
