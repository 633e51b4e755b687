"""The code location's Definitions, built from settings (lists only, no logic).

``amd_pipeline.definitions`` (the entry that workspace.yaml, ``[tool.dagster]`` and ``[tool.dg]`` name)
calls :func:`build_definitions` with the settings read from the environment at load time.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

from amd_pipeline.core.settings import DEFAULT_DUCKDB_PATH, DEFAULT_STORAGE_VERSION, INT_SETTINGS, DefinitionSettings
from amd_pipeline.orchestration.assets import AMD_PUBLISHED, build_amd_daily
from amd_pipeline.orchestration.checks import build_checks
from amd_pipeline.orchestration.partitions import daily_partitions
from amd_pipeline.orchestration.resources import AmdStoreResource, CampaignSource, WolkvoxResource
from amd_pipeline.orchestration.runs import ticks_per_day
from amd_pipeline.orchestration.schedules import Retention, build_cleanup, build_schedules
from amd_pipeline.orchestration.sensors import campaign_partitions_sensor

AMD_DAILY_JOB = "amd_daily_job"


def env_or(name: str, default):
    """``dg.EnvVar(name)`` when the variable is set (resolved at launch), else ``default``."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def env_int_or(name: str):
    """``dg.EnvVar.int(name)`` when the variable is set, else the setting's default."""
    return dg.EnvVar.int(name) if os.environ.get(name) else INT_SETTINGS[name][0]


def build_definitions(settings: DefinitionSettings) -> dg.Definitions:
    # Fresh means today was refreshed within three refresh intervals.
    interval = dt.timedelta(minutes=1440 / max(ticks_per_day(settings.refresh_cron, settings.timezone), 1))
    amd_daily = build_amd_daily(
        daily_partitions(settings.start_date, settings.timezone),
        settings.timezone,
        freshness=dg.FreshnessPolicy.time_window(fail_window=3 * interval),
    )
    job = dg.define_asset_job(AMD_DAILY_JOB, selection=[amd_daily])
    wolkvox = WolkvoxResource(
        # Unset, the token is "" and every use says so in one line (sensors skip) instead of failing
        # resource initialisation with a stack trace. Set, it is an EnvVar: never in the snapshot.
        token=env_or("WOLKVOX_TOKEN", ""),
        server=env_or("WOLKVOX_SERVER", ""),
        base_url=env_or("WOLKVOX_BASE_URL", ""),
        max_in_flight=env_int_or("WOLKVOX_MAX_IN_FLIGHT"),
        connect_timeout_seconds=env_int_or("WOLKVOX_CONNECT_TIMEOUT_SECONDS"),
        read_timeout_seconds=env_int_or("WOLKVOX_READ_TIMEOUT_SECONDS"),
        max_attempts=env_int_or("WOLKVOX_MAX_ATTEMPTS"),
        backoff_base_ms=env_int_or("WOLKVOX_BACKOFF_BASE_MS"),
        maintenance_delay_ms=env_int_or("WOLKVOX_MAINTENANCE_DELAY_MS"),
        lock_dir=env_or("AMD_LOCK_DIR", ""),
        token_lock_url=env_or("AMD_TOKEN_LOCK_URL", ""),  # may hold a password: an EnvVar when set
        campaign_all=env_or("WOLKVOX_CAMPAIGN_ALL", "auto"),
        daily_quota=env_int_or("WOLKVOX_DAILY_QUOTA"),
        quota_share=env_or("AMD_QUOTA_SHARE", "0.5"),
        timezone=settings.timezone,
    )
    cleanup_job, cleanup_schedule = build_cleanup(settings)
    return dg.Definitions(
        assets=[amd_daily, AMD_PUBLISHED],
        asset_checks=build_checks(amd_daily, settings),
        jobs=[job, cleanup_job],
        schedules=[*build_schedules(job, settings), cleanup_schedule],
        sensors=[campaign_partitions_sensor],
        resources={
            "wolkvox": wolkvox,
            "amd_store": AmdStoreResource(
                path=env_or("AMD_DUCKDB_PATH", DEFAULT_DUCKDB_PATH),
                working_path=env_or("AMD_WORKING_DUCKDB_PATH", ""),
                batch_size=env_int_or("AMD_BATCH_SIZE"),
                lock_timeout_seconds=env_int_or("AMD_DUCKDB_LOCK_TIMEOUT_SECONDS"),
                published_storage_version=env_or("AMD_PUBLISHED_STORAGE_VERSION", DEFAULT_STORAGE_VERSION),
                published_parquet=env_or("AMD_PUBLISHED_PARQUET", ""),
                intraday_keep_days=env_int_or("AMD_INTRADAY_KEEP_DAYS"),
            ),
            "campaign_source": CampaignSource(campaign_ids=env_or("AMD_CAMPAIGNS", "")),
            "retention": Retention(keep_days=env_int_or("AMD_KEEP_SCHEDULED_RUNS_DAYS")),
        },
        # Token-bound steps run in the run's own process: the multiprocess executor would hold the
        # pool slot for the 2-5 s it takes to start a step subprocess.
        executor=dg.in_process_executor,
    )
