"""The AMD assets: a thin shell of partition keys -> windows -> loader -> events."""

import contextlib
import time
from typing import TYPE_CHECKING

import dagster as dg

from amd_pipeline.core import progress
from amd_pipeline.core.errors import (
    CALL_ERRORS,
    LoadFailedError,
    PublishHeldError,
    RejectedValuesError,
    SettingsError,
    StoreLockedError,
)
from amd_pipeline.core.loader import LoadReport, Progress, load
from amd_pipeline.core.messages import explain
from amd_pipeline.core.plan import CampaignAll, Plan, WindowRequest, plan_calls
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.failure import LoadFailed
from amd_pipeline.orchestration.metadata import (
    add_partition_metadata,
    held_metadata,
    plan_metadata,
    report_metadata,
    written_metadata,
)
from amd_pipeline.orchestration.partition_events import PartitionEvents
from amd_pipeline.orchestration.partitions import DAY_DIMENSION, window_request
from amd_pipeline.orchestration.publishing import (
    AMD_PUBLISHED_KEY,
    observed_latency,
    own_files,
    publish,
    publish_and_describe,
)
from amd_pipeline.orchestration.resources import AmdStoreResource, WolkvoxResource
from amd_pipeline.orchestration.tags import MISSING_ONLY_TAG, RUN_ID_TAG, SOURCE_TAG, backfill_id

if TYPE_CHECKING:
    from amd_pipeline.orchestration.component import WolkvoxOperation

PROGRESS_LOG_SECONDS = 5.0

PUBLISHED_DESCRIPTION = (
    "The DuckDB file analysts read (AMD_DUCKDB_PATH): a complete copy of amd_daily, its companion tables and "
    "the analyst views, published atomically by every load that wrote rows. Readers never block loads. "
    "Materialize it to republish without a load (after changing AMD_PUBLISHED_STORAGE_VERSION, say)."
)


def build_amd_published(operations: "list[WolkvoxOperation]") -> dg.AssetsDefinition:
    """``amd_published``: the one analysts' file, downstream of every operation's ``amd_daily``."""

    @dg.asset(
        key=AMD_PUBLISHED_KEY,
        deps=[op.asset_key("amd_daily") for op in operations],
        group_name="wolkvox",
        kinds={"duckdb"},
        description=PUBLISHED_DESCRIPTION,
    )
    def amd_published(amd_store: AmdStoreResource) -> dg.MaterializeResult:
        """Republish the working file as it is: no call, no load.

        Loads publish through :func:`publish`; an operation with its own published file gets it republished too.
        """
        working = amd_store.store()
        if not working.path.exists():
            raise LoadFailed(description=f"{working.path} does not exist yet: run a backfill before publishing")
        try:
            metadata = publish_and_describe(working, amd_store, own_files(operations))
        except PublishHeldError as exc:  # the file did not change: no materialisation, the step fails saying why
            raise LoadFailed(description=explain(exc), metadata=held_metadata(exc)) from None
        return dg.MaterializeResult(metadata={**metadata, "republished_without_load": True})

    return amd_published


def build_amd_daily(
    op: "WolkvoxOperation", partitions_def: dg.MultiPartitionsDefinition, freshness: dg.FreshnessPolicy | None = None
) -> dg.AssetsDefinition:
    """The operation's ``amd_daily`` asset over ``partitions_def`` (campaign x local day in its zone).

    It runs in its token's pool, reads its own resources (``op.wolkvox_key``) and writes in the one store.
    """
    timezone = op.timezone
    start_date = partitions_def.get_partitions_def_for_dimension(DAY_DIMENSION).start.date()
    description = AMD_DAILY.description if op.is_default else f"{AMD_DAILY.description} Operation {op.id}."

    @dg.asset(
        key=op.asset_key("amd_daily"),
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=op.pool,
        group_name=op.group,
        kinds={"duckdb", "pandas"},
        description=description,
        freshness_policy=freshness,
        required_resource_keys={op.wolkvox_key, "amd_store"},
    )
    def amd_daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        wolkvox: WolkvoxResource = getattr(context.resources, op.wolkvox_key)
        amd_store: AmdStoreResource = context.resources.amd_store
        keys = [
            k if isinstance(k, dg.MultiPartitionKey) else partitions_def.get_partition_key_from_str(k)
            for k in context.partition_keys
        ]
        requests = [window_request(key, timezone) for key in keys]
        key_of = {(r.campaign_id, r.window.start): key for r, key in zip(requests, keys, strict=True)}
        backfill, source = backfill_id(context.run.tags), context.run.tags.get(SOURCE_TAG, "ui")
        # A CLI run's partitions are logged as their batches are written (partition_events.py).
        events = PartitionEvents(context, keys) if PartitionEvents.wanted(context) else None
        if events:
            events.log_planned()
        working = amd_store.store(timezone, start_date, operation=op.id)
        plan, mode, in_hand = plan_load(context, op, wolkvox, working, requests, backfill)
        try:
            with wolkvox.client(source) as client:
                report = load(
                    client,
                    working,
                    AMD_DAILY,
                    requests,
                    campaign_all=mode,
                    on_all_refused=lambda: refused_all(context, wolkvox),
                    batch_size=amd_store.batch_size,
                    on_progress=progress_logger(context),
                    skip_final=context.run.tags.get(MISSING_ONLY_TAG) == "true",
                    request_tags={"source": source, "run_id": context.run.run_id, "backfill_id": backfill},
                    prefer_all=backfill is not None,
                    in_hand=in_hand,
                    on_written=events and (lambda batch: events.log_soon(written_metadata(batch, key_of))),
                )
        except CALL_ERRORS as exc:  # the client's own token_info, before the load: token or host wrong
            raise LoadFailed(description=explain(exc)) from None
        except LoadFailedError as failed:
            settle(context, events)
            failed_load(context, op, wolkvox, amd_store, working, failed, plan, key_of, events)
        settle(context, events)
        note_from_answers(wolkvox, report)
        if report.from_answers:
            context.log.info(f"{report.from_answers} window(s) taken from answers this backfill already fetched")
        if report.changes:
            context.log.info(f"{len(report.changes)} final campaign-day(s) restated by the vendor")
        report_partitions(context, report, key_of, failed=False, events=events)
        # The run's summary goes once on the published copy, not on every partition's event.
        summary = {**plan_metadata(plan), **report_metadata(report, op.id)}
        publish(context, working, amd_store, summary, failed=False, own=own_files([op]))
        return dg.MaterializeResult()

    return amd_daily


def plan_load(
    context: dg.AssetExecutionContext,
    op: "WolkvoxOperation",
    wolkvox: WolkvoxResource,
    working: AmdStore,
    requests: list[WindowRequest],
    backfill: str | None,
) -> tuple[Plan, CampaignAll, dict]:
    """Check the token and plan the calls (logged): the plan, the campaign_id=all mode, the answers in hand."""
    try:
        wolkvox.check()
        mode = wolkvox.campaign_all_mode()
        use_all = mode != CampaignAll.OFF
        in_hand = working.answers_in_hand(backfill, [r.window for r in requests]) if use_all else {}
        to_call = [r for r in requests if r.window.start not in in_hand]
        plan = Plan(
            windows=len(requests),
            calls=len(plan_calls(to_call, use_all=use_all, prefer_all=backfill is not None)),
            from_answers=len(requests) - len(to_call),
            daily_quota=wolkvox.daily_quota or None,
            median_latency=observed_latency(context.instance, op.id),
        )
    except (SettingsError, *CALL_ERRORS, StoreLockedError) as exc:
        raise LoadFailed(description=explain(exc)) from None
    context.log.info(f"plan ({op.id}, {op.timezone}, campaign_id=all {mode}): {plan.describe()}")
    return plan, mode, in_hand


def progress_logger(context: dg.AssetExecutionContext):
    """A load's progress callback: published for the CLI, and logged every few seconds and at the end."""
    last_log = [0.0]

    def on_progress(p: Progress) -> None:
        progress.publish(p)
        if p.windows_done == p.windows_total or time.monotonic() - last_log[0] >= PROGRESS_LOG_SECONDS:
            last_log[0] = time.monotonic()
            context.log.info(f"{p.windows_done}/{p.windows_total} windows, {p.calls} calls, {p.retries} retries")

    return on_progress


def failed_load(
    context: dg.AssetExecutionContext,
    op: "WolkvoxOperation",
    wolkvox: WolkvoxResource,
    amd_store: AmdStoreResource,
    working: AmdStore,
    failed: LoadFailedError,
    plan: Plan,
    key_of: dict,
    events: PartitionEvents | None,
) -> None:
    """Record what a failed load wrote (its partitions, a publish of valid rows), then raise its one sentence."""
    note_from_answers(wolkvox, failed.report)
    report_partitions(context, failed.report, key_of, failed=True, events=events)
    metadata = {**plan_metadata(plan), **report_metadata(failed.report, op.id)}
    if isinstance(failed.cause, RejectedValuesError):
        metadata["rejected"] = dg.MetadataValue.md("\n".join(f"- {r}" for r in failed.cause.rejects))
    if failed.report.rows_written:  # what was written is valid: analysts get it now
        publish(context, working, amd_store, metadata, failed=True, own=own_files([op]))
    description = explain(failed.cause, deferred=len(failed.report.deferred), timezone=op.timezone)
    raise LoadFailed(description=description, metadata=metadata) from None


def refused_all(context: dg.AssetExecutionContext, wolkvox: WolkvoxResource) -> None:
    """Warn that the server refused ``campaign_id=all`` and remember it: one call per campaign from now on."""
    context.log.warning("the server refused campaign_id=all: one call per campaign from now on (remembered)")
    wolkvox.remember_all_refused()


def note_from_answers(wolkvox: WolkvoxResource, report: LoadReport) -> None:
    """Count the windows served without a call in the call ledger, beside the calls (``amd-pipeline budget``)."""
    if report.from_answers:
        with contextlib.suppress(*CALL_ERRORS):  # a count for people; never fails a load that succeeded
            wolkvox.ledger().note_from_answers(report.from_answers)


def settle(context: dg.AssetExecutionContext, events: PartitionEvents | None) -> None:
    """Wait for the thread logging the partitions' events.

    What it could not log, report_partitions logs once more on the step's thread (and fails the step if that fails
    too).
    """
    if events is None:
        return
    try:
        events.finish()
    except Exception as exc:
        context.log.warning(f"logging the written partitions' events failed, trying once more: {explain(exc)}")


def report_partitions(
    context: dg.AssetExecutionContext,
    report: LoadReport,
    key_of: dict,
    *,
    failed: bool,
    events: PartitionEvents | None = None,
) -> None:
    """Give each written partition its own numbers.

    A failed step records its written partitions as materialisations itself, so the UI shows them as done; a
    successful one attaches to its own events. With ``events`` (a CLI run), the written partitions were logged
    during the load: on success the range's other partitions are logged as Dagster would, on failure nothing more.
    """
    own = written_metadata(report.written, key_of)
    if events is not None:
        events.log(own)  # any a failed on_written left out
        if not failed:
            events.log_rest()
        return
    if not failed:
        add_partition_metadata(context, own)
        return
    for key, metadata in own.items():
        context.instance.report_runless_asset_event(
            dg.AssetMaterialization(
                context.asset_key, partition=key, metadata=metadata, tags={RUN_ID_TAG: context.run.run_id}
            )
        )
