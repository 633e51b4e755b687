"""`dg` from the project root ([tool.dg] in pyproject.toml) loads the code location and lists, name for name,
the definitions written out here: a dropped asset, check, job, schedule, sensor or resource fails."""

import json
import os
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
