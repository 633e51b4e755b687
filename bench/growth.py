"""Instance growth under the refresh schedule, and what amd_instance_cleanup keeps it at.

    python bench/growth.py --campaigns 50 --runs 20 --profiles sqlite,postgres

Launches refreshes as the daemon does, prunes, launches as many again and prunes again, per profile;
docs/performance.md ("Bounded growth") says what it measures and what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from processes import ROOT

sys.path.insert(0, str(ROOT))

import dagster as dg
from instances import du_bytes, postgres_home

from amd_pipeline.core.settings import DEFAULT_REFRESH_CRON, DefinitionSettings
from amd_pipeline.orchestration.build import AMD_DAILY_JOB
from amd_pipeline.orchestration.cadence import ticks_per_day
from amd_pipeline.orchestration.instance import prepare_home
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline.orchestration.retention import prune_runs
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, many_campaigns
from amd_pipeline_tests.pg_cluster import cluster


def refresh(defs: dg.Definitions, instance: dg.DagsterInstance, at: dt.datetime) -> float:
    """One refresh as the daemon launches it at ``at`` (the schedule's tick, then its run); its seconds."""
    repo = defs.get_repository_def()
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=repo, resources=repo.get_top_level_resources()
    ) as context:
        [request] = defs.get_schedule_def("amd_daily_refresh").evaluate_tick(context).run_requests
    started = time.perf_counter()
    result = defs.resolve_job_def(AMD_DAILY_JOB).execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    return time.perf_counter() - started


def measure(profile: str, campaigns: int, runs: int, workdir: Path, pg) -> dict:
    """Two rounds of ``runs`` refreshes on a fresh instance of ``profile``, each followed by a pruning."""
    home = workdir / f"home-{profile}"
    home.mkdir()
    if profile == "postgres":
        url = postgres_home(home, pg)
        os.environ["DAGSTER_PG_URL"] = url
        size = lambda: pg.database_bytes(url)  # noqa: E731
    else:
        prepare_home(home)
        size = lambda: du_bytes(home)  # noqa: E731
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["AMD_DUCKDB_PATH"] = str(workdir / f"{profile}.duckdb")
    defs = build_definitions(DefinitionSettings.from_env())
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("campaign", [c.campaign_id for c in many_campaigns(campaigns)])
    now = dt.datetime.now(dt.UTC)
    refresh(defs, instance, now)  # the first of the day also reads yesterday; the steady state starts after
    start = size()
    seconds = [refresh(defs, instance, now + dt.timedelta(minutes=5 * (i + 1))) for i in range(runs)]
    grown = size() - start
    first = prune_runs(instance, keep_days=0, now=now + dt.timedelta(days=30))
    after_prune = size()
    for i in range(runs):
        refresh(defs, instance, now + dt.timedelta(minutes=5 * (runs + i + 1)))
    second_round = size() - after_prune
    second = prune_runs(instance, keep_days=0, now=now + dt.timedelta(days=30))
    end = size()
    instance.dispose()
    per_run = grown / runs
    return {
        "profile": profile,
        "run_seconds": sorted(seconds)[len(seconds) // 2],
        "per_run": per_run,
        "per_day": per_run * ticks_per_day(DEFAULT_REFRESH_CRON, "America/Bogota"),
        "first_prune": first.deleted,
        "after_first_prune": after_prune - start,
        "second_round": second_round,
        "second_prune": second.deleted,
        "end_vs_start": end - start,
    }


def main() -> None:
    """Measure each profile of ``--profiles`` and print one Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaigns", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20, help="refresh runs per round")
    parser.add_argument("--profiles", default="sqlite,postgres")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="amd-growth-"))
    config = SimConfig(token="bench-token", campaigns=many_campaigns(args.campaigns), daily_quota=10_000_000)
    ticks = ticks_per_day(DEFAULT_REFRESH_CRON, "America/Bogota")
    rows = []
    with Simulator(config) as sim, contextlib.ExitStack() as stack:
        os.environ.update(
            WOLKVOX_BASE_URL=sim.url,
            WOLKVOX_TOKEN=config.token,
            WOLKVOX_DAILY_QUOTA="10000000",
            AMD_LOCK_DIR=str(workdir / "locks"),
            AMD_START_DATE="2026-01-01",
        )
        pg = stack.enter_context(cluster()) if "postgres" in args.profiles else None
        for profile in args.profiles.split(","):
            print(f"{profile}: {args.runs} refreshes x 2 rounds at {args.campaigns} campaigns ...", file=sys.stderr)
            rows.append(measure(profile, args.campaigns, args.runs, workdir, pg))
    shutil.rmtree(workdir, ignore_errors=True)
    mb = 1024 * 1024
    print(f"\nRefresh runs at {args.campaigns} campaigns, default cadence {DEFAULT_REFRESH_CRON} = {ticks} runs a day")
    header = "| profile | run (median) | growth per refresh run | per day | after pruning round 1 | round 2 grew |"
    print(header + " end vs start |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['profile']} | {r['run_seconds']:.2f} s | {r['per_run'] / 1024:.0f} KB | {r['per_day'] / mb:.1f} MB "
            f"| {r['after_first_prune'] / mb:+.1f} MB ({r['first_prune']} runs deleted) "
            f"| {r['second_round'] / mb:+.1f} MB | {r['end_vs_start'] / mb:+.1f} MB ({r['second_prune']} deleted) |"
        )


if __name__ == "__main__":
    main()
