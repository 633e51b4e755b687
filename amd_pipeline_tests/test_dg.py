"""`dg` from the project root ([tool.dg] in pyproject.toml) loads the code location and lists, name for name,
the definitions written out here: a dropped asset, check, job, schedule, sensor or resource fails."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).parent / "dg")

# What the code location defines (amd_pipeline/orchestration/build.py) with every setting at its
# default (amd_pipeline/core/settings.py): written out, not asked of the code, so that losing one
# from build.py is not lost on both sides of the comparison.
EXPECTED = {
    "assets": ["amd_daily", "amd_published"],
    "asset_checks": [
        "amd_daily:amd_daily_complete",
        "amd_daily:amd_daily_one_row_per_key",
        "amd_daily:amd_daily_totals_non_negative",
        "amd_daily:amd_daily_unusual_days",
    ],
    "jobs": ["amd_daily_job", "amd_instance_cleanup"],
    "schedules": [
        ("amd_daily_refresh", "*/5 * * * *"),  # AMD_REFRESH_CRON's default
        ("amd_daily_restate", "30 4 * * *"),  # AMD_RESTATE_CRON's default
        ("amd_instance_cleanup", "40 3 * * *"),  # AMD_CLEANUP_CRON's default
    ],
    "sensors": ["campaign_partitions"],
    "resources": ["amd_store", "campaign_source", "retention", "wolkvox"],
}


def dg(*args: str, home: Path) -> subprocess.CompletedProcess:
    # No AMD_* or WOLKVOX_* setting from the caller's shell: the crons (and the rest) are the defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMD_", "WOLKVOX_"))}
    env.update(HOME=str(home), DAGSTER_HOME=str(home))
    return subprocess.run([DG, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def listed_by_dg(out: str) -> dict[str, list]:
    listed = json.loads(out)
    return {
        "assets": sorted(a["asset_key"] for a in listed["assets"]),
        "asset_checks": sorted(c["key"] for c in listed["asset_checks"]),
        "jobs": sorted(j["name"] for j in listed["jobs"]),
        "schedules": sorted((s["name"], s["cron_schedule"]) for s in listed["schedules"]),
        "sensors": sorted(s["name"] for s in listed["sensors"]),
        "resources": sorted(r["name"] for r in listed["resources"]),
    }


@pytest.mark.slow
def test_dg_checks_and_lists_the_definitions_of_the_code_location(tmp_path):
    checked = dg("check", "defs", home=tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr

    listed = dg("list", "defs", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert listed_by_dg(listed.stdout) == EXPECTED


@pytest.mark.slow
def test_an_operation_scaffolded_with_dg_is_listed_by_dg_and_loads_with_its_first_backfill(tmp_path):
    # A copy of the project's pyproject.toml is a project root of its own: `dg scaffold defs` writes the
    # folder there (amd_pipeline/defs/<id>), not into this checkout, which other tests are loading meanwhile.
    # The code is the installed package's, unchanged; AMD_OPERATIONS_DIR points it at the new folder.
    from amd_pipeline.core.store import AmdStore
    from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, truth_for_day
    from amd_pipeline_tests import forkserver

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "amd_pipeline" / "defs").mkdir(parents=True)  # as the checkout has it
    with Simulator(SimConfig(token="SECRET-third-" + os.urandom(6).hex(), operation="third_lim")) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AMD_", "WOLKVOX_"))}
        env.update(
            HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path / "home"), VIRTUAL_ENV=str(Path(sys.executable).parents[1])
        )
        scaffolded = subprocess.run(
            [DG, "scaffold", "defs", "amd_pipeline.WolkvoxOperation", "third_lim", "--base-url", sim.url,
             "--token-env", "WOLKVOX_TOKEN_THIRD", "--timezone", "America/Lima", "--start-date", "2026-10-01"],
            capture_output=True, text=True, timeout=300, cwd=project, env=env,
        )  # fmt: skip
        assert scaffolded.returncode == 0, scaffolded.stderr[-3000:]
        folder = project / "amd_pipeline" / "defs"
        assert (folder / "third_lim" / "defs.yaml").exists()
        env.update(AMD_OPERATIONS_DIR=str(folder), WOLKVOX_TOKEN_THIRD=sim.config.token)
        listed = subprocess.run(
            [DG, "list", "defs", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
        )
        assert listed.returncode == 0, listed.stderr[-3000:]
        found = listed_by_dg(listed.stdout)
        assert "third_lim/amd_daily" in found["assets"]
        assert ("third_lim__amd_daily_refresh", "*/5 * * * *") in found["schedules"]
        assert "third_lim__campaign_partitions" in found["sensors"]

        env.update(AMD_DUCKDB_PATH=str(tmp_path / "amd.duckdb"), AMD_LOCK_DIR=str(tmp_path / "locks"))
        loaded = forkserver.run(
            ["backfill", "--start", "2026-10-01", "--end", "2026-10-07", "--quiet"], env=env, cwd=tmp_path
        )
        assert loaded.returncode == 0, loaded.stderr[-3000:]
    rows = AmdStore(tmp_path / "amd.duckdb").query(
        "SELECT operation, campaign_id, local_date, total_amd FROM amd_daily"
    )
    assert set(rows.operation) == {"third_lim"}
    assert len(rows) == 3 * 7  # the simulator's three predictive campaigns, discovered
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date(), "third_lim") for r in rows.itertuples())
