import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.definitions import defs
from amd_pipeline.orchestration.instance import pool_limit_configured, prepare_home, shipped_instance_yaml
from amd_pipeline.orchestration.location import build_definitions

ROOT = Path(__file__).resolve().parents[1]


def test_the_definitions_load_with_the_asset_its_job_sensor_and_resources():
    definitions = build_definitions(DefinitionSettings())
    repo = definitions.get_repository_def()
    assert sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()) == ["amd_daily", "amd_published"]
    assert repo.has_job("amd_daily_job")
    assert repo.has_sensor_def("campaign_partitions")
    assert set(repo.get_top_level_resources()) >= {"wolkvox", "amd_store", "campaign_source"}


def test_the_asset_runs_in_the_token_pool_one_run_per_range():
    asset = build_definitions(DefinitionSettings()).get_assets_def("amd_daily")
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    assert {spec.pool for spec in [asset.op]} == {"wolkvox_token"}


def test_timezone_and_start_date_shape_the_partitions(monkeypatch):
    monkeypatch.setenv("WOLKVOX_TIMEZONE", "America/Lima")
    monkeypatch.setenv("AMD_START_DATE", "2026-03-01")
    days = defs().get_assets_def("amd_daily").partitions_def.get_partitions_def_for_dimension("day")
    assert days.timezone == "America/Lima"
    assert days.start.date().isoformat() == "2026-03-01"


@pytest.mark.parametrize(("name", "value"), [("WOLKVOX_TIMEZONE", "Mars/Olympus"), ("AMD_START_DATE", "yesterday")])
def test_bad_definition_settings_are_named(name, value):
    with pytest.raises(ValueError, match=name):
        DefinitionSettings.from_env({name: value})


def test_nothing_happens_at_import():
    """Importing our modules reads no environment variable, opens no file or socket.

    Every module file of the package, sub-packages included, is imported (the walk is checked).
    """
    script = textwrap.dedent("""
        import json, os, sys
        import dagster, pandas, duckdb, requests, yaml  # third-party imports may do what they like
        seen = []
        def ours(depth):
            return "/amd_pipeline/" in sys._getframe(depth + 1).f_code.co_filename
        class Environ(dict):
            def __getitem__(self, k):
                if ours(1): seen.append(("env", k))
                return super().__getitem__(k)
            def get(self, k, d=None):
                if ours(1): seen.append(("env", k))
                return super().get(k, d)
            def __contains__(self, k):
                if ours(1): seen.append(("env", k))
                return super().__contains__(k)
        os.environ = Environ(os.environ)
        def hook(event, args):
            if event in ("open", "socket.connect", "socket.bind", "subprocess.Popen") and ours(1):
                seen.append((event, str(args[0])))
        sys.addaudithook(hook)
        import importlib, pkgutil, amd_pipeline
        imported = ["amd_pipeline"]
        for module in pkgutil.walk_packages(amd_pipeline.__path__, 'amd_pipeline.'):
            if module.name != 'amd_pipeline.__main__':  # running it is the command itself
                importlib.import_module(module.name)
                imported.append(module.name)
        print(json.dumps({"seen": seen, "imported": imported}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["seen"] == []
    package = ROOT / "amd_pipeline"
    files = {
        ".".join(("amd_pipeline", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        for path in package.rglob("*.py")
    }
    assert sorted(files - {"amd_pipeline.__main__"}) == sorted(result["imported"])


@pytest.mark.slow
def test_dagster_validates_the_workspace(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful" in out.stderr + out.stdout


def test_the_shipped_instance_limits_the_token_pool_and_frees_dead_runs_slots(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = prepare_home(tmp_path / "home")
    assert (home / "dagster.yaml").read_text() == shipped_instance_yaml()
    assert pool_limit_configured(home)
    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.run_monitoring_enabled


def test_a_backfill_makes_one_run_per_group_of_adjacent_campaigns():
    import datetime as dt

    from amd_pipeline.orchestration.runs import campaign_groups, ranged_runs

    assert campaign_groups(["1", "2", "3", "4"], ["1", "2", "3", "4"]) == [["1", "2", "3", "4"]]
    assert campaign_groups(["1", "2", "3", "4"], ["4", "1", "2"]) == [["1", "2"], ["4"]]
    runs = ranged_runs(["1", "2", "3"], ["1", "3"], dt.date(2026, 1, 1), dt.date(2026, 1, 5))
    assert [r.tags()["dagster/asset_partition_range_end"] for r in runs] == ["1|2026-01-05", "3|2026-01-05"]
