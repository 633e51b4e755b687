"""The AMD assets: a thin shell of partition keys -> windows -> loader -> metadata."""

import base64
import contextlib
import time
from typing import TYPE_CHECKING

import dagster as dg
import duckdb

# Private to Dagster 1.13: see add_partition_metadata for why, and for the fallback if it moves.
from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

from amd_pipeline.core import progress
from amd_pipeline.core.errors import (
    LoadFailedError,
    PublishHeldError,
    RejectedValuesError,
    SettingsError,
    StoreLockedError,
)
from amd_pipeline.core.loader import LoadReport, Progress, load
from amd_pipeline.core.messages import explain
from amd_pipeline.core.plan import CampaignAll, Plan, plan_calls
from amd_pipeline.core.report import trend_thumbnail
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.partition_events import PartitionEvents
from amd_pipeline.orchestration.partitions import DAY_DIMENSION, window_request
from amd_pipeline.orchestration.resources import AmdStoreResource, WolkvoxResource
from amd_pipeline.wolkvox.errors import WolkvoxError

if TYPE_CHECKING:
    from amd_pipeline.orchestration.component import WolkvoxOperation

PROGRESS_LOG_SECONDS = 5.0
SOURCE_TAG = "amd_pipeline/source"  # who launched the run: backfill (CLI), refresh, restate; ui when absent
MISSING_ONLY_TAG = "amd_pipeline/missing_only"  # "true": windows already final are not fetched again
CLI_BACKFILL_TAG = "amd_pipeline/backfill"  # one id over the runs of one CLI backfill
DAGSTER_BACKFILL_TAG = "dagster/backfill"  # what Dagster puts on the runs of a UI backfill
OPERATION_TAG = "amd_pipeline/operation"  # the operation a run of its job loads (the schedules tell theirs apart)


def backfill_id(tags: dict[str, str]) -> str | None:
    """The backfill a run belongs to (UI or CLI), whose runs share the answers they fetched; else None."""
    return tags.get(CLI_BACKFILL_TAG) or tags.get(DAGSTER_BACKFILL_TAG) or None


class LoadFailed(dg.Failure):
    """A load that failed, described in one sentence from :func:`amd_pipeline.core.messages.explain`.

    Dagster shows a step failure as ``module.Class: description``. Declared in ``builtins``, this
    class reads ``LoadFailed: could not reach ...`` in the UI instead of a ``dagster._core...`` path.
    """


LoadFailed.__module__ = "builtins"

PUBLISH_HELD = "publish_held"  # metadata of the amd_published observation a held file leaves: the sentence

PUBLISHED_DESCRIPTION = (
    "The DuckDB file analysts read (AMD_DUCKDB_PATH): a complete copy of amd_daily, its companion tables and "
    "the analyst views, published atomically by every load that wrote rows. Readers never block loads. "
    "Materialize it to republish without a load (after changing AMD_PUBLISHED_STORAGE_VERSION, say)."
)


AMD_PUBLISHED_KEY = dg.AssetKey("amd_published")


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
        """Republish the working file as it is: no call, no load (loads publish through :func:`publish`);
        an operation with its own published file gets it republished too."""
        working = amd_store.store()
        if not working.path.exists():
            raise LoadFailed(description=f"{working.path} does not exist yet: run a backfill before publishing")
        try:
            metadata = publish_and_describe(working, amd_store, own_files(operations))
        except PublishHeldError as exc:  # the file did not change: no materialisation, the step fails saying why
            raise LoadFailed(description=explain(exc), metadata=held_metadata(exc)) from None
        return dg.MaterializeResult(metadata={**metadata, "republished_without_load": True})

    return amd_published


def held_metadata(exc: PublishHeldError) -> dict[str, dg.MetadataValue | str | bool]:
    """What a publish that found the published file held open records: the sentence, who held it, where."""
    return {
        PUBLISH_HELD: explain(exc),
        "published": False,
        "held_by": exc.held_by(exc.holders),
        "path": dg.MetadataValue.path(str(exc.path)),
    }


def own_files(operations) -> dict[str, str]:
    """Operation id -> its own published file (``published_path``), for the operations that have one."""
    return {op.id: op.published_path for op in operations if op.published_path}


def publish_and_describe(
    working: AmdStore, amd_store: AmdStoreResource, own: dict[str, str] | None = None
) -> dict[str, dg.MetadataValue | int | float | str]:
    """Publish the working file for analysts, and each operation of ``own`` (id -> path) alone to its own
    file; what describes the published dataset, for its materialisation.

    Raises :class:`PublishHeldError` when a program holds a published file open (Windows): the
    caller decides whether that fails its step."""
    target = amd_store.path
    try:
        done = amd_store.publish(working)
        for operation, target in (own or {}).items():
            amd_store.publish(working, target=target, operation=operation)
    except (OSError, duckdb.Error, StoreLockedError, SettingsError) as exc:
        raise LoadFailed(
            description=f"the load's rows are in {working.path}, but publishing {target} for analysts "
            f"failed ({explain(exc)}); the next load publishes again"
        ) from None
    metadata: dict[str, dg.MetadataValue | int | float | str] = {
        "dagster/row_count": done.rows,
        "campaigns": done.campaigns,
        "operations": done.operations,
        "first_day": str(done.first_day or ""),
        "last_day": str(done.last_day or ""),
        "publish_seconds": round(done.seconds, 3),
        "size_bytes": done.bytes,
        "path": dg.MetadataValue.path(str(amd_store.path)),
        **{f"own_file_{operation}": dg.MetadataValue.path(path) for operation, path in (own or {}).items()},
    }
    metadata.update({f"campaign_days_{status}": n for status, n in sorted(done.statuses.items())})
    if done.rows:
        thumbnail = base64.b64encode(trend_thumbnail(done.daily)).decode()
        metadata["trend_30_days"] = dg.MetadataValue.md(
            f"![AMD per day, last 30 days](data:image/png;base64,{thumbnail})"
        )
    return metadata


def publish(
    context: dg.AssetExecutionContext,
    working: AmdStore,
    amd_store: AmdStoreResource,
    run_summary,
    *,
    failed: bool,
    own: dict[str, str] | None = None,
) -> None:
    """Publish the working file for analysts and record it as a materialisation of ``amd_published``,
    with what describes the dataset and the summary of the load that led to it. A failing step's
    logged events are dropped, so it records the materialisation itself (as for its partitions).

    A published file held open by a program (Windows) does not fail the load: its rows are in the
    working file and the next publish lands them. The step logs the sentence as a warning and records
    an observation of ``amd_published`` (``published: false``, :data:`PUBLISH_HELD`) instead of a
    materialisation, since the file did not change; the CLI prints that sentence.

    With ``own`` (the operation's ``published_path``), the operation alone is also published there."""
    try:
        metadata = publish_and_describe(working, amd_store, own)
    except PublishHeldError as exc:
        context.log.warning(explain(exc))
        record(context, dg.AssetObservation, held_metadata(exc), failed=failed)
        return
    metadata.update({f"load_{name}": value for name, value in run_summary.items()})
    record(context, dg.AssetMaterialization, metadata, failed=failed)


def record(
    context: dg.AssetExecutionContext,
    kind: type[dg.AssetMaterialization] | type[dg.AssetObservation],
    metadata: dict,
    *,
    failed: bool,
) -> None:
    """Log an event of ``kind`` on ``amd_published`` in the step, or, when the step is failing (its logged
    events are dropped), on the instance, tagged with the run."""
    if failed:
        tags = {"amd_pipeline/run_id": context.run.run_id}
        context.instance.report_runless_asset_event(kind(AMD_PUBLISHED_KEY, metadata=metadata, tags=tags))
    else:
        context.log_event(kind(asset_key=AMD_PUBLISHED_KEY, metadata=metadata))


def observed_latency(instance: dg.DagsterInstance, operation: str | None = None) -> float | None:
    """Median seconds per call seen by the latest load (of ``operation``: each server has its own latency;
    its summary is on the latest publish), if any."""
    # The latest publish by a load: a republish without a load carries no latency.
    for record in instance.fetch_materializations(AMD_PUBLISHED_KEY, limit=20).records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        value = metadata.get("load_median_latency_ms")
        of = metadata.get("load_operation")
        if value is not None and (operation is None or of is None or of.value == operation):
            return value.value / 1000
    return None


def plan_metadata(plan: Plan) -> dict[str, dg.MetadataValue | int | float | str]:
    metadata: dict[str, dg.MetadataValue | int | float | str] = {"planned_calls": plan.calls}
    if plan.from_answers:
        metadata["planned_windows_from_answers"] = plan.from_answers
    if plan.quota_share is not None:
        metadata["daily_quota_share"] = round(plan.quota_share, 4)
    if plan.eta_seconds is not None:
        metadata["planned_eta_seconds"] = round(plan.eta_seconds, 1)
    return metadata


def report_metadata(report: LoadReport, operation: str) -> dict[str, dg.MetadataValue | int | float | str]:
    lines = ["| campaign | windows | empty windows | total_amd |", "|---|---:|---:|---:|"]
    for campaign in sorted(report.windows_by_campaign):
        lines.append(
            f"| {campaign} | {report.windows_by_campaign[campaign]} | {report.empty_by_campaign[campaign]} "
            f"| {report.totals[campaign]} |"
        )
    metadata: dict[str, dg.MetadataValue | int | float | str] = {
        "operation": operation,
        "rows_written": report.rows_written,
        "windows": report.windows,
        "calls": report.calls,
        "retries": report.retries,
        "batches": report.batches,
        "campaign_all_calls": report.all_calls,
        "load_seconds": round(report.elapsed, 3),
        "per_campaign": dg.MetadataValue.md("\n".join(lines)),
    }
    if report.median_latency is not None:
        metadata["median_latency_ms"] = round(report.median_latency * 1000, 1)
    if report.skipped:
        metadata["skipped_final_windows"] = report.skipped
    metadata["windows_from_answers"] = report.from_answers
    metadata["restated"] = len(report.changes)
    if report.changes:
        metadata["restated_days"] = dg.MetadataValue.md(
            "| campaign | day | old | new |\n|---|---|---:|---:|\n"
            + "\n".join(f"| {c} | {d} | {old} | {new} |" for c, d, old, new in report.changes[:500])
        )
    if report.deferred:
        metadata["deferred_windows"] = len(report.deferred)
        metadata["deferred"] = dg.MetadataValue.md(
            "\n".join(f"- {r.campaign_id} {r.window.local_date}" for r in report.deferred[:500])
        )
    return metadata


def refused_all(context: dg.AssetExecutionContext, wolkvox: WolkvoxResource) -> None:
    context.log.warning("the server refused campaign_id=all: one call per campaign from now on (remembered)")
    wolkvox.remember_all_refused()


def note_from_answers(wolkvox: WolkvoxResource, report: LoadReport) -> None:
    """Count the windows served without a call in the call ledger, beside the calls (``amd-pipeline budget``)."""
    if report.from_answers:
        with contextlib.suppress(WolkvoxError):  # a count for people; never fails a load that succeeded
            wolkvox.ledger().note_from_answers(report.from_answers)


def partition_metadata(record: dict) -> dict[str, dg.MetadataValue | int | float | str | bool]:
    """What one partition's event carries: its own numbers, nothing of the run's."""
    return {
        "total_amd": int(record["total_amd"]),
        "is_final": bool(record["is_final"]),
        "fetch_status": record["fetch_status"],
        "fetched_at": record["fetched_at"].isoformat(timespec="seconds"),
    }


def written_metadata(records: list[dict], key_of: dict) -> dict:
    """Each written record's partition key (``key_of``: by campaign and window start), with its own metadata."""
    return {key_of[(r["campaign_id"], r["window_start"])]: partition_metadata(r) for r in records}


def settle(context: dg.AssetExecutionContext, events: PartitionEvents | None) -> None:
    """Wait for the thread logging the partitions' events. What it could not log, report_partitions logs
    once more on the step's thread (and fails the step if that fails too)."""
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
    """Give each written partition its own numbers. A failed step records its written partitions as
    materialisations itself, so the UI shows them as done; a successful one attaches to its own events.
    With ``events`` (a CLI run), the written partitions were logged during the load: on success the
    range's other partitions are logged as Dagster would, on failure nothing more."""
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
                context.asset_key, partition=key, metadata=metadata, tags={"amd_pipeline/run_id": context.run.run_id}
            )
        )


def add_partition_metadata(context: dg.AssetExecutionContext, by_partition: dict) -> None:
    """Attach each partition's own metadata to its materialisation event, all at once.

    Dagster's public ``add_asset_metadata(partition_key=...)`` checks the key by listing every partition
    of the run's range on each call, so a run of n partitions costs O(n^2): 18 ms a partition at 500,
    hours at 50 campaigns x 365 days. Where the step keeps its metadata as Dagster 1.13 does, the
    entries are added in one step; if a Dagster upgrade moves it, the public call is used (slow, still
    right), and ``test_per_partition_metadata_takes_the_one_step_path`` fails so the upgrade is noticed.
    """
    step = getattr(context.op_execution_context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if not by_partition:
        return
    if isinstance(accumulator, OutputMetadataAccumulator):
        added = {
            AssetMetadataHandle(asset_key=context.asset_key, partition_key=str(key)): metadata
            for key, metadata in by_partition.items()
        }
        step._metadata_accumulator = OutputMetadataAccumulator(
            per_output_metadata={**accumulator.per_output_metadata, **added}
        )
        return
    for key, metadata in by_partition.items():
        context.add_asset_metadata(metadata, partition_key=key)


def build_amd_daily(
    op: "WolkvoxOperation", partitions_def: dg.MultiPartitionsDefinition, freshness: dg.FreshnessPolicy | None = None
) -> dg.AssetsDefinition:
    """The operation's ``amd_daily`` asset over ``partitions_def`` (campaign x local day in its zone), in
    its token's pool, reading its own resources (``op.wolkvox_key``) and writing its rows in the one store."""
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
        tags = context.run.tags
        backfill = backfill_id(tags)
        # A CLI run's partitions are logged as their batches are written (partition_events.py), its
        # planned events first, as Dagster would log them when it creates the run.
        events = PartitionEvents(context, keys) if PartitionEvents.wanted(context) else None
        if events:
            events.log_planned()
        working = amd_store.store(timezone, start_date, operation=op.id)
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
        except (SettingsError, WolkvoxError, StoreLockedError) as exc:
            raise LoadFailed(description=explain(exc)) from None
        context.log.info(f"plan ({op.id}, {timezone}, campaign_id=all {mode}): {plan.describe()}")
        last_log = [0.0]

        def on_progress(p: Progress) -> None:
            progress.publish(p)
            if p.windows_done == p.windows_total or time.monotonic() - last_log[0] >= PROGRESS_LOG_SECONDS:
                last_log[0] = time.monotonic()
                context.log.info(f"{p.windows_done}/{p.windows_total} windows, {p.calls} calls, {p.retries} retries")

        source = tags.get(SOURCE_TAG, "ui")
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
                    on_progress=on_progress,
                    skip_final=tags.get(MISSING_ONLY_TAG) == "true",
                    request_tags={"source": source, "run_id": context.run.run_id, "backfill_id": backfill},
                    prefer_all=backfill is not None,
                    in_hand=in_hand,
                    on_written=events and (lambda batch: events.log_soon(written_metadata(batch, key_of))),
                )
        except WolkvoxError as exc:  # the client's own token_info, before the load: token or host wrong
            raise LoadFailed(description=explain(exc)) from None
        except LoadFailedError as failed:
            settle(context, events)
            note_from_answers(wolkvox, failed.report)
            report_partitions(context, failed.report, key_of, failed=True, events=events)
            metadata = {**plan_metadata(plan), **report_metadata(failed.report, op.id)}
            if isinstance(failed.cause, RejectedValuesError):
                metadata["rejected"] = dg.MetadataValue.md("\n".join(f"- {r}" for r in failed.cause.rejects))
            if failed.report.rows_written:  # what was written is valid: analysts get it now
                publish(context, working, amd_store, metadata, failed=True, own=own_files([op]))
            description = explain(failed.cause, deferred=len(failed.report.deferred), timezone=timezone)
            raise LoadFailed(description=description, metadata=metadata) from None
        settle(context, events)
        note_from_answers(wolkvox, report)
        if report.from_answers:
            context.log.info(f"{report.from_answers} window(s) taken from answers this backfill already fetched")
        if report.changes:
            context.log.info(f"{len(report.changes)} final campaign-day(s) restated by the vendor")
        report_partitions(context, report, key_of, failed=False, events=events)
        # The run's summary goes once on the published copy, not on every partition's event.
        publish(
            context,
            working,
            amd_store,
            {**plan_metadata(plan), **report_metadata(report, op.id)},
            failed=False,
            own=own_files([op]),
        )
        return dg.MaterializeResult()

    return amd_daily
