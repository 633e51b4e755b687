"""Schedules: keep today's numbers fresh within the daily call budget, and restate recent closed days.

Both launch ONE ranged run over every campaign partition (one ``campaign_id=all`` call per day where
the server takes it), tagged with their source so the budget ledger and the UI tell them apart, and
skip a tick with a reason while their previous run is still queued or running.
"""

import datetime as dt
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.plan import CampaignAll
from amd_pipeline.core.settings import DefinitionSettings, check_campaign_id
from amd_pipeline.orchestration.cadence import Cadence, calls_per_refresh, refresh_days, ticks_per_day
from amd_pipeline.orchestration.partitions import CAMPAIGN_DIMENSION
from amd_pipeline.orchestration.runs import ranged_runs
from amd_pipeline.orchestration.tags import OPERATION_TAG, SOURCE_TAG

if TYPE_CHECKING:
    from amd_pipeline.orchestration.component import WolkvoxOperation

REFRESH = "amd_daily_refresh"
RESTATE = "amd_daily_restate"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def valid_campaigns(instance: dg.DagsterInstance, partitions: str = CAMPAIGN_DIMENSION) -> tuple[list[str], list[str]]:
    """The campaign partitions named ``partitions``, in order, and those of them that are campaign ids (digits)."""
    existing = list(instance.get_dynamic_partitions(partitions))
    valid = []
    for campaign in existing:
        try:
            valid.append(check_campaign_id(campaign))
        except SettingsError:
            continue
    return existing, valid


def _runs_of(instance: dg.DagsterInstance, operation: str, source: str, statuses=None, limit: int = 1):
    """The operation's latest runs launched by ``source`` (its job tags every run with the operation)."""
    return instance.get_run_records(
        filters=dg.RunsFilter(tags={SOURCE_TAG: source, OPERATION_TAG: operation}, statuses=statuses or []),
        limit=limit,
    )


def _tick(context: dg.ScheduleEvaluationContext, op: "WolkvoxOperation", source: str, zone: ZoneInfo):
    """What both schedules check first: ``(campaign partitions, valid ones, local now)`` or a SkipReason."""
    active = _runs_of(context.instance, op.id, source, IN_PROGRESS)
    if active:
        run = active[0].dagster_run
        return dg.SkipReason(
            f"the previous {source} run {run.run_id[:8]} is still {run.status.value.lower()}: "
            "ticks do not pile up behind the token"
        )
    existing, valid = valid_campaigns(context.instance, op.campaigns_name)
    if not valid:
        return dg.SkipReason(f"no campaign partitions yet: the {op.name('campaign_partitions')} sensor adds them")
    return existing, valid, (context.scheduled_execution_time or dt.datetime.now(dt.UTC)).astimezone(zone)


def _requests(existing, valid, first: dt.date, last: dt.date, source: str, tick: str):
    runs = ranged_runs(existing, valid, first, last)
    return [
        dg.RunRequest(run_key=f"{source}:{tick}:{i}" if len(runs) > 1 else None, tags={**r.tags(), SOURCE_TAG: source})
        for i, r in enumerate(runs)
    ]


def build_schedules(job, op: "WolkvoxOperation") -> list[dg.ScheduleDefinition]:
    """``amd_daily_refresh`` and ``amd_daily_restate`` for ``job``, in the operation's time zone.

    Their names are prefixed for an operation other than the default one.
    """
    settings = op.definition_settings()
    zone = ZoneInfo(settings.timezone)
    start_setting = "AMD_START_DATE" if op.from_environment else "start_date"

    @dg.schedule(
        name=op.name(REFRESH),
        job=job,
        cron_schedule=settings.refresh_cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        required_resource_keys={op.wolkvox_key},
        description="Re-fetches today (and yesterday, on the first tick after midnight) for every campaign, "
        f"at {settings.refresh_cron} ({settings.timezone}), spaced to stay within the daily call budget.",
    )
    def refresh(context: dg.ScheduleEvaluationContext):
        wolkvox = getattr(context.resources, op.wolkvox_key)
        started = _tick(context, op, "refresh", zone)
        if isinstance(started, dg.SkipReason):
            return started
        existing, valid, now = started
        today = now.date()
        if today < settings.start_date:
            return dg.SkipReason(f"today ({today}) is before {start_setting}={settings.start_date}")
        try:
            use_all = wolkvox.campaign_all_mode() != CampaignAll.OFF
            limit = wolkvox.budget().limit
        except SettingsError as exc:
            return dg.SkipReason(f"cannot refresh: {exc}")
        cadence = Cadence(
            calls_per_refresh(len(valid), use_all), ticks_per_day(settings.refresh_cron, settings.timezone), limit
        )
        last = _runs_of(context.instance, op.id, "refresh")
        spacing = cadence.min_interval_minutes
        if (
            spacing
            and last
            and now - last[0].create_timestamp < dt.timedelta(minutes=spacing) - dt.timedelta(seconds=30)
        ):
            return dg.SkipReason(cadence.describe())
        done = _runs_of(context.instance, op.id, "refresh", [dg.DagsterRunStatus.SUCCESS])
        first = refresh_days(today, settings.start_date, done[0].create_timestamp if done else None, settings.timezone)
        return _requests(existing, valid, first, today, "refresh", now.isoformat())

    @dg.schedule(
        name=op.name(RESTATE),
        job=job,
        cron_schedule=settings.restate_cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        required_resource_keys={op.wolkvox_key},
        description=f"Re-fetches the last {settings.restate_days} closed days for every campaign at "
        f"{settings.restate_cron} ({settings.timezone}): the vendor's counts can change after the fact.",
    )
    def restate(context: dg.ScheduleEvaluationContext):
        started = _tick(context, op, "restate", zone)
        if isinstance(started, dg.SkipReason):
            return started
        try:
            getattr(context.resources, op.wolkvox_key).check()
        except SettingsError as exc:
            return dg.SkipReason(f"cannot restate: {exc}")
        existing, valid, now = started
        last = now.date() - dt.timedelta(days=1)
        first = max(last - dt.timedelta(days=settings.restate_days - 1), settings.start_date)
        if last < first:
            return dg.SkipReason(f"no closed day since {start_setting}={settings.start_date} yet")
        return _requests(existing, valid, first, last, "restate", now.isoformat())

    return [refresh, restate]


CLEANUP = "amd_instance_cleanup"


class Retention(dg.ConfigurableResource):
    """How long finished scheduled runs stay in the instance (AMD_KEEP_SCHEDULED_RUNS_DAYS)."""

    keep_days: int = 3


@dg.op(name="prune_scheduled_runs", description="Deletes finished scheduled runs no partition depends on.")
def prune_scheduled_runs(context: dg.OpExecutionContext, retention: Retention) -> dg.Output:
    """Delete finished scheduled runs older than ``keep_days`` that hold no latest materialisation; log the count."""
    from amd_pipeline.orchestration.retention import prune_runs

    pruned = prune_runs(context.instance, retention.keep_days)
    context.log.info(pruned.describe())
    return dg.Output(
        None,
        metadata={"deleted_runs": pruned.deleted, "kept_latest": pruned.kept_latest, "freed_bytes": pruned.shard_bytes},
    )


def build_cleanup(settings: DefinitionSettings) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """``amd_instance_cleanup``: daily, keeps the instance's size bounded (no API call, no token)."""
    job = dg.JobDefinition(
        graph_def=dg.GraphDefinition(name=CLEANUP, node_defs=[prune_scheduled_runs]),
        executor_def=dg.in_process_executor,
        tags={SOURCE_TAG: "cleanup"},
        description="Deletes finished refresh/restate runs older than AMD_KEEP_SCHEDULED_RUNS_DAYS, except those "
        "holding a partition's latest materialisation.",
    )
    schedule = dg.ScheduleDefinition(
        name=CLEANUP,
        job=job,
        cron_schedule=settings.cleanup_cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Prunes old scheduled runs at {settings.cleanup_cron} ({settings.timezone}).",
    )
    return job, schedule
