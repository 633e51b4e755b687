"""The daily call budget: every HTTP attempt of every process with one token, counted per vendor day. No dagster.

Wolkvox gives an operation ``licenses x 1000`` calls a day, shared with its other integrations; this pipeline may
spend ``AMD_QUOTA_SHARE`` of them. Each attempt is counted before it is made, in a JSON file beside the token's
lock files, under an exclusive file lock (``filelock``): check and increment are one step, so processes sharing
the folder never overspend between them, and the count survives restarts. With the instance in PostgreSQL the
ledger lives there (:class:`amd_pipeline.core.shared_state.PgCallLedger`). The day is the operation's local day
(the vendor does not say when its quota resets; local midnight is assumed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from filelock import FileLock

from amd_pipeline.wolkvox.errors import BudgetExhaustedError

SOURCES = ("backfill", "refresh", "restate", "ui", "sensor", "cli")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Calls per day this pipeline may make: ``floor(daily_quota x share)``; no limit while the quota is unknown."""

    daily_quota: int | None
    share: float

    @property
    def limit(self) -> int | None:
        """The calls allowed a day, or None while the daily quota is unknown."""
        return math.floor(self.daily_quota * self.share) if self.daily_quota else None


class CallLedger:
    """Today's calls per source, and the token's daily quota once learned, in one file.

    Args:
        path: the ledger file (``<lock dir>/<token key>.calls.json``); its ``.lock`` sibling is the lock.
        timezone: the operation's zone; the count restarts at its midnight.
        now: the wall clock (tests move it).
    """

    where = "a file on this machine (AMD_LOCK_DIR)"

    def __init__(self, path: Path, timezone: str, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self.path = Path(path)
        self.zone = ZoneInfo(timezone)
        self._now = now
        self._lock = FileLock(self.path.with_suffix(".lock"), mode=0o600)  # per thread: threads exclude each other

    def today(self) -> dt.date:
        """The operation's local date now: the day the ledger counts."""
        return self._now().astimezone(self.zone).date()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The ledger's lock: one process at a time reads, changes and writes the file back."""
        with self._lock.acquire(poll_interval=0.005):
            yield

    @contextlib.contextmanager
    def _locked(self, write: bool = False) -> Iterator[dict]:
        today = self.today().isoformat()
        fresh = {"day": today, "calls": {}, "token_limit": None, "from_answers": 0}
        if not write and not self.path.parent.is_dir():  # nothing counted yet; a read creates no folder
            yield fresh
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._exclusive():
            try:
                data = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                data = {}
            if data.get("day") != today:
                data = fresh
            yield data
            if write:
                tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, sort_keys=True))
                os.replace(tmp, self.path)

    def charge(self, source: str, limit: int | None) -> int:
        """Count one call for ``source``, or raise :class:`BudgetExhaustedError` (nothing counted)."""
        with self._locked(write=True) as data:
            used = sum(data["calls"].values())
            if limit is not None and used >= limit:
                raise BudgetExhaustedError(
                    f"daily call budget of {limit} reached ({used} used)", limit=limit, used=used, request=""
                )
            data["calls"][source] = data["calls"].get(source, 0) + 1
            return used + 1

    def usage(self) -> dict[str, int]:
        """Today's calls per source."""
        with self._locked() as data:
            return dict(data["calls"])

    def token_limit(self) -> int | None:
        """The token's daily quota as ``token_info`` said today, if it was asked."""
        with self._locked() as data:
            return data["token_limit"]

    def remember_token_limit(self, limit: int) -> None:
        """Store today's daily quota of the token, as ``token_info`` said it."""
        with self._locked(write=True) as data:
            data["token_limit"] = limit

    def note_from_answers(self, windows: int) -> None:
        """Count windows served from answers already in hand today (no call made for them)."""
        if windows:
            with self._locked(write=True) as data:
                data["from_answers"] = data.get("from_answers", 0) + windows

    def from_answers(self) -> int:
        """Windows served today from answers already in hand (no call made for them)."""
        with self._locked() as data:
            return data.get("from_answers", 0)
