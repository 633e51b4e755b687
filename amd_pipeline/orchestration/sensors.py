"""Sensors: keep an operation's campaign partitions in step with its campaign list or discovery."""

from typing import TYPE_CHECKING

import dagster as dg

from amd_pipeline.core.errors import CALL_ERRORS, SettingsError, StoreLockedError
from amd_pipeline.core.messages import explain
from amd_pipeline.orchestration.partitions import campaigns_partitions

if TYPE_CHECKING:
    from amd_pipeline.orchestration.component import WolkvoxOperation


def missing_campaigns(instance: dg.DagsterInstance, partitions: str, wanted: list[str]) -> list[str]:
    """The ``wanted`` campaigns not yet in the instance's dynamic partitions ``partitions``, in order."""
    existing = set(instance.get_dynamic_partitions(partitions))
    return [c for c in wanted if c not in existing]


def build_campaign_sensor(op: "WolkvoxOperation") -> dg.SensorDefinition:
    """``campaign_partitions`` (``<id>__campaign_partitions``): adds the operation's campaign partitions."""
    listed = "the operation's campaigns (AMD_CAMPAIGNS)" if op.from_environment else "its campaigns in defs.yaml"

    @dg.sensor(
        name=op.name("campaign_partitions"),
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={op.wolkvox_key, op.campaign_source_key, "amd_store"},
        description=f"Adds campaign partitions from {listed}, or discovers predictive campaigns (one API call) "
        "and keeps the operation's campaign list in the DuckDB table `campaigns`.",
    )
    def campaign_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        wolkvox = getattr(context.resources, op.wolkvox_key)
        campaign_source = getattr(context.resources, op.campaign_source_key)
        try:
            store = context.resources.amd_store.store(operation=op.id)
            wanted = campaign_source.resolve(wolkvox, source="sensor", store=store)
        except SettingsError as exc:
            # A missing setting is not a failure of the sensor: say which one, once per tick, without a trace.
            return dg.SkipReason(f"cannot list campaigns: {exc}")
        except (*CALL_ERRORS, StoreLockedError) as exc:
            context.log.warning(explain(exc))
            return dg.SkipReason(f"cannot list campaigns: {explain(exc)}")
        new = missing_campaigns(context.instance, op.campaigns_name, wanted)
        if not new:
            return dg.SkipReason("no new campaigns")
        context.log.info(f"adding campaign partitions: {', '.join(new)}")
        return dg.SensorResult(
            dynamic_partitions_requests=[campaigns_partitions(op.campaigns_name).build_add_request(new)]
        )

    return campaign_partitions_sensor
