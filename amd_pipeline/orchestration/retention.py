"""Bounded instance growth: delete old scheduled runs that no partition's latest state depends on.

The refresh schedule writes a run with one event per campaign every few minutes, for months. Dagster
prunes schedule and sensor ticks (``retention:`` in dagster.yaml) but never runs or their events, so
``prune_runs`` does, for runs launched by the schedules (``amd_pipeline/source`` = refresh, restate
or cleanup) that finished more than ``keep_days`` ago. A run is kept while it holds the latest
materialisation of any partition (or of ``amd_published``): the UI's partition matrix and each
partition's numbers come from those events. Backfills and UI runs are history and are never pruned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import dagster as dg

from amd_pipeline.orchestration import dagster_private
from amd_pipeline.orchestration.tags import SOURCE_TAG

PRUNED_SOURCES = ("refresh", "restate", "cleanup")
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclasses.dataclass
class Pruned:
    """What :func:`prune_runs` did: runs deleted, old runs kept as a partition's latest, run file bytes freed."""

    deleted: int = 0
    kept_latest: int = 0  # old enough, but still the latest materialisation of some partition
    shard_bytes: int = 0  # sqlite only: per-run event files removed

    def describe(self) -> str:
        """One line saying how many runs were deleted and kept, and the run file bytes freed if any."""
        return (
            f"deleted {self.deleted} finished scheduled run(s) and their events; kept {self.kept_latest} that hold "
            f"a partition's latest materialisation"
            + (f"; freed {self.shard_bytes} bytes of run files" if self.shard_bytes else "")
        )


def holds_a_latest_materialization(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether some asset partition's newest materialisation came from ``run_id``.

    Compared by run id, not storage id: on sqlite a run's own event file numbers its events
    differently from the index the asset queries read.
    """
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    seen = {
        (r.event_log_entry.asset_materialization.asset_key, r.event_log_entry.asset_materialization.partition)
        for r in records
    }
    for asset_key, partition in seen:
        records_filter = dg.AssetRecordsFilter(
            asset_key=asset_key, asset_partitions=[partition] if partition is not None else None
        )
        newest = instance.fetch_materializations(records_filter, limit=1).records
        if newest and newest[0].run_id == run_id:
            return True
    return False


def prune_runs(instance: dg.DagsterInstance, keep_days: int, now: dt.datetime | None = None) -> Pruned:
    """Delete the scheduled runs that finished before ``now - keep_days`` and hold no latest state."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=keep_days)
    pruned = Pruned()
    storage = instance.event_log_storage
    for source in PRUNED_SOURCES:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={SOURCE_TAG: source}, statuses=FINISHED, updated_before=cutoff)
        )
        for record in records:
            run_id = record.dagster_run.run_id
            if holds_a_latest_materialization(instance, run_id):
                pruned.kept_latest += 1
                continue
            instance.delete_run(run_id)
            pruned.deleted += 1
            shard = dagster_private.run_file(storage, run_id)  # SQLite: the emptied per-run file stays otherwise
            if shard and os.path.exists(shard):
                pruned.shard_bytes += os.path.getsize(shard)
                os.remove(shard)
    return pruned
