"""Bounded growth: old scheduled runs are pruned, unless a partition's latest state lives in them."""

import datetime as dt
import os

import dagster as dg
import pytest

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.orchestration.build import AMD_DAILY_JOB
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline.orchestration.partitions import day_key
from amd_pipeline.orchestration.retention import prune_runs
from amd_pipeline.orchestration.tags import SOURCE_TAG
from amd_pipeline_tests.conftest import CAMPAIGNS

DAY = dt.date(2026, 11, 2)
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_instance(request, pipeline_env, tmp_path):
    if request.param == "sqlite":
        yield request.getfixturevalue("instance")
        return
    home = request.getfixturevalue("pg_home")
    inst = dg.DagsterInstance.from_config(str(home))
    try:
        inst.add_dynamic_partitions("campaign", CAMPAIGNS)
        yield inst
    finally:
        inst.dispose()


def run(instance, source: str, day: dt.date = DAY) -> str:
    job = build_definitions(DefinitionSettings()).resolve_job_def(AMD_DAILY_JOB)
    tags = {
        "dagster/asset_partition_range_start": str(day_key(CAMPAIGNS[0], day)),
        "dagster/asset_partition_range_end": str(day_key(CAMPAIGNS[-1], day)),
        SOURCE_TAG: source,
    }
    result = job.execute_in_process(instance=instance, tags=tags)
    assert result.success
    return result.run_id


def latest_runs(instance) -> dict[str, str]:
    """Each amd_daily partition's latest materialisation: the run it came from."""
    out = {}
    for campaign in CAMPAIGNS:
        key = str(day_key(campaign, DAY))
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("amd_daily"), asset_partitions=[key]), limit=1
        ).records
        out[key] = record.run_id
    return out


def test_superseded_scheduled_runs_are_pruned_and_the_latest_state_is_kept(any_instance):
    old_refreshes = [run(any_instance, "refresh") for _ in range(2)]
    backfill = run(any_instance, "backfill", DAY - dt.timedelta(days=1))
    newest = run(any_instance, "refresh")
    before = latest_runs(any_instance)
    assert set(before.values()) == {newest}

    assert prune_runs(any_instance, keep_days=3).deleted == 0  # all finished within the last 3 days

    pruned = prune_runs(any_instance, keep_days=3, now=LATER)
    assert (pruned.deleted, pruned.kept_latest) == (2, 1)
    remaining = {r.run_id for r in any_instance.get_runs()}
    assert remaining == {backfill, newest}  # backfills are history; the newest refresh holds the latest state
    assert all(any_instance.get_run_by_id(run_id) is None for run_id in old_refreshes)
    events = any_instance.fetch_materializations(dg.AssetKey("amd_daily"), limit=100).records
    assert {e.run_id for e in events} == {backfill, newest}  # their events went with them
    assert latest_runs(any_instance) == before
    materialized = any_instance.get_materialized_partitions(dg.AssetKey("amd_daily"))
    assert {str(day_key(c, DAY)) for c in CAMPAIGNS} <= materialized
    storage = any_instance.event_log_storage
    if hasattr(storage, "path_for_shard"):  # sqlite: the emptied per-run files are removed too
        assert pruned.shard_bytes > 0
        assert not any(os.path.exists(storage.path_for_shard(r)) for r in old_refreshes)


def test_the_cleanup_job_runs_as_the_schedule_launches_it(instance, pipeline_env, monkeypatch):
    monkeypatch.setenv("AMD_KEEP_SCHEDULED_RUNS_DAYS", "0")
    old = run(instance, "refresh")
    run(instance, "refresh")
    defs = build_definitions(DefinitionSettings.from_env())
    assert defs.get_schedule_def("amd_instance_cleanup").default_status == dg.DefaultScheduleStatus.RUNNING
    result = defs.resolve_job_def("amd_instance_cleanup").execute_in_process(instance=instance)
    assert result.success
    [output] = [e for e in result.all_events if e.is_successful_output]
    assert output.event_specific_data.metadata["deleted_runs"].value == 1
    assert instance.get_run_by_id(old) is None


def test_without_dagsters_run_files_the_runs_are_still_pruned_and_the_files_stay(
    instance, pipeline_env, capsys, monkeypatch
):
    """If an upgrade moves the SQLite event log's class, pruning still deletes the runs; only their files stay."""
    from amd_pipeline.orchestration import dagster_private

    monkeypatch.setitem(dagster_private.MISSING, "run_files", "cannot import name SqliteEventLogStorage (test)")
    monkeypatch.setattr(dagster_private, "_noticed", set())
    old = run(instance, "refresh")
    run(instance, "refresh")
    pruned = prune_runs(instance, keep_days=3, now=LATER)
    assert (pruned.deleted, pruned.shard_bytes) == (1, 0)
    assert instance.get_run_by_id(old) is None
    assert os.path.exists(instance.event_log_storage.path_for_shard(old))
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("amd_pipeline: Dagster")]
    assert len(said) == 1 and "retention leaves pruned runs' emptied SQLite files in place" in said[0]
