"""Environment settings: their names, defaults, and how they reach Dagster.

The time zone and start date shape the partitions, so they are read when the Definitions are built.
Everything else reaches runs through resources as ``dg.EnvVar`` (resolved at launch, never stored
in the Definitions snapshot); an unset optional variable falls back to its default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

DEFAULT_TIMEZONE = "America/Bogota"
DEFAULT_START_DATE = dt.date(2025, 1, 1)
DEFAULT_DUCKDB_PATH = "data/amd.duckdb"


@dataclasses.dataclass(frozen=True)
class DefinitionSettings:
    """Settings that shape the Definitions (partitions)."""

    timezone: str = DEFAULT_TIMEZONE
    start_date: dt.date = DEFAULT_START_DATE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DefinitionSettings:
        env = os.environ if environ is None else environ
        timezone = env.get("WOLKVOX_TIMEZONE") or DEFAULT_TIMEZONE
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"WOLKVOX_TIMEZONE={timezone!r} is not an IANA time zone (e.g. America/Bogota)") from None
        raw_start = env.get("AMD_START_DATE") or ""
        try:
            start = dt.date.fromisoformat(raw_start) if raw_start else DEFAULT_START_DATE
        except ValueError:
            raise ValueError(f"AMD_START_DATE={raw_start!r} is not a date like 2025-01-01") from None
        return cls(timezone=timezone, start_date=start)


def env_or(name: str, default, environ: Mapping[str, str] | None = None):
    """``dg.EnvVar(name)`` when the variable is set (resolved at launch), else ``default``."""
    env = os.environ if environ is None else environ
    return dg.EnvVar(name) if env.get(name) else default


def env_int_or(name: str, default: int, environ: Mapping[str, str] | None = None):
    env = os.environ if environ is None else environ
    return dg.EnvVar.int(name) if env.get(name) else default
