"""The asset checks' verdicts on hand-made files (the checks read the working file read-only)."""

import datetime as dt

import dagster as dg

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.checks import CHECKS, unusual_days_result
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline_tests.sample import make_planted_store


def test_the_unusual_days_check_warns_with_the_planted_days(tmp_path):
    store, first = make_planted_store(tmp_path / "amd.duckdb")
    result = unusual_days_result(store, first + dt.timedelta(days=70))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["unusual_days"].value == 2
    table = result.metadata["unusual"].value
    assert (
        f"| 1 | {first + dt.timedelta(days=60)} | 300 |" in table
        and f"| 1 | {first + dt.timedelta(days=62)} | 0 |" in table
    )
    assert "| 2 |" not in table  # the control campaign, same shape without plants


def test_the_unusual_days_check_passes_on_usual_days_and_on_an_empty_file(tmp_path):
    store, first = make_planted_store(tmp_path / "amd.duckdb")
    conn = store.connect()
    conn.execute("DELETE FROM amd_daily WHERE campaign_id = '1'")  # the control campaign alone
    conn.close()
    assert unusual_days_result(store, first + dt.timedelta(days=70)).passed
    assert unusual_days_result(AmdStore(tmp_path / "none.duckdb"), first).passed


def test_the_check_is_on_amd_daily_in_the_definitions():
    defs = build_definitions(DefinitionSettings())
    keys = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert "amd_daily_unusual_days" in keys


def run_checks(tmp_path, monkeypatch, names: list[str]) -> dg.ExecuteInProcessResult:
    """The selected checks of amd_daily, run without the asset on the planted file."""
    make_planted_store(tmp_path / "amd.working.duckdb")
    monkeypatch.setenv("AMD_DUCKDB_PATH", str(tmp_path / "amd.duckdb"))
    defs = build_definitions(DefinitionSettings(start_date=dt.date(2026, 1, 1)))
    keys = [dg.AssetCheckKey(dg.AssetKey("amd_daily"), name) for name in names]
    job = dg.Definitions.merge(
        defs, dg.Definitions(jobs=[dg.define_asset_job("checks", selection=dg.AssetSelection.checks(*keys))])
    ).resolve_job_def("checks")
    with dg.instance_for_test() as instance:
        return job.execute_in_process(instance=instance, raise_on_error=False)


def test_the_four_checks_run_in_one_step(tmp_path, monkeypatch):
    # One step, not four: each check step makes Dagster list every partition of amd_daily (53,000 keys
    # at 50 campaigns since 2024), so four steps listed them four times.
    result = run_checks(tmp_path, monkeypatch, list(CHECKS))
    steps = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert len(steps) == 1
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(CHECKS)
    assert evaluations["amd_daily_totals_non_negative"].passed
    assert evaluations["amd_daily_one_row_per_key"].passed
    assert not evaluations["amd_daily_unusual_days"].passed  # the planted days
    assert evaluations["amd_daily_unusual_days"].severity == dg.AssetCheckSeverity.WARN


def test_one_check_runs_on_its_own(tmp_path, monkeypatch):
    result = run_checks(tmp_path, monkeypatch, ["amd_daily_totals_non_negative"])
    assert result.success
    assert [e.check_name for e in result.get_asset_check_evaluations()] == ["amd_daily_totals_non_negative"]
