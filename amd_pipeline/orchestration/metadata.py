"""What the assets' events carry: a partition's own numbers, a load's plan and report, a held file."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from amd_pipeline.core.errors import PublishHeldError
from amd_pipeline.core.loader import LoadReport
from amd_pipeline.core.messages import explain
from amd_pipeline.core.plan import Plan
from amd_pipeline.orchestration import dagster_private

PUBLISH_HELD = "publish_held"  # metadata of the amd_published observation a held file leaves: the sentence

Metadata = dict[str, dg.MetadataValue | int | float | str | bool]


def partition_metadata(record: Mapping) -> Metadata:
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


def add_partition_metadata(context: dg.AssetExecutionContext, by_partition: Mapping) -> None:
    """Attach each partition's own metadata to its materialisation event, all at once where Dagster allows."""
    if not by_partition or dagster_private.add_metadata_at_once(context, by_partition):
        return
    for key, metadata in by_partition.items():
        context.add_asset_metadata(metadata, partition_key=key)


def plan_metadata(plan: Plan) -> Metadata:
    """A load's plan: its calls, the windows taken from answers in hand, its share of the quota, its ETA."""
    metadata: Metadata = {"planned_calls": plan.calls}
    if plan.from_answers:
        metadata["planned_windows_from_answers"] = plan.from_answers
    if plan.quota_share is not None:
        metadata["daily_quota_share"] = round(plan.quota_share, 4)
    if plan.eta_seconds is not None:
        metadata["planned_eta_seconds"] = round(plan.eta_seconds, 1)
    return metadata


def report_metadata(report: LoadReport, operation: str) -> Metadata:
    """A load's report: rows, calls, retries, a per-campaign table, restated and deferred windows."""
    lines = ["| campaign | windows | empty windows | total_amd |", "|---|---:|---:|---:|"]
    for campaign in sorted(report.windows_by_campaign):
        lines.append(
            f"| {campaign} | {report.windows_by_campaign[campaign]} | {report.empty_by_campaign[campaign]} "
            f"| {report.totals[campaign]} |"
        )
    metadata: Metadata = {
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


def held_metadata(exc: PublishHeldError) -> Metadata:
    """What a publish that found the published file held open records: the sentence, who held it, where."""
    return {
        PUBLISH_HELD: explain(exc),
        "published": False,
        "held_by": exc.held_by(exc.holders),
        "path": dg.MetadataValue.path(str(exc.path)),
    }
