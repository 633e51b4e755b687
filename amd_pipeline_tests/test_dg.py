"""`dg` from the project root ([tool.dg] in pyproject.toml) loads the code location the code defines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amd_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).parent / "dg")


def dg(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "DAGSTER_HOME": str(home)}
    return subprocess.run([DG, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def listed_by_the_code() -> dict[str, list]:
    """What the @dg.definitions function gives, in the shape `dg list defs --json` prints it."""
    definitions = defs()
    repository = definitions.get_repository_def()
    return {
        "assets": sorted(key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()),
        "asset_checks": sorted(key.to_user_string() for key in repository.asset_graph.asset_check_keys),
        "jobs": sorted(job.name for job in repository.get_all_jobs() if not job.name.startswith("__")),
        "schedules": sorted((s.name, s.cron_schedule) for s in repository.schedule_defs),
        "sensors": sorted(s.name for s in repository.sensor_defs),
        "resources": sorted(definitions.resources),
    }


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
def test_dg_checks_and_lists_the_definitions_the_code_builds(tmp_path):
    checked = dg("check", "defs", home=tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr

    listed = dg("list", "defs", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    expected = listed_by_the_code()
    assert expected["assets"] and expected["schedules"] and expected["sensors"]  # not two empty lists
    assert listed_by_dg(listed.stdout) == expected
