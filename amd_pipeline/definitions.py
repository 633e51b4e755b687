"""The one Definitions object of the code location (lists only, no logic)."""

from __future__ import annotations

import dagster as dg

from amd_pipeline.assets import build_amd_daily
from amd_pipeline.partitions import daily_partitions
from amd_pipeline.resources import AmdStoreResource, CampaignSource, WolkvoxResource
from amd_pipeline.sensors import campaign_partitions_sensor
from amd_pipeline.settings import DEFAULT_DUCKDB_PATH, DefinitionSettings, env_int_or, env_or

AMD_DAILY_JOB = "amd_daily_job"


def build_definitions(settings: DefinitionSettings) -> dg.Definitions:
    amd_daily = build_amd_daily(daily_partitions(settings.start_date, settings.timezone), settings.timezone)
    wolkvox = WolkvoxResource(
        token=dg.EnvVar("WOLKVOX_TOKEN"),
        server=env_or("WOLKVOX_SERVER", ""),
        base_url=env_or("WOLKVOX_BASE_URL", ""),
        max_in_flight=env_int_or("WOLKVOX_MAX_IN_FLIGHT", 1),
        connect_timeout_seconds=env_int_or("WOLKVOX_CONNECT_TIMEOUT_SECONDS", 10),
        read_timeout_seconds=env_int_or("WOLKVOX_READ_TIMEOUT_SECONDS", 75),
        max_attempts=env_int_or("WOLKVOX_MAX_ATTEMPTS", 6),
        backoff_base_ms=env_int_or("WOLKVOX_BACKOFF_BASE_MS", 1000),
        maintenance_delay_ms=env_int_or("WOLKVOX_MAINTENANCE_DELAY_MS", 30000),
        lock_dir=env_or("AMD_LOCK_DIR", ""),
        campaign_all=env_or("WOLKVOX_CAMPAIGN_ALL", "auto"),
        daily_quota=env_int_or("WOLKVOX_DAILY_QUOTA", 0),
    )
    return dg.Definitions(
        assets=[amd_daily],
        jobs=[dg.define_asset_job(AMD_DAILY_JOB, selection=[amd_daily])],
        sensors=[campaign_partitions_sensor],
        resources={
            "wolkvox": wolkvox,
            "amd_store": AmdStoreResource(
                path=env_or("AMD_DUCKDB_PATH", DEFAULT_DUCKDB_PATH), batch_size=env_int_or("AMD_BATCH_SIZE", 250)
            ),
            "campaign_source": CampaignSource(campaign_ids=env_or("AMD_CAMPAIGNS", "")),
        },
        # Token-bound steps run in the run's own process: the multiprocess executor would hold the
        # pool slot for the 2-5 s it takes to start a step subprocess.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(DefinitionSettings.from_env())
