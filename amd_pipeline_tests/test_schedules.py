"""The refresh and restatement schedules, evaluated on an instance with the shipped dagster.yaml."""

import datetime as dt
import os
import textwrap
import time
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.orchestration.build import AMD_DAILY_JOB
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.conftest import daily_materializations, published_materialization

BOGOTA = ZoneInfo("America/Bogota")


@pytest.fixture
def env(pipeline_env, monkeypatch):
    monkeypatch.setenv("AMD_START_DATE", "2026-01-01")
    return pipeline_env


def tick(instance, name: str, at: dt.datetime | None = None):
    defs = build_definitions(DefinitionSettings.from_env())
    repo = defs.get_repository_def()
    # As a context manager: the context opens its own instance and must close it.
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=at or dt.datetime.now(dt.UTC),
        repository_def=repo,
        resources=repo.get_top_level_resources(),
    ) as context:
        return defs.get_schedule_def(name).evaluate_tick(context)


def launch(instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = build_definitions(DefinitionSettings.from_env()).resolve_job_def(AMD_DAILY_JOB)
    return job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)


def today() -> dt.date:
    return dt.datetime.now(BOGOTA).date()


def test_a_refresh_is_one_run_over_every_campaign_and_the_first_of_the_day_also_reads_yesterday(env, instance, sim):
    first = tick(instance, "amd_daily_refresh")
    [request] = first.run_requests
    yesterday = today() - dt.timedelta(days=1)
    assert request.tags["dagster/asset_partition_range_start"] == f"20717|{yesterday}"
    assert request.tags["dagster/asset_partition_range_end"] == f"20731|{today()}"
    assert request.tags["amd_pipeline/source"] == "refresh"
    assert launch(instance, request).success
    assert sim.stats()["calls"] == {"campaign_6:all": 2}  # one call per day for all three campaigns
    rows = env.query("SELECT campaign_id, local_date, total_amd, is_final FROM amd_daily ORDER BY ALL")
    assert len(rows) == 6
    for r in rows.itertuples():
        day = r.local_date.date()
        assert r.is_final == (day == yesterday)  # today is still open: partial
        if day == yesterday:
            assert r.total_amd == sim.day_total(r.campaign_id, day)
    [later] = tick(instance, "amd_daily_refresh").run_requests
    assert later.tags["dagster/asset_partition_range_start"] == f"20717|{today()}"  # yesterday is final now


def test_a_refresh_tick_is_skipped_while_the_previous_refresh_still_runs(env, instance, sim):
    [request] = tick(instance, "amd_daily_refresh").run_requests
    sim.state.config.latency_ms = 1500  # a slow server keeps the refresh run going
    script = textwrap.dedent(f"""
        import dagster as dg
        from amd_pipeline.orchestration.build import AMD_DAILY_JOB
        from amd_pipeline.orchestration.location import build_definitions
        from amd_pipeline.core.settings import DefinitionSettings
        job = build_definitions(DefinitionSettings.from_env()).resolve_job_def(AMD_DAILY_JOB)
        with dg.DagsterInstance.from_config({instance.root_directory!r}) as instance:
            assert job.execute_in_process(instance=instance, tags={dict(request.tags)!r}).success
    """)
    running = forkserver.start(
        [], env=dict(os.environ), cwd=instance.root_directory, script=script
    )  # as the daemon would
    try:
        deadline = time.monotonic() + 60
        while sim.stats()["requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        skipped = tick(instance, "amd_daily_refresh")
    finally:
        done = running.wait(timeout=120)
        assert done.returncode == 0, done.stderr
    assert not skipped.run_requests
    assert "the previous refresh run" in skipped.skip_message and "is still started" in skipped.skip_message
    assert tick(instance, "amd_daily_refresh").run_requests  # once it is done, the next tick runs


def test_a_cadence_that_would_pass_half_the_budget_is_spaced_out(env, instance, monkeypatch):
    monkeypatch.setenv("WOLKVOX_DAILY_QUOTA", "100")  # budget 50: 288 refreshes a day would be too many
    [request] = tick(instance, "amd_daily_refresh").run_requests
    assert launch(instance, request).success
    skipped = tick(instance, "amd_daily_refresh", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert skipped.skip_message == (
        "1 call(s) per refresh x 288 ticks = 288 calls/day would pass half of the daily budget of 50: "
        "refreshing every 58 min to stay within the budget"
    )
    assert tick(instance, "amd_daily_refresh", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=60)).run_requests


@pytest.mark.parametrize(("schedule", "verb"), [("amd_daily_refresh", "refresh"), ("amd_daily_restate", "restate")])
def test_without_a_token_the_schedules_skip_naming_it(env, instance, monkeypatch, schedule, verb):
    monkeypatch.delenv("WOLKVOX_TOKEN")
    assert tick(instance, schedule).skip_message == (
        f"cannot {verb}: WOLKVOX_TOKEN is not set: export the operation's wolkvox-token as WOLKVOX_TOKEN"
    )


def test_the_restatement_refetches_recent_closed_days_and_lists_what_changed(env, instance, sim):
    [request] = tick(instance, "amd_daily_restate").run_requests
    last = today() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=2)
    assert request.tags["dagster/asset_partition_range_start"] == f"20717|{first}"
    assert request.tags["dagster/asset_partition_range_end"] == f"20731|{last}"
    assert launch(instance, request).success
    sim.state.config.restatements = {f"20718|{first}": 7}  # the vendor counts 7 more, after the fact
    result = launch(instance, request)
    assert result.success
    metadata = published_materialization(result).metadata
    assert metadata["load_restated"].value == 1
    old = sim.day_total("20718", first) - 7
    assert f"| 20718 | {first} | {old} | {old + 7} |" in metadata["load_restated_days"].value
    restated = next(m for m in daily_materializations(result) if m.partition == f"20718|{first}")
    assert restated.metadata["total_amd"].value == old + 7
    assert any("1 final campaign-day(s) restated" in e.user_message for e in instance.all_logs(result.run_id))
    stored = env.query(f"SELECT total_amd FROM amd_daily WHERE campaign_id = '20718' AND local_date = '{first}'")
    assert stored.total_amd.tolist() == [old + 7]
