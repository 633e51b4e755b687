"""Which campaigns to fetch: a configured list, or the operation's automatic campaigns. No dagster."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def discover_campaign_ids(rows: Iterable[Mapping[str, Any]], types: Iterable[str] = ("predictive",)) -> list[str]:
    """Campaign ids from ``information.php?api=campaigns`` whose ``type_campaign`` is in ``types``.

    AMD only runs in automatic campaigns; preview campaigns are left out by default.
    """
    wanted = {t.strip().lower() for t in types}
    found = []
    for row in rows:
        campaign_id = str(row.get("campaign_id") or "").strip()
        if campaign_id and str(row.get("type_campaign") or "").strip().lower() in wanted and campaign_id not in found:
            found.append(campaign_id)
    return found
