"""Backfill benchmark: the CLI path and the UI path against the simulator, with the token's floor.

    python bench/backfill.py --latency-ms 200                       # CLI 3 x 60 days, off and auto
    python bench/backfill.py --latency-ms 0 --paths cli,memory      # per-window overhead, memory at 3 x 365
    python bench/backfill.py --latency-ms 200 --paths ui --ui-days 120

Each run starts on a warmed-up DAGSTER_HOME and an empty DuckDB file and is checked against the
simulator's ground truth; docs/performance.md ("Speed") says what it reports and what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

from environments import bench_env
from event_log import event_time, last_answer_taken
from loopback import free_port
from output import machine, print_rows
from processes import backfill_argv, days_span, start_dev, stop_group, timed
from simulators import CAMPAIGNS, SimProcess
from truth import verify
from webserver import launch_backfill, wait_backfills, wait_loaded


def cli_run(sim: SimProcess, workdir: Path, days: int, campaign_all: str, label: str, latency_ms: float) -> dict:
    """One measured CLI backfill of ``days`` days on a warmed-up home, with its fixed start-up measured first."""
    home = workdir / f"home-{label}"
    duckdb_path = workdir / f"{label}.duckdb"
    env = bench_env(sim, workdir, home, duckdb_path, campaign_all)
    # Warm-up: create the instance and its sqlite files, as on any machine after the first run.
    warm = days_span(1)
    timed(backfill_argv(*warm), env, workdir)
    duckdb_path.unlink()
    # Fixed start-up: a 1-day backfill (3 windows) on the warm home.
    sim.reset()
    fixed_wall = timed(backfill_argv(*warm), env, workdir)["wall"]
    fixed_calls = sim.stats()["requests"]
    duckdb_path.unlink()
    start, end = days_span(days)
    sim.reset()
    began = time.time()
    run = timed(backfill_argv(start, end), env, workdir)
    wall, rss, code, err = run["wall"], run["rss_mb"], run["code"], run["stderr"]
    stats = sim.stats()
    windows = len(CAMPAIGNS) * days
    floor = windows * latency_ms / 1000
    fixed = fixed_wall - fixed_calls * latency_ms / 1000
    load_seconds = last_metadata(home).get("load_seconds")
    per_window_ms = (wall - fixed - stats["requests"] * latency_ms / 1000) / windows * 1000
    return {
        "path": f"CLI backfill, campaign_id=all {campaign_all}",
        "windows": windows,
        "calls": stats["requests"],
        "wall_s": round(wall, 2),
        "floor_s": round(floor, 2),
        "ratio": round(wall / floor, 3) if floor else None,
        "fixed_startup_s": round(fixed, 2),
        "overhead_per_window_ms": round(per_window_ms, 2),
        # Inside the step: HTTP beyond L, token lock, parsing, DuckDB batches. The rest of the
        # per-window overhead is Dagster's per-partition events (planned + materialization).
        "pipeline_per_window_ms": round((load_seconds - stats["requests"] * latency_ms / 1000) / windows * 1000, 2)
        if load_seconds is not None
        else None,
        "peak_rss_mb": round(rss, 1),
        "overlaps": stats["overlaps"],
        "check": verify(duckdb_path, windows) if code == 0 else f"FAILED rc={code}: {err}",
        "phases_s": phases(home, began, began + wall) if code == 0 else None,
    }


def phases(home: Path, began: float, ended: float) -> dict[str, float]:
    """The backfill's wall time split along its run's event log (seconds)."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    logs = instance.all_logs(instance.get_runs(limit=1)[0].run_id)

    def at(kind: str, step: str | None = None, last: bool = False) -> float:
        stamp = event_time(logs, kind, step, last)
        if stamp is None:
            raise LookupError(kind)
        return stamp

    last_answer = last_answer_taken(logs)
    load_done = at("STEP_SUCCESS", "amd_daily")
    checks_done = at("STEP_SUCCESS", last=True)
    marks = [
        ("start: imports, settings, pre-flight calls, instance, run creation", began, logs[0].timestamp),
        ("run start -> amd_daily step start", logs[0].timestamp, at("STEP_START", "amd_daily")),
        ("calls, parsing, DuckDB (to the last answer taken)", at("STEP_START", "amd_daily"), last_answer),
        ("last batch, its materialisation events, publish (with its trend thumbnail)", last_answer, load_done),
        ("asset-check step", load_done, checks_done),
        ("run end -> process exit", checks_done, ended),
    ]
    return {name: round(b - a, 2) for name, a, b in marks}


def last_metadata(home: Path) -> dict:
    """The metadata of amd_daily's latest materialisation in the instance at ``home``."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    records = instance.fetch_materializations(dg.AssetKey("amd_daily"), limit=1).records
    if not records:
        return {}
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def ui_run(sim: SimProcess, workdir: Path, days: int, campaign_all: str, latency_ms: float) -> dict:
    """One UI backfill through `amd-pipeline dev`: launched over GraphQL, run by the daemon."""
    import dagster as dg

    home = workdir / "home-ui"
    duckdb_path = workdir / "ui.duckdb"
    env = bench_env(sim, workdir, home, duckdb_path, campaign_all)
    os.environ["DAGSTER_HOME"] = str(home)
    from amd_pipeline.orchestration.instance import get_instance, prepare_home

    instance = get_instance(prepare_home(home))
    instance.add_dynamic_partitions("campaign", CAMPAIGNS)
    port = free_port()
    dev = start_dev(port, env, workdir)
    try:
        wait_loaded(port, dev)
        time.sleep(5)  # let the daemon finish its first ticks
        start, _ = days_span(days)
        names = [
            str(dg.MultiPartitionKey({"campaign": c, "day": (start + dt.timedelta(days=i)).isoformat()}))
            for c in CAMPAIGNS
            for i in range(days)
        ]
        sim.reset()
        launched = time.time()
        backfill_id = launch_backfill(port, names, ["amd_daily"])
        runs = wait_backfills(port, {"ui": backfill_id}, launched, 3600, "UI backfill did not finish within an hour")[
            "ui"
        ]
        stats = sim.stats()
        last_end = max(r["endTime"] for r in runs)
        first_start = min(r["startTime"] for r in runs)
        windows = len(CAMPAIGNS) * days
        floor = windows * latency_ms / 1000
        wall = last_end - launched
        return {
            "path": f"UI backfill (GraphQL launchPartitionBackfill + daemon), campaign_id=all {campaign_all}",
            "windows": windows,
            "calls": stats["requests"],
            "runs": len(runs),
            "wall_s": round(wall, 2),
            "floor_s": round(floor, 2),
            "ratio": round(wall / floor, 3) if floor else None,
            "launch_to_first_run_start_s": round(first_start - launched, 2),
            "fetch_and_runs_s": round(last_end - first_start, 2),
            "overlaps": stats["overlaps"],
            "check": verify(duckdb_path, windows) if all(r["status"] == "SUCCESS" for r in runs) else "FAILED runs",
        }
    finally:
        stop_group(dev, timeout=20)


def main() -> None:
    """Run the paths ``--paths`` names, a JSON line each, then the table and the CLI runs' phases."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--days", type=int, default=60, help="days per campaign for the CLI path")
    parser.add_argument("--ui-days", type=int, default=120, help="days per campaign for the UI path")
    parser.add_argument("--memory-days", type=int, default=365, help="days per campaign for the memory check")
    parser.add_argument("--paths", default="cli", help="comma list of: cli, ui, memory")
    parser.add_argument("--campaign-all", default="off,auto", help="modes to run the CLI path with")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="amd-bench-"))
    print(f"machine: {machine()}")
    print(f"simulator latency L = {args.latency_ms:g} ms; workdir {workdir}")
    sim = SimProcess(args.latency_ms)
    results = []
    try:
        paths = args.paths.split(",")
        if "cli" in paths:
            for mode in args.campaign_all.split(","):
                results.append(cli_run(sim, workdir, args.days, mode, f"cli-{mode}", args.latency_ms))
                print(json.dumps(results[-1]), flush=True)
        if "memory" in paths:
            for days in (60, args.memory_days):
                result = cli_run(sim, workdir, days, "off", f"mem-{days}", args.latency_ms)
                result["path"] += f" ({days} days)"
                results.append(result)
                print(json.dumps(results[-1]), flush=True)
        if "ui" in paths:
            results.append(ui_run(sim, workdir, args.ui_days, "auto", args.latency_ms))
            print(json.dumps(results[-1]), flush=True)
    finally:
        sim.stop()
    print()
    columns = [
        "path",
        "windows",
        "calls",
        "wall_s",
        "floor_s",
        "ratio",
        "overhead_per_window_ms",
        "pipeline_per_window_ms",
        "peak_rss_mb",
        "overlaps",
        "check",
    ]
    print_rows(columns, ([r.get(c, "") for c in columns] for r in results))
    print()
    for r in results:
        if r.get("phases_s"):
            print(f"{r['path']} ({r['windows']} windows): " + "; ".join(f"{k} {v}" for k, v in r["phases_s"].items()))


if __name__ == "__main__":
    main()
