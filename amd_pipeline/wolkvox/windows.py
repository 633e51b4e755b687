"""Request windows: the ONE place that turns a local day into the vendor's date_ini/date_end.

A window is a half-open interval of instants ``[start, end)``, sent as ``date_ini = start`` and
``date_end = end - 1 s`` (Wolkvox's end is inclusive to the second), both as wall-clock times of the
operation's time zone. Adjacent windows share their boundary, so they never overlap or leave a gap, even on
days a DST change makes 23 or 25 hours long or starts at 01:00.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

VENDOR_FORMAT = "%Y%m%d%H%M%S"
ONE_SECOND = dt.timedelta(seconds=1)
UTC = dt.UTC


@dataclasses.dataclass(frozen=True)
class Window:
    """A half-open interval ``[start, end)`` of instants; ``start`` and ``end`` are UTC-aware."""

    start: dt.datetime
    end: dt.datetime
    tz: ZoneInfo
    local_date: dt.date

    @property
    def date_ini(self) -> str:
        """The vendor's inclusive start, wall clock of the operation."""
        return self.start.astimezone(self.tz).strftime(VENDOR_FORMAT)

    @property
    def date_end(self) -> str:
        """The vendor's inclusive end: one second before the next window starts."""
        return (self.end - ONE_SECOND).astimezone(self.tz).strftime(VENDOR_FORMAT)

    def __str__(self) -> str:
        return f"{self.local_date.isoformat()} ({self.date_ini}..{self.date_end} {self.tz.key})"


def local_day_start(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first instant (UTC) whose wall-clock date in ``tz`` is ``day``.

    Usually local midnight. When a DST change skips midnight (America/Santiago, America/Havana,
    ...), the day starts at the transition instant, found by bisection to the second.
    """
    naive = dt.datetime.combine(day, dt.time())
    guess = naive.replace(tzinfo=tz).astimezone(UTC)
    if guess.astimezone(tz).replace(tzinfo=None) == naive:
        # Midnight exists; in an ambiguous hour fold=0 is the earlier instant, which is right.
        return guess
    # Midnight falls in a gap: the day starts at the first instant whose local date is `day`.
    lo = guess - dt.timedelta(hours=4)  # local date < day here (no gap is 4 h long)
    hi = guess + dt.timedelta(hours=4)  # local date >= day here
    while hi - lo > ONE_SECOND:
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).date() >= day:
            hi = mid
        else:
            lo = mid
    return hi


def day_window(day: dt.date, tz: ZoneInfo | str) -> Window:
    """The window covering local ``day`` in ``tz``: ``[start of day, start of next day)``."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    start = local_day_start(day, zone)
    end = local_day_start(day + dt.timedelta(days=1), zone)
    return Window(start=start, end=end, tz=zone, local_date=day)


def parse_day_key(key: str) -> dt.date:
    """Parse a daily partition key (``YYYY-MM-DD``) into a date, with a clear error."""
    try:
        return dt.date.fromisoformat(key)
    except ValueError:
        raise ValueError(f"not a daily partition key (expected YYYY-MM-DD): {key!r}") from None
