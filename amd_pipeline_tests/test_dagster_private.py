"""Dagster's private names live in one guarded room, and a Dagster that moved them still loads exact rows.

``test_every_feature_finds_its_private_names`` is the upgrade alarm: it fails when a Dagster upgrade moves
a name the room uses. The backfills below make every ``dagster._`` import of the room fail (an import hook
in the child process: Dagster itself keeps its names) and check that the instance opens, the rows equal
the simulator's truth, every partition has its materialisation, and each fallback is said in one line.
"""

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration import dagster_private
from amd_pipeline.orchestration.instance import shipped_instance_yaml
from amd_pipeline.wolkvox.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ["20717", "20718", "20731"]
START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 5)

# The child: Dagster's private imports fail in the room (as if an upgrade had moved them), then the CLI runs.
BLOCKED_CLI = textwrap.dedent("""
    import builtins, sys
    ROOM = "amd_pipeline.orchestration.dagster_private"
    real_import = builtins.__import__

    def moved(name, globals=None, locals=None, fromlist=(), level=0):
        if (globals or {}).get("__name__") == ROOM and name.startswith("dagster._"):
            raise ImportError(f"cannot import name from {name!r} (moved by the test)")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = moved
    from amd_pipeline.cli import main
    sys.argv[0] = "amd-pipeline"
    main()
""")


def test_every_feature_finds_its_private_names():
    """Fails when a Dagster upgrade moves a private name: read the room's table, then fix or drop the feature."""
    assert set(dagster_private.FALLBACK) == {"batched_event_log", "partition_events", "metadata", "run_files"}
    assert [feature for feature in dagster_private.FALLBACK if not dagster_private.available(feature)] == []
    assert dagster_private.MISSING == {}


def test_the_private_names_are_imported_on_first_use_not_with_the_definitions():
    """Loading the code location imports no SQLite storage module (0.4 s; the PostgreSQL profile never needs it)."""
    script = (
        "import sys, amd_pipeline.orchestration.location as location\n"
        "location.build_location()\n"
        "print(sorted(m for m in sys.modules if m.startswith('dagster._core.storage.runs.sqlite')))\n"
    )
    env = {**os.environ, "AMD_OPERATIONS_DIR": str(ROOT / "amd_pipeline" / "defs")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_module_outside_the_room_names_dagsters_private_modules():
    outside = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "amd_pipeline").rglob("*.py"))
        if path.name != "dagster_private.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "dagster._" in line
    ]
    assert outside == []


def blocked_backfill(sim: Simulator, tmp_path: Path, home: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_HOME"))}
    env.update(
        WOLKVOX_BASE_URL=sim.url,
        WOLKVOX_TOKEN=sim.config.token,
        AMD_DUCKDB_PATH=str(tmp_path / "data" / "amd.duckdb"),
        AMD_CAMPAIGNS=",".join(CAMPAIGNS),
        DAGSTER_HOME=str(home),
        AMD_START_DATE="2026-01-01",
        AMD_LOCK_DIR=str(tmp_path / "locks"),
        AMD_OPERATIONS_DIR=str(tmp_path / "no_operations"),
        **extra,
    )
    (tmp_path / "no_operations").mkdir(exist_ok=True)
    args = [sys.executable, "-c", BLOCKED_CLI, "backfill", "--start", str(START), "--end", str(END)]
    return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def assert_exact_and_materialised(sim: Simulator, tmp_path: Path, home: Path, done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr
    rows = AmdStore(str(tmp_path / "data" / "amd.duckdb")).query(
        "SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL"
    )
    assert len(rows) == len(CAMPAIGNS) * 5
    assert all(r.total_amd == sim.day_total(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("amd_daily"), limit=1000).records
        assert sorted({r.partition_key for r in records}) == sorted(
            f"{c}|{START + dt.timedelta(days=i)}" for c in CAMPAIGNS for i in range(5)
        )
        assert all(r.asset_materialization.metadata["total_amd"].value >= 0 for r in records)  # own metadata
    notices = [line for line in done.stderr.splitlines() if line.startswith("amd_pipeline: Dagster")]
    assert len(notices) == len(set(notices))  # each said once
    return notices


@pytest.mark.slow
def test_the_shipped_instance_opens_and_loads_exact_rows_when_every_private_name_moved(sim, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(shipped_instance_yaml())
    done = blocked_backfill(sim, tmp_path, home)
    notices = assert_exact_and_materialised(sim, tmp_path, home, done)
    said = "\n".join(notices)
    for fallback in ("stock SQLite storage", "logged after its step", "add_asset_metadata"):
        assert fallback in said, done.stderr
    assert sim.stats()["overlaps"] == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_the_production_instance_loads_exact_rows_when_every_private_name_moved(sim, tmp_path, pg_home):
    done = blocked_backfill(sim, tmp_path, pg_home)
    notices = assert_exact_and_materialised(sim, tmp_path, pg_home, done)
    said = "\n".join(notices)
    assert "logged after its step" in said and "add_asset_metadata" in said, done.stderr
    assert "stock SQLite storage" not in said  # the production profile names its own storage
