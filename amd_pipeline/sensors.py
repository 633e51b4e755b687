"""Sensors: keep the campaign partitions in step with AMD_CAMPAIGNS or the operation's campaigns."""

import dagster as dg

from amd_pipeline.partitions import CAMPAIGN_DIMENSION, campaigns_partitions
from amd_pipeline.resources import CampaignSource, WolkvoxResource


def missing_campaigns(instance: dg.DagsterInstance, wanted: list[str]) -> list[str]:
    existing = set(instance.get_dynamic_partitions(CAMPAIGN_DIMENSION))
    return [c for c in wanted if c not in existing]


@dg.sensor(
    name="campaign_partitions",
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds campaign partitions from AMD_CAMPAIGNS, or discovers predictive campaigns (one API call).",
)
def campaign_partitions_sensor(
    context: dg.SensorEvaluationContext, wolkvox: WolkvoxResource, campaign_source: CampaignSource
) -> dg.SensorResult | dg.SkipReason:
    new = missing_campaigns(context.instance, campaign_source.resolve(wolkvox))
    if not new:
        return dg.SkipReason("no new campaigns")
    context.log.info(f"adding campaign partitions: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[campaigns_partitions.build_add_request(new)])
