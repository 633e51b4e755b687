"""Which campaigns to fetch: a configured list, or the operation's automatic campaigns. No dagster."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_CAMPAIGN_ID = re.compile(r"^[0-9A-Za-z_-]{1,32}$")


def parse_campaign_list(text: str) -> list[str]:
    """``"101, 102,,103"`` -> ``["101", "102", "103"]`` (order kept, duplicates dropped)."""
    ids: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if not _CAMPAIGN_ID.match(part) or part.lower() == "all":
            raise ValueError(f"not a campaign id: {part!r} (AMD_CAMPAIGNS takes ids like 20717,20718)")
        if part not in ids:
            ids.append(part)
    return ids


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
