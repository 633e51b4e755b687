import dagster as dg
import pytest

from amd_pipeline.definitions import build_definitions
from amd_pipeline.settings import DefinitionSettings


@pytest.fixture
def defs_env(monkeypatch, sim, token, tmp_path):
    monkeypatch.setenv("WOLKVOX_TOKEN", token)
    monkeypatch.setenv("WOLKVOX_BASE_URL", sim.url)
    monkeypatch.setenv("AMD_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("AMD_CAMPAIGNS", raising=False)


def evaluate(instance):
    defs = build_definitions(DefinitionSettings())
    sensor = defs.get_sensor_def("campaign_partitions")
    repo = defs.get_repository_def()
    context = dg.build_sensor_context(instance=instance, repository_def=repo, resources=repo.get_top_level_resources())
    return sensor.evaluate_tick(context)


def test_the_sensor_adds_configured_campaigns_once(defs_env, monkeypatch, sim):
    monkeypatch.setenv("AMD_CAMPAIGNS", "101, 102")
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["101", "102"]]
        instance.add_dynamic_partitions("campaign", ["101", "102"])
        assert evaluate(instance).skip_message == "no new campaigns"
    assert sim.stats()["requests"] == 0  # a configured list costs no API call


def test_without_a_list_the_sensor_discovers_predictive_campaigns(defs_env):
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["20717", "20718", "20731"]]
