"""Sensors: keep the campaign partitions in step with AMD_CAMPAIGNS or the operation's campaigns."""

import dagster as dg

from amd_pipeline.core.messages import explain
from amd_pipeline.core.settings import SettingsError
from amd_pipeline.core.store import StoreLockedError
from amd_pipeline.orchestration.partitions import CAMPAIGN_DIMENSION, campaigns_partitions
from amd_pipeline.orchestration.resources import AmdStoreResource, CampaignSource, WolkvoxResource
from amd_pipeline.wolkvox.errors import WolkvoxError


def missing_campaigns(instance: dg.DagsterInstance, wanted: list[str]) -> list[str]:
    existing = set(instance.get_dynamic_partitions(CAMPAIGN_DIMENSION))
    return [c for c in wanted if c not in existing]


@dg.sensor(
    name="campaign_partitions",
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds campaign partitions from AMD_CAMPAIGNS, or discovers predictive campaigns (one API call) "
    "and keeps the operation's campaign list in the DuckDB table `campaigns`.",
)
def campaign_partitions_sensor(
    context: dg.SensorEvaluationContext,
    wolkvox: WolkvoxResource,
    campaign_source: CampaignSource,
    amd_store: AmdStoreResource,
) -> dg.SensorResult | dg.SkipReason:
    try:
        wanted = campaign_source.resolve(wolkvox, source="sensor", store=amd_store.store())
    except SettingsError as exc:
        # A missing setting is not a failure of the sensor: say which one, once per tick, without a trace.
        return dg.SkipReason(f"cannot list campaigns: {exc}")
    except (WolkvoxError, StoreLockedError) as exc:
        context.log.warning(explain(exc))
        return dg.SkipReason(f"cannot list campaigns: {explain(exc)}")
    new = missing_campaigns(context.instance, wanted)
    if not new:
        return dg.SkipReason("no new campaigns")
    context.log.info(f"adding campaign partitions: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[campaigns_partitions.build_add_request(new)])
