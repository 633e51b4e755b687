"""amd_daily run through Dagster, in-process, against the simulator, into a tmp_path DuckDB."""

import datetime as dt

import dagster as dg
import pytest

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration import partition_events
from amd_pipeline.orchestration.build import AMD_DAILY_JOB
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline.orchestration.partitions import day_key
from amd_pipeline.wolkvox.simulator import truth_for_day
from amd_pipeline_tests.conftest import CAMPAIGNS, daily_materializations, published_materialization

START, END = dt.date(2026, 11, 1), dt.date(2026, 11, 10)


@pytest.fixture
def env(pipeline_env, monkeypatch):
    monkeypatch.setenv("WOLKVOX_CAMPAIGN_ALL", "off")
    return pipeline_env


def run(instance, first=CAMPAIGNS[0], last=CAMPAIGNS[-1], start=START, end=END, tags=None) -> dg.ExecuteInProcessResult:
    job = build_definitions(DefinitionSettings()).resolve_job_def(AMD_DAILY_JOB)
    tags = {
        "dagster/asset_partition_range_start": str(day_key(first, start)),
        "dagster/asset_partition_range_end": str(day_key(last, end)),
        **(tags or {}),
    }
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def table(store: AmdStore):
    return store.query(
        "SELECT campaign_id, local_date, total_amd, fetch_status, fetched_at FROM amd_daily ORDER BY ALL"
    )


def test_a_ranged_run_writes_one_row_per_campaign_and_day_equal_to_the_ground_truth(env, instance, sim):
    sim.state.config.faults, sim.state.config.fault_rate = ("500", "html502", "busy", "drop", "code_string"), 0.2
    result = run(instance)
    assert result.success
    rows = table(env)
    assert len(rows) == 3 * 10
    for r in rows.itertuples():
        assert r.total_amd == truth_for_day(r.campaign_id, r.local_date.date())
        assert r.fetch_status == ("fetched" if r.total_amd else "fetched_empty")
    assert sim.stats()["overlaps"] == 0


def test_running_it_again_changes_no_value_and_adds_no_row(env, instance):
    assert run(instance).success
    first = table(env)
    assert run(instance).success
    second = table(env)
    assert len(second) == len(first) == 30
    cols = ["campaign_id", "local_date", "total_amd", "fetch_status"]
    assert second[cols].equals(first[cols])
    assert (second.fetched_at > first.fetched_at).all()


def test_each_partition_carries_its_own_numbers_and_the_publish_carries_the_run(env, instance, sim):
    sim.queue_faults("500")
    result = run(instance, end=START + dt.timedelta(days=1))
    materializations = daily_materializations(result)
    assert len(materializations) == 6
    for m in materializations:
        campaign, day = m.partition.split("|")
        own = {k: v.value for k, v in m.metadata.items()}
        assert set(own) == {"total_amd", "is_final", "fetch_status", "fetched_at"}  # nothing of the run's
        assert own["total_amd"] == truth_for_day(campaign, dt.date.fromisoformat(day)) and own["is_final"]
    published = published_materialization(result).metadata
    assert published["dagster/row_count"].value == 6 and published["campaigns"].value == 3
    assert published["first_day"].value == str(START) and published["size_bytes"].value > 0
    assert published["campaign_days_fetched"].value + published["campaign_days_zero"].value == 6
    chart = published["trend_30_days"].value  # a picture the UI shows: a PNG embedded in markdown
    assert chart.startswith("![AMD per day, last 30 days](data:image/png;base64,iVBORw0KGgo")
    assert published["load_rows_written"].value == 6
    assert published["load_calls"].value == 7 and published["load_retries"].value == 1
    expected = sum(truth_for_day("20717", START + dt.timedelta(days=i)) for i in range(2))
    per_campaign = published["load_per_campaign"].value
    assert "| 20717 | 2 | " in per_campaign and f"| {expected} |" in per_campaign


def test_a_single_partition_run_works(env, instance):
    job = build_definitions(DefinitionSettings()).resolve_job_def(AMD_DAILY_JOB)
    result = job.execute_in_process(instance=instance, partition_key=str(day_key("20718", START)))
    assert result.success
    assert table(env).campaign_id.tolist() == ["20718"]


# Dagster's path (runs the daemon launches) and a CLI run's, whose step logs its partitions during the load.
@pytest.mark.parametrize("events", ["after", "during"])
def test_a_bad_value_fails_the_run_naming_it_while_every_other_window_is_written(env, instance, sim, events):
    sim.state.config.bad_values = {"20718": "1,234"}
    tags = partition_events.run_tags() if events == "during" else {}
    assert bool(tags) == (events == "during")
    result = run(instance, end=START + dt.timedelta(days=2), tags=tags)  # "1,234" for every 20718 window
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "campaign 20718" in message and "2026-11-02" in message and "'1,234'" in message
    rows = table(env)
    assert sorted(set(rows.campaign_id)) == ["20717", "20731"]
    assert len(rows) == 9 - 3  # the three 20718 windows that held the bad value were not written
    # The written windows reach analysts too, and the UI shows that publish.
    [event] = instance.fetch_materializations(dg.AssetKey("amd_published"), limit=10).records
    published = event.asset_materialization.metadata
    assert published["dagster/row_count"].value == 6 and "'1,234'" in published["load_rejected"].value
    assert AmdStore(env.path).query("SELECT count(*) AS n FROM amd_daily").n[0] == 6
    records = instance.fetch_materializations(dg.AssetKey("amd_daily"), limit=100).records
    written = {r.partition_key for r in records}
    assert str(day_key("20718", START + dt.timedelta(days=1))) not in written
    assert str(day_key("20717", START + dt.timedelta(days=1))) in written
    assert len(records) == 6  # each written partition once
    asset = build_definitions(DefinitionSettings()).get_assets_def(dg.AssetKey("amd_daily"))
    keys = [str(day_key(c, START + dt.timedelta(days=d))) for c in CAMPAIGNS for d in range(3)]
    statuses = instance.get_status_by_partition(dg.AssetKey("amd_daily"), keys, asset.partitions_def)
    assert sorted(k for k, s in statuses.items() if s and s.value == "FAILED") == sorted(
        str(day_key("20718", START + dt.timedelta(days=d))) for d in range(3)
    )


def test_a_wrong_token_fails_without_retries_and_the_token_is_not_in_the_events(env, instance, sim, monkeypatch):
    monkeypatch.setenv("WOLKVOX_TOKEN", "SECRET-not-the-right-one")
    result = run(instance, end=START)
    assert not result.success
    assert sim.stats()["requests"] == 1
    text = "\n".join(str(e) for e in result.all_events)
    assert "PLEASE VALIDATE TOKEN" in text
    assert "SECRET-not-the-right-one" not in text


def test_campaign_all_makes_one_call_per_window_for_every_campaign(env, instance, sim, monkeypatch):
    monkeypatch.setenv("WOLKVOX_CAMPAIGN_ALL", "on")
    result = run(instance)
    assert result.success
    assert sim.stats()["calls"] == {"campaign_6:all": 10}
    rows = table(env)
    assert len(rows) == 30
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    metadata = published_materialization(result).metadata
    assert metadata["load_planned_calls"].value == 10 and metadata["load_campaign_all_calls"].value == 10


def test_auto_falls_back_when_the_server_refuses_all_and_remembers_it(env, instance, sim, monkeypatch, tmp_path):
    monkeypatch.setenv("WOLKVOX_CAMPAIGN_ALL", "auto")
    sim.state.config.supports_all = False
    result = run(instance)
    assert result.success
    assert sim.stats()["calls"] == {"campaign_6:all": 1, "campaign_6:one": 30}
    assert any("refused campaign_id=all" in entry.user_message for entry in instance.all_logs(result.run_id))
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in table(env).itertuples())
    assert any(p.name.endswith(".state.json") for p in (tmp_path / "locks").iterdir())
    assert len(table(env)) == 30
    sim.reset()
    assert run(instance).success
    assert sim.stats()["calls"] == {"campaign_6:one": 30}  # no second try of `all`


def test_on_with_a_server_that_refuses_all_fails_clearly(env, instance, sim, monkeypatch):
    monkeypatch.setenv("WOLKVOX_CAMPAIGN_ALL", "on")
    sim.state.config.supports_all = False
    result = run(instance, end=START)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "campaign all" in failure.step_failure_data.error.message


def failure_message(result) -> str:
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message


def test_a_partition_named_all_fails_in_one_sentence_without_calling(env, instance, sim):
    instance.add_dynamic_partitions("campaign", ["all"])
    result = run(instance, first="all", last="all", end=START)
    assert not result.success
    message = failure_message(result)
    assert message.startswith("LoadFailed: campaign partition 'all' is not a campaign id")
    assert "dagster._core" not in message
    assert sim.stats()["requests"] == 0


def test_an_unset_token_fails_the_run_in_one_sentence(env, instance, sim, monkeypatch):
    monkeypatch.delenv("WOLKVOX_TOKEN")
    result = run(instance, end=START)
    assert not result.success
    assert failure_message(result).startswith("LoadFailed: WOLKVOX_TOKEN is not set")
    assert sim.stats()["requests"] == 0


def test_an_unreachable_server_fails_the_run_in_words(env, instance, monkeypatch):
    monkeypatch.setenv("WOLKVOX_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WOLKVOX_MAX_ATTEMPTS", "2")
    result = run(instance, end=START)
    message = failure_message(result)
    assert message.startswith("LoadFailed: could not reach http://127.0.0.1:9 (connection refused, 2 attempts)")
    assert "allow-list" in message and "HTTPConnectionPool" not in message


def test_a_load_in_another_time_zone_than_the_files_refuses_before_calling(env, instance, sim, monkeypatch):
    assert run(instance, end=START).success
    calls = sim.stats()["requests"]
    monkeypatch.setenv("WOLKVOX_TIMEZONE", "Europe/Madrid")
    job = build_definitions(DefinitionSettings.from_env()).resolve_job_def(AMD_DAILY_JOB)
    tags = {
        "dagster/asset_partition_range_start": str(day_key(CAMPAIGNS[0], START)),
        "dagster/asset_partition_range_end": str(day_key(CAMPAIGNS[-1], START)),
    }
    result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert "holds days in America/Bogota, but WOLKVOX_TIMEZONE is Europe/Madrid" in failure_message(result)
    assert sim.stats()["requests"] == calls
    assert len(table(env)) == 3


def test_per_partition_metadata_takes_the_one_step_path(env, instance, monkeypatch):
    # Dagster's public per-partition call lists the run's whole range on every call (O(n^2) for a run:
    # hours at 50 campaigns x 365 days). With it made to fail, a ranged run must still succeed with
    # every partition's own numbers: the pipeline adds them in one step. If a Dagster upgrade moves
    # the step's metadata, this fails (the fallback is the slow public call).
    def refuse(*args, **kwargs):
        raise AssertionError("the per-call path was used")

    monkeypatch.setattr(dg.AssetExecutionContext, "add_asset_metadata", refuse)
    result = run(instance, end=START + dt.timedelta(days=1))
    assert result.success
    totals = {m.partition: m.metadata["total_amd"].value for m in daily_materializations(result)}
    assert totals == {
        f"{c}|{START + dt.timedelta(days=i)}": truth_for_day(c, START + dt.timedelta(days=i))
        for c in CAMPAIGNS
        for i in range(2)
    }


def test_materializing_amd_published_republishes_without_a_load(env, instance, sim, monkeypatch):
    assert run(instance, end=START + dt.timedelta(days=1)).success
    calls = sim.stats()["requests"]
    env.path.unlink()  # the analysts' copy is gone
    monkeypatch.setenv("AMD_PUBLISHED_STORAGE_VERSION", "1.4")
    job = (
        build_definitions(DefinitionSettings())
        .resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={dg.AssetKey("amd_published")})
    )
    refused = job.execute_in_process(instance=instance, raise_on_error=False)
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert (
        "AMD_PUBLISHED_STORAGE_VERSION='1.4' is not a DuckDB storage version" in failure.step_failure_data.error.message
    )
    assert not env.path.exists()
    monkeypatch.setenv("AMD_PUBLISHED_STORAGE_VERSION", "v1.4.0")
    job = (
        build_definitions(DefinitionSettings())
        .resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={dg.AssetKey("amd_published")})
    )
    result = job.execute_in_process(instance=instance)
    assert result.success
    assert sim.stats()["requests"] == calls  # no call
    assert AmdStore(env.path).query("SELECT count(*) AS n FROM amd_daily").n[0] == 6
    [latest, *_] = instance.fetch_materializations(dg.AssetKey("amd_published"), limit=5).records
    assert latest.asset_materialization.metadata["republished_without_load"].value is True
    assert latest.run_id == result.run_id
