import dagster as dg
import pytest

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.location import build_definitions


@pytest.fixture
def defs_env(monkeypatch, sim, token, tmp_path):
    monkeypatch.setenv("WOLKVOX_TOKEN", token)
    monkeypatch.setenv("WOLKVOX_BASE_URL", sim.url)
    monkeypatch.setenv("AMD_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("AMD_DUCKDB_PATH", str(tmp_path / "data" / "amd.duckdb"))  # never the project's data/
    monkeypatch.delenv("AMD_CAMPAIGNS", raising=False)
    monkeypatch.delenv("AMD_WORKING_DUCKDB_PATH", raising=False)


def evaluate(instance):
    defs = build_definitions(DefinitionSettings())
    sensor = defs.get_sensor_def("campaign_partitions")
    repo = defs.get_repository_def()
    with dg.build_sensor_context(
        instance=instance, repository_def=repo, resources=repo.get_top_level_resources()
    ) as context:
        return sensor.evaluate_tick(context)


def test_the_sensor_adds_configured_campaigns_once(defs_env, monkeypatch, sim):
    monkeypatch.setenv("AMD_CAMPAIGNS", "101, 102")
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["101", "102"]]
        instance.add_dynamic_partitions("campaign", ["101", "102"])
        assert evaluate(instance).skip_message == "no new campaigns"
    assert sim.stats()["requests"] == 0  # a configured list costs no API call


def test_without_a_list_the_sensor_discovers_predictive_campaigns(defs_env, sim, tmp_path):
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["20717", "20718", "20731"]]
    # The discovery's calls are in the request ledger too, as the budget and the server count them.
    ledger = AmdStore(tmp_path / "data" / "amd.working.duckdb").query("SELECT source, api FROM api_requests")
    assert sorted(zip(ledger.source, ledger.api, strict=True)) == [("sensor", "campaigns"), ("sensor", "token_info")]
    assert sim.stats()["requests"] == 2


def test_without_a_token_the_sensor_skips_naming_the_setting(defs_env, monkeypatch, sim):
    monkeypatch.delenv("WOLKVOX_TOKEN")
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
    assert result.skip_message == (
        "cannot list campaigns: WOLKVOX_TOKEN is not set: export the operation's wolkvox-token as WOLKVOX_TOKEN"
    )
    assert sim.stats()["requests"] == 0


def test_without_a_server_the_sensor_skips_naming_the_setting(defs_env, monkeypatch):
    monkeypatch.delenv("WOLKVOX_BASE_URL")
    monkeypatch.delenv("WOLKVOX_SERVER", raising=False)
    with dg.instance_for_test() as instance:
        assert "neither WOLKVOX_SERVER nor WOLKVOX_BASE_URL is set" in evaluate(instance).skip_message


def test_an_unreachable_server_makes_the_sensor_skip_in_words(defs_env, monkeypatch):
    monkeypatch.setenv("WOLKVOX_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WOLKVOX_MAX_ATTEMPTS", "1")
    with dg.instance_for_test() as instance:
        message = evaluate(instance).skip_message
    assert message.startswith(
        "cannot list campaigns: could not reach http://127.0.0.1:9 (connection refused, 1 attempt)"
    )
