"""Publishing the working file for analysts, and recording it as an event of ``amd_published``."""

from __future__ import annotations

import base64

import dagster as dg
import duckdb

from amd_pipeline.core.errors import PublishHeldError, SettingsError, StoreLockedError
from amd_pipeline.core.messages import explain
from amd_pipeline.core.report import trend_thumbnail
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.failure import LoadFailed
from amd_pipeline.orchestration.metadata import Metadata, held_metadata
from amd_pipeline.orchestration.resources import AmdStoreResource
from amd_pipeline.orchestration.tags import RUN_ID_TAG

AMD_PUBLISHED_KEY = dg.AssetKey("amd_published")


def own_files(operations) -> dict[str, str]:
    """Operation id -> its own published file (``published_path``), for the operations that have one."""
    return {op.id: op.published_path for op in operations if op.published_path}


def publish_and_describe(working: AmdStore, amd_store: AmdStoreResource, own: dict[str, str] | None = None) -> Metadata:
    """Publish the working file for analysts; return what describes the dataset, for its materialisation.

    Each operation of ``own`` (id -> path) is also published alone to its own file.

    Raises :class:`PublishHeldError` when a program holds a published file open (Windows): the
    caller decides whether that fails its step.
    """
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
    metadata: Metadata = {
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
    """Publish the working file for analysts and record it as a materialisation of ``amd_published``.

    The materialisation carries what describes the dataset and the summary of the load that led to it. A
    failing step's logged events are dropped, so it records the materialisation itself (as for its partitions).

    A published file held open by a program (Windows) does not fail the load: its rows are in the
    working file and the next publish lands them. The step logs the sentence as a warning and records
    an observation of ``amd_published`` (``published: false``, :data:`PUBLISH_HELD`) instead of a
    materialisation, since the file did not change; the CLI prints that sentence.

    With ``own`` (the operation's ``published_path``), the operation alone is also published there.
    """
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
    """Log an event of ``kind`` on ``amd_published`` in the step, or on the instance when the step is failing.

    A failing step's logged events are dropped, so the instance's event is tagged with the run instead.
    """
    if failed:
        tags = {RUN_ID_TAG: context.run.run_id}
        context.instance.report_runless_asset_event(kind(AMD_PUBLISHED_KEY, metadata=metadata, tags=tags))
    else:
        context.log_event(kind(asset_key=AMD_PUBLISHED_KEY, metadata=metadata))


def observed_latency(instance: dg.DagsterInstance, operation: str | None = None) -> float | None:
    """Median seconds per call seen by the latest load (of ``operation``), if any.

    Each server has its own latency; the load's summary is on the latest publish.
    """
    # The latest publish by a load: a republish without a load carries no latency.
    for record in instance.fetch_materializations(AMD_PUBLISHED_KEY, limit=20).records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        value = metadata.get("load_median_latency_ms")
        of = metadata.get("load_operation")
        if value is not None and (operation is None or of is None or of.value == operation):
            return value.value / 1000
    return None
