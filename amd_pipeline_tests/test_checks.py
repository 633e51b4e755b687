"""The asset checks' verdicts on hand-made files (the checks read the working file read-only)."""

import datetime as dt

import dagster as dg

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.build import build_definitions
from amd_pipeline.orchestration.checks import unusual_days_result
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
