"""Plain values the client returns."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any


@dataclasses.dataclass(frozen=True)
class Answer:
    """One successful campaign_6 answer.

    Attributes:
        rows: the ``data`` rows as sent (every value a string), possibly empty.
        empty: True when the server said "no rows" (HTTP 404 envelope, or ``data`` empty/absent).
        received_at: when the answer arrived (UTC).
        attempts: HTTP attempts it took (1 = no retry).
    """

    rows: tuple[dict[str, Any], ...]
    empty: bool
    received_at: dt.datetime
    attempts: int = 1


@dataclasses.dataclass
class CallStats:
    """Counters of one client's HTTP traffic, for run metadata."""

    calls: int = 0
    retries: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)

    def median_latency(self) -> float | None:
        """The median latency in seconds (the upper one of an even count), or None before any call."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[len(ordered) // 2]
