"""Backfill benchmark: the CLI path and the UI path against the simulator, with the token's floor.

    python bench/backfill.py --latency-ms 200                       # CLI 3 x 60 days, off and auto
    python bench/backfill.py --latency-ms 0 --paths cli,memory      # per-window overhead, memory at 3 x 365
    python bench/backfill.py --latency-ms 200 --paths ui --ui-days 120

Floor = windows x L: what one-request-at-a-time per campaign and window cannot beat. With
``campaign_id=all`` the pipeline makes fewer calls than windows, so it can beat that floor.
Every run starts on a warmed-up DAGSTER_HOME and an empty DuckDB file, checks the DuckDB
contents against the simulator's ground truth, and reads the simulator's overlap count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import (
    CAMPAIGNS,
    CLI,
    ROOT,
    SimProcess,
    bench_env,
    days_span,
    free_port,
    graphql,
    last_answer_taken,
    machine,
    stop_group,
    timed,
    verify,
)


def cli_run(sim: SimProcess, workdir: Path, days: int, campaign_all: str, label: str, latency_ms: float) -> dict:
    home = workdir / f"home-{label}"
    duckdb_path = workdir / f"{label}.duckdb"
    env = bench_env(sim, workdir, home, duckdb_path, campaign_all)
    # Warm-up: create the instance and its sqlite files, as on any machine after the first run.
    warm = days_span(1)
    timed([CLI, "backfill", "--start", str(warm[0]), "--end", str(warm[1]), "--quiet"], env, workdir)
    duckdb_path.unlink()
    # Fixed start-up: a 1-day backfill (3 windows) on the warm home.
    sim.reset()
    one_day = [CLI, "backfill", "--start", str(warm[0]), "--end", str(warm[1]), "--quiet"]
    fixed_wall = timed(one_day, env, workdir)["wall"]
    fixed_calls = sim.stats()["requests"]
    duckdb_path.unlink()
    start, end = days_span(days)
    sim.reset()
    began = time.time()
    run = timed([CLI, "backfill", "--start", str(start), "--end", str(end), "--quiet"], env, workdir)
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
        for e in reversed(logs) if last else logs:
            d = e.dagster_event
            if d and d.event_type_value == kind and (step is None or d.step_key == step):
                return e.timestamp
        raise LookupError(kind)

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
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    records = instance.fetch_materializations(dg.AssetKey("amd_daily"), limit=1).records
    if not records:
        return {}
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs { id status startTime endTime } } } }"""


def ui_run(sim: SimProcess, workdir: Path, days: int, campaign_all: str, latency_ms: float) -> dict:
    import dagster as dg

    home = workdir / "home-ui"
    duckdb_path = workdir / "ui.duckdb"
    env = bench_env(sim, workdir, home, duckdb_path, campaign_all)
    os.environ["DAGSTER_HOME"] = str(home)
    from amd_pipeline.orchestration.instance import get_instance, prepare_home

    instance = get_instance(prepare_home(home))
    instance.add_dynamic_partitions("campaign", CAMPAIGNS)
    port = free_port()
    dev = subprocess.Popen(
        [CLI, "dev", "--port", str(port), "--workspace", str(ROOT / "workspace.yaml")],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            try:
                loaded = graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")
                entries = loaded["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        time.sleep(5)  # let the daemon finish its first ticks
        start, _ = days_span(days)
        names = [
            str(dg.MultiPartitionKey({"campaign": c, "day": (start + dt.timedelta(days=i)).isoformat()}))
            for c in CAMPAIGNS
            for i in range(days)
        ]
        sim.reset()
        launched = time.time()
        answer = graphql(port, LAUNCH, {"p": {"partitionNames": names, "assetSelection": [{"path": ["amd_daily"]}]}})
        backfill_id = answer["data"]["launchPartitionBackfill"]["backfillId"]
        while True:
            status = graphql(port, STATUS, {"id": backfill_id})["data"]["partitionBackfillOrError"]
            runs = status["runs"]
            terminal = {"SUCCESS", "FAILURE", "CANCELED"}
            if status["status"] != "REQUESTED" and runs and all(r["status"] in terminal for r in runs):
                break
            if time.time() - launched > 3600:
                raise RuntimeError("UI backfill did not finish within an hour")
            time.sleep(0.5)
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
    print(" | ".join(columns))
    for r in results:
        print(" | ".join(str(r.get(c, "")) for c in columns))
    print()
    for r in results:
        if r.get("phases_s"):
            print(f"{r['path']} ({r['windows']} windows): " + "; ".join(f"{k} {v}" for k, v in r["phases_s"].items()))


if __name__ == "__main__":
    main()
