"""The code location's Definitions: each operation's own, and what the operations share (lists, no logic).

``amd_pipeline.definitions`` (the entry that workspace.yaml, ``[tool.dagster]`` and ``[tool.dg]`` name)
calls :func:`build_location`: the operations are the ``defs.yaml`` folders under ``amd_pipeline/defs``
(or ``AMD_OPERATIONS_DIR``), each a :class:`~amd_pipeline.orchestration.component.WolkvoxOperation`,
or, when there is none, the one operation the environment variables describe. What they share is
built once: the analysts' store and its ``amd_published`` asset, the executor, the instance cleanup.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING

import dagster as dg

from amd_pipeline.core.settings import INT_SETTINGS, DefinitionSettings, default
from amd_pipeline.orchestration.assets import build_amd_daily, build_amd_published
from amd_pipeline.orchestration.cadence import ticks_per_day
from amd_pipeline.orchestration.checks import build_checks
from amd_pipeline.orchestration.partitions import daily_partitions
from amd_pipeline.orchestration.resources import AmdStoreResource, CampaignSource, WolkvoxResource
from amd_pipeline.orchestration.schedules import Retention, build_cleanup, build_schedules
from amd_pipeline.orchestration.sensors import build_campaign_sensor
from amd_pipeline.orchestration.tags import OPERATION_TAG

if TYPE_CHECKING:
    from amd_pipeline.orchestration.component import WolkvoxOperation

AMD_DAILY_JOB = "amd_daily_job"


# Resource field -> the setting it comes from. Every operation's WolkvoxResource shares the machine's (how this
# machine talks to any Wolkvox server, where the token's locks live); the environment's one operation also
# takes its own from variables; the one store takes the store's.
MACHINE_FIELDS = {
    "connect_timeout_seconds": "WOLKVOX_CONNECT_TIMEOUT_SECONDS",
    "read_timeout_seconds": "WOLKVOX_READ_TIMEOUT_SECONDS",
    "max_attempts": "WOLKVOX_MAX_ATTEMPTS",
    "backoff_base_ms": "WOLKVOX_BACKOFF_BASE_MS",
    "maintenance_delay_ms": "WOLKVOX_MAINTENANCE_DELAY_MS",
    "lock_dir": "AMD_LOCK_DIR",
    "token_lock_url": "AMD_TOKEN_LOCK_URL",
}
OPERATION_FIELDS = {
    "server": "WOLKVOX_SERVER",
    "base_url": "WOLKVOX_BASE_URL",
    "max_in_flight": "WOLKVOX_MAX_IN_FLIGHT",
    "campaign_all": "WOLKVOX_CAMPAIGN_ALL",
    "daily_quota": "WOLKVOX_DAILY_QUOTA",
    "quota_share": "AMD_QUOTA_SHARE",
}
STORE_FIELDS = {
    "path": "AMD_DUCKDB_PATH",
    "working_path": "AMD_WORKING_DUCKDB_PATH",
    "batch_size": "AMD_BATCH_SIZE",
    "lock_timeout_seconds": "AMD_DUCKDB_LOCK_TIMEOUT_SECONDS",
    "published_storage_version": "AMD_PUBLISHED_STORAGE_VERSION",
    "published_parquet": "AMD_PUBLISHED_PARQUET",
    "intraday_keep_days": "AMD_INTRADAY_KEEP_DAYS",
}


def is_set(name: str) -> bool:
    """Whether the variable ``name`` is set and not empty: the one place the Definitions look at the environment."""
    return bool(os.environ.get(name))


def env_or(name: str, value: object = None):
    """``dg.EnvVar(name)`` when the variable is set (resolved at launch), else ``value`` or the setting's default.

    A secret (the token, a URL with a password) therefore never enters the Definitions' snapshot.
    """
    if is_set(name):
        return dg.EnvVar.int(name) if name in INT_SETTINGS else dg.EnvVar(name)
    return default(name) if value is None else value


def fields_from_env(fields: dict[str, str]) -> dict:
    """Each resource field of ``fields`` from its setting (:func:`env_or`)."""
    return {field: env_or(setting) for field, setting in fields.items()}


def wolkvox_resource(op: WolkvoxOperation) -> WolkvoxResource:
    """The operation's API resource.

    The token is always an EnvVar when set (never in the snapshot); unset, it is "" and every use says which
    variable to set, in one line, instead of failing resource setup.
    """
    if op.from_environment:  # the single-operation setup: every setting stays a variable read at launch
        own = fields_from_env(OPERATION_FIELDS)
    else:
        own = {field: getattr(op, field) for field in OPERATION_FIELDS} | {"quota_share": str(op.quota_share)}
    return WolkvoxResource(
        token=env_or(op.token_env, ""),
        token_env=op.token_env,
        timezone=op.timezone,
        **own,
        **fields_from_env(MACHINE_FIELDS),
    )


def campaign_source(op: WolkvoxOperation) -> CampaignSource:
    """The operation's campaign list: ``AMD_CAMPAIGNS`` read at launch, or the operation's ``campaigns``."""
    if op.from_environment:
        return CampaignSource(campaign_ids=env_or("AMD_CAMPAIGNS"))
    return CampaignSource(campaign_ids=",".join(op.campaigns))


_stores: dict[tuple, AmdStoreResource] = {}


def shared_store() -> AmdStoreResource:
    """The one analysts' store every operation writes, as ONE object per setting of its variables.

    Each operation's Definitions carry it (a component builds on its own), and merging them keeps one, since
    Dagster refuses one resource key bound to two objects.
    """
    key = tuple(is_set(setting) for setting in STORE_FIELDS.values())
    if key not in _stores:
        _stores[key] = AmdStoreResource(**fields_from_env(STORE_FIELDS))
    return _stores[key]


def build_operation(op: WolkvoxOperation) -> dg.Definitions:
    """One operation's asset, checks, job, schedules, sensor and its own resources (keys named for it)."""
    # Fresh means today was refreshed within three refresh intervals.
    interval = dt.timedelta(minutes=1440 / max(ticks_per_day(op.refresh_cron, op.timezone), 1))
    amd_daily = build_amd_daily(
        op,
        daily_partitions(op.first_day, op.timezone, op.campaigns_name),
        freshness=dg.FreshnessPolicy.time_window(fail_window=3 * interval),
    )
    job = dg.define_asset_job(op.name(AMD_DAILY_JOB), selection=[amd_daily], tags={OPERATION_TAG: op.id})
    return dg.Definitions(
        assets=[amd_daily],
        asset_checks=build_checks(amd_daily, op),
        jobs=[job],
        schedules=build_schedules(job, op),
        sensors=[build_campaign_sensor(op)],
        resources={
            op.wolkvox_key: wolkvox_resource(op),
            op.campaign_source_key: campaign_source(op),
            "amd_store": shared_store(),
        },
    )


def build_shared(operations: list[WolkvoxOperation], settings: DefinitionSettings) -> dg.Definitions:
    """What every operation shares: the analysts' file (``amd_published``, ``amd_store``), executor and cleanup.

    The cleanup is the instance's (its job and schedule).
    """
    cleanup_job, cleanup_schedule = build_cleanup(settings)
    return dg.Definitions(
        assets=[build_amd_published(operations)],
        jobs=[cleanup_job],
        schedules=[cleanup_schedule],
        resources={
            "amd_store": shared_store(),
            "retention": Retention(keep_days=env_or("AMD_KEEP_SCHEDULED_RUNS_DAYS")),
        },
        # Token-bound steps run in the run's own process: the multiprocess executor would hold the
        # pool slot for the 2-5 s it takes to start a step subprocess.
        executor=dg.in_process_executor,
    )
