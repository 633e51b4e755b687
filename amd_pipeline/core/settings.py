"""Environment settings: their names, defaults, validation, and how they reach Dagster.

The time zone and start date shape the partitions, so they are read when the Definitions are built; the
rest reaches runs as ``dg.EnvVar`` (resolved at launch, never stored in the Definitions snapshot). No dagster
import: the loader and the CLI use these checks too. Every check raises :class:`SettingsError`, whose message
is the one line a person reads: what is wrong and how to fix it. The CLI runs :meth:`RunSettings.from_env`
before any call or file access (exit status 2); resources run the same checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.wolkvox.client import RetryPolicy, Timeouts

DEFAULT_TIMEZONE = "America/Bogota"
DEFAULT_OPERATION = (
    "default"  # the operation of the single-operation setup (environment variables), and of rows from before operations
)
DEFAULT_START_DATE = dt.date(2025, 1, 1)
DEFAULT_DUCKDB_PATH = str(Path("data", "amd.duckdb"))  # data\amd.duckdb on Windows
DEFAULT_REFRESH_CRON = "*/5 * * * *"
DEFAULT_RESTATE_CRON = "30 4 * * *"
DEFAULT_RESTATE_DAYS = 3
DEFAULT_CLEANUP_CRON = "40 3 * * *"  # daily, after the restatement
CAMPAIGN_ALL_MODES = ("auto", "on", "off")
PARTITION_EVENTS = "AMD_PARTITION_EVENTS"
# The published file's format: DuckDB 2.0 writes one that DuckDB 1.0, 1.4 LTS and 1.5 still open.
DEFAULT_STORAGE_VERSION = "v1.0.0"
_STORAGE_VERSION = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+")

_CAMPAIGN_ID = re.compile(r"[0-9]{1,12}")
_SERVER = re.compile(r"[0-9]{1,6}")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment setting, declared once: checks, resources' defaults and the docs test read it."""

    name: str
    default: str | int
    about: str
    low: int | None = None  # a whole number in low..high
    high: int | None = None
    secret: bool = False  # never in logs, metadata, run config or the Definitions snapshot: always a dg.EnvVar


def _declare(*settings: Setting) -> dict[str, Setting]:
    return {setting.name: setting for setting in settings}


_TIMEOUTS, _RETRIES = Timeouts(), RetryPolicy()  # the client's own defaults: the vendor layer declares them
SETTINGS: dict[str, Setting] = _declare(
    Setting("WOLKVOX_TOKEN", "", "the operation's wolkvox-token", secret=True),
    Setting("WOLKVOX_SERVER", "", "the server nomenclature, e.g. 0010 for wv0010.wolkvox.com"),
    Setting("WOLKVOX_BASE_URL", "", "an explicit base URL; wins over WOLKVOX_SERVER"),
    Setting("WOLKVOX_TIMEZONE", DEFAULT_TIMEZONE, "the operation's IANA zone: its days and its budget's midnight"),
    Setting("AMD_START_DATE", DEFAULT_START_DATE.isoformat(), "the first day of the partitions"),
    Setting("AMD_REFRESH_CRON", DEFAULT_REFRESH_CRON, "when today is refreshed, in the operation's zone"),
    Setting("AMD_RESTATE_CRON", DEFAULT_RESTATE_CRON, "when recent closed days are fetched again"),
    Setting("AMD_CLEANUP_CRON", DEFAULT_CLEANUP_CRON, "when old scheduled runs are pruned from the instance"),
    Setting("AMD_OPERATIONS_DIR", "", "a folder of operation folders (defs.yaml); empty: amd_pipeline/defs"),
    Setting("WOLKVOX_CAMPAIGN_ALL", "auto", "auto | on | off: one campaign_id=all call per window"),
    Setting("AMD_CAMPAIGNS", "", "comma-separated campaign ids; empty: discover predictive campaigns"),
    Setting("AMD_QUOTA_SHARE", "0.5", "the share of the token's daily quota this pipeline may spend"),
    Setting("WOLKVOX_MAX_IN_FLIGHT", 1, "requests in flight per token", 1, 2),
    Setting("WOLKVOX_CONNECT_TIMEOUT_SECONDS", int(_TIMEOUTS.connect), "seconds to wait for a connection", 1, 600),
    Setting("WOLKVOX_READ_TIMEOUT_SECONDS", int(_TIMEOUTS.read), "seconds to wait for an answer", 1, 600),
    Setting("WOLKVOX_MAX_ATTEMPTS", _RETRIES.max_attempts, "HTTP attempts per call before giving up", 1, 20),
    Setting("WOLKVOX_BACKOFF_BASE_MS", int(_RETRIES.base_delay * 1000), "the first retry's wait; doubles", 0, 600_000),
    Setting(
        "WOLKVOX_MAINTENANCE_DELAY_MS",
        int(_RETRIES.maintenance_delay * 1000),
        "the least wait after a maintenance 403",
        0,
        3_600_000,
    ),
    Setting("WOLKVOX_DAILY_QUOTA", 0, "calls a day (licenses x 1000); 0: ask token_info", 0, 10_000_000),
    Setting("AMD_BATCH_SIZE", 2500, "windows per write transaction", 1, 100_000),
    Setting("AMD_DUCKDB_LOCK_TIMEOUT_SECONDS", 120, "how long a write waits for a file another holds", 0, 86_400),
    Setting("AMD_RESTATE_DAYS", DEFAULT_RESTATE_DAYS, "closed days a restatement refetches", 1, 31),
    Setting("AMD_KEEP_SCHEDULED_RUNS_DAYS", 3, "days finished scheduled runs are kept", 0, 3650),
    Setting("AMD_INTRADAY_KEEP_DAYS", 63, "days of today's snapshots kept in amd_intraday", 1, 3650),
    Setting("AMD_DUCKDB_PATH", DEFAULT_DUCKDB_PATH, "the published file analysts read"),
    Setting("AMD_WORKING_DUCKDB_PATH", "", "the file loads write; empty: beside the published one"),
    Setting("AMD_PUBLISHED_STORAGE_VERSION", DEFAULT_STORAGE_VERSION, "the DuckDB format of the published file"),
    Setting("AMD_PUBLISHED_PARQUET", "", "1: also keep a Parquet copy beside the published file"),
    Setting("AMD_LOCK_DIR", "", "the folder of the token's lock files"),
    Setting("AMD_TOKEN_LOCK_URL", "", "PostgreSQL URL of a token lock shared by machines", secret=True),
    Setting(PARTITION_EVENTS, "during", "during | after: when a CLI run logs its partitions' events"),
)

# The numeric settings: name -> (default, smallest, largest allowed).
INT_SETTINGS: dict[str, tuple[int, int, int]] = {
    s.name: (int(s.default), s.low, s.high) for s in SETTINGS.values() if s.low is not None and s.high is not None
}


def default(name: str) -> str | int:
    """The declared default of the setting ``name``."""
    return SETTINGS[name].default


def about(name: str) -> str:
    """What the setting ``name`` is, with its variable's name: a resource field's description."""
    return f"{SETTINGS[name].about[0].upper()}{SETTINGS[name].about[1:]} ({name})."


def partition_events_setting(environ: Mapping[str, str] | None = None) -> str:
    """``AMD_PARTITION_EVENTS``: ``during`` (the default) or ``after`` (Dagster's own path, as for daemon runs)."""
    env = os.environ if environ is None else environ
    value = env.get(PARTITION_EVENTS, "").strip().lower() or str(default(PARTITION_EVENTS))
    if value not in ("during", "after"):
        raise SettingsError(f"{PARTITION_EVENTS}={value!r} is not during or after (unset: during)")
    return value


def check_timezone(name: str, setting: str = "WOLKVOX_TIMEZONE") -> str:
    """The IANA zone ``name`` as its ``ZoneInfo`` key, or a :class:`SettingsError` naming ``setting``."""
    try:
        return ZoneInfo(name).key
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{setting}={name!r} is not an IANA time zone: use the operation's zone, e.g. America/Bogota"
        ) from None


def check_campaign_id(text: str, source: str = "--campaign") -> str:
    """A campaign id exactly as Wolkvox writes it: plain ASCII digits, nothing around them."""
    if text.strip().lower() == "all":
        raise SettingsError(
            f"{source} {text!r} is not a campaign id: one call for every campaign is what "
            "WOLKVOX_CAMPAIGN_ALL=auto|on does; omit the campaign to load them all"
        )
    if not _CAMPAIGN_ID.fullmatch(text):
        raise SettingsError(f"{source} {text!r} is not a campaign id: Wolkvox campaign ids are digits, like 20717")
    return text


def parse_campaign_list(text: str, source: str = "AMD_CAMPAIGNS") -> list[str]:
    """``"101, 102,,103"`` -> ``["101", "102", "103"]`` (order kept, duplicates dropped)."""
    ids: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part and check_campaign_id(part, source) not in ids:
            ids.append(part)
    return ids


def check_campaign_all(text: str) -> str:
    """``WOLKVOX_CAMPAIGN_ALL`` lower-cased: ``auto`` (also when empty), ``on`` or ``off``."""
    mode = (text or str(default("WOLKVOX_CAMPAIGN_ALL"))).strip().lower()
    if mode not in CAMPAIGN_ALL_MODES:
        raise SettingsError(f"WOLKVOX_CAMPAIGN_ALL={text!r} is not one of auto, on, off")
    return mode


def base_url_for(server: str | None = None, base_url: str | None = None) -> str:
    """The API host: an explicit ``base_url``, or ``https://wv{server}.wolkvox.com``."""
    if base_url:
        base_url = base_url.strip()
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", base_url):
            raise SettingsError(
                f"WOLKVOX_BASE_URL={base_url!r} is not a URL like https://wv0010.wolkvox.com or http://127.0.0.1:8765"
            )
        return base_url.rstrip("/")
    if not server:
        raise SettingsError(
            "neither WOLKVOX_SERVER nor WOLKVOX_BASE_URL is set: set WOLKVOX_SERVER to the operation's server "
            "nomenclature (e.g. 0010)"
        )
    if not _SERVER.fullmatch(server):
        raise SettingsError(
            f"WOLKVOX_SERVER={server!r} is not a server nomenclature: use its digits, e.g. 0010 for wv0010.wolkvox.com"
        )
    return f"https://wv{server}.wolkvox.com"


def published_path(given: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The analysts' file: ``given`` (a ``--duckdb`` option), else ``AMD_DUCKDB_PATH``, else the default."""
    env = os.environ if environ is None else environ
    return given or env.get("AMD_DUCKDB_PATH") or str(default("AMD_DUCKDB_PATH"))


def working_path_for(published: str, configured: str | None = None) -> str:
    """The file loads write: ``configured`` (``AMD_WORKING_DUCKDB_PATH``), else beside the published one.

    ``data/amd.duckdb`` -> ``data/amd.working.duckdb``.
    """
    if configured:
        return configured
    path = Path(published)
    return str(path.with_name(f"{path.stem}.working{path.suffix or '.duckdb'}"))


def check_cron(text: str, setting: str) -> str:
    """A five-field cron expression (minute hour day month weekday), read in WOLKVOX_TIMEZONE."""
    text = " ".join(text.split())
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise SettingsError(f"{setting}={text!r} is not a cron expression with five fields, like */5 * * * *")
    return text


def check_share(text: str | None) -> float:
    """``AMD_QUOTA_SHARE``: the share of the token's daily quota this pipeline may spend, in (0, 1]."""
    raw = (text or "").strip() or str(default("AMD_QUOTA_SHARE"))
    try:
        share = float(raw)
    except ValueError:
        raise SettingsError(f"AMD_QUOTA_SHARE={text!r} is not a number: use a share like 0.5") from None
    if not 0 < share <= 1:
        raise SettingsError(f"AMD_QUOTA_SHARE={share:g} is out of range: use a share in (0, 1], like 0.5")
    return share


def check_storage_version(text: str | None) -> str:
    """``AMD_PUBLISHED_STORAGE_VERSION``: the DuckDB format of the published file, like ``v1.0.0``."""
    raw = (text or "").strip() or DEFAULT_STORAGE_VERSION
    if not _STORAGE_VERSION.fullmatch(raw):
        raise SettingsError(
            f"AMD_PUBLISHED_STORAGE_VERSION={text!r} is not a DuckDB storage version like v1.0.0 "
            "(the oldest DuckDB release that must open the published file)"
        )
    return raw


def check_flag(text: str | None, setting: str) -> bool:
    """A yes/no setting: ``1``/``true``/``yes`` or ``0``/``false``/``no`` (empty: no)."""
    raw = (text or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{setting}={text!r} is not a yes/no value: use 1 or 0")


@dataclasses.dataclass(frozen=True)
class PublishSettings:
    """How the analysts' copy is written: its DuckDB format, and whether a Parquet copy goes beside it."""

    storage_version: str = DEFAULT_STORAGE_VERSION
    parquet: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PublishSettings:
        """The publish settings from ``AMD_PUBLISHED_STORAGE_VERSION`` and ``AMD_PUBLISHED_PARQUET``, checked."""
        env = os.environ if environ is None else environ
        return cls(
            storage_version=check_storage_version(env.get("AMD_PUBLISHED_STORAGE_VERSION")),
            parquet=check_flag(env.get("AMD_PUBLISHED_PARQUET"), "AMD_PUBLISHED_PARQUET"),
        )


def parquet_dir_for(published: str | Path) -> Path:
    """Where the Parquet copy of the published file goes: ``data/amd.duckdb`` -> ``data/amd_parquet``."""
    path = Path(published)
    return path.with_name(f"{path.stem}_parquet")


def check_token(token: str | None, variable: str = "WOLKVOX_TOKEN") -> str:
    """The token, or a :class:`SettingsError` naming the variable it should come from."""
    if not token or not token.strip():
        raise SettingsError(f"{variable} is not set: export the operation's wolkvox-token as {variable}")
    return token


def int_setting(name: str, environ: Mapping[str, str] | None = None) -> int:
    """The value of a numeric setting (its default when unset), checked against its range."""
    env = os.environ if environ is None else environ
    default, low, high = INT_SETTINGS[name]
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number (default {default})") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range: use {low}..{high} (default {default})")
    return value


@dataclasses.dataclass(frozen=True)
class DefinitionSettings:
    """Settings that shape the Definitions (partitions, schedules)."""

    timezone: str = DEFAULT_TIMEZONE
    start_date: dt.date = DEFAULT_START_DATE
    refresh_cron: str = DEFAULT_REFRESH_CRON
    restate_cron: str = DEFAULT_RESTATE_CRON
    restate_days: int = DEFAULT_RESTATE_DAYS
    cleanup_cron: str = DEFAULT_CLEANUP_CRON

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DefinitionSettings:
        """The zone, start date, crons and restate days from the environment (defaults when unset), checked."""
        env = os.environ if environ is None else environ
        timezone = check_timezone(env.get("WOLKVOX_TIMEZONE") or DEFAULT_TIMEZONE)
        raw_start = env.get("AMD_START_DATE") or ""
        try:
            start = dt.date.fromisoformat(raw_start) if raw_start else DEFAULT_START_DATE
        except ValueError:
            raise SettingsError(f"AMD_START_DATE={raw_start!r} is not a date like 2025-01-01") from None
        return cls(
            timezone=timezone,
            start_date=start,
            refresh_cron=check_cron(env.get("AMD_REFRESH_CRON") or DEFAULT_REFRESH_CRON, "AMD_REFRESH_CRON"),
            restate_cron=check_cron(env.get("AMD_RESTATE_CRON") or DEFAULT_RESTATE_CRON, "AMD_RESTATE_CRON"),
            restate_days=int_setting("AMD_RESTATE_DAYS", env),
            cleanup_cron=check_cron(env.get("AMD_CLEANUP_CRON") or DEFAULT_CLEANUP_CRON, "AMD_CLEANUP_CRON"),
        )


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Every setting a load needs, checked. The CLI builds one before it calls or writes anything."""

    definition: DefinitionSettings
    base_url: str
    campaign_all: str
    campaigns: tuple[str, ...]
    numbers: Mapping[str, int]
    duckdb_path: str
    working_path: str
    quota_share: float
    publish: PublishSettings = PublishSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, operation_from_env: bool = True) -> RunSettings:
        """Check the environment; raises :class:`SettingsError` naming the first wrong setting.

        With ``operation_from_env`` false (an operation declared in a ``defs.yaml``), the operation's own
        settings (server, token, campaigns, quota) are not read here: the caller replaces them.
        """
        env = os.environ if environ is None else environ
        definition = DefinitionSettings.from_env(env)
        base_url = ""
        if operation_from_env:
            base_url = base_url_for((env.get("WOLKVOX_SERVER") or "").strip(), env.get("WOLKVOX_BASE_URL") or "")
            check_token(env.get("WOLKVOX_TOKEN"))
        return cls(
            definition=definition,
            base_url=base_url,
            campaign_all=check_campaign_all(env.get("WOLKVOX_CAMPAIGN_ALL") or ""),
            campaigns=tuple(parse_campaign_list(env.get("AMD_CAMPAIGNS") or "")),
            numbers={name: int_setting(name, env) for name in INT_SETTINGS},
            duckdb_path=published_path(None, env),
            working_path=working_path_for(published_path(None, env), env.get("AMD_WORKING_DUCKDB_PATH")),
            quota_share=check_share(env.get("AMD_QUOTA_SHARE")),
            publish=PublishSettings.from_env(env),
        )
