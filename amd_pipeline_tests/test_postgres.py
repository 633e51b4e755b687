"""The production profile (deploy/dagster.yaml) against a real PostgreSQL: the pool keeps processes apart.

Each process gets its own token lock folder, as processes on separate machines would: only the pool
slots in PostgreSQL stand between them and two requests in flight on one token.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import psycopg2
import pytest

from amd_pipeline.simulator import SimConfig, Simulator, truth_for_day

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "amd-pipeline")
START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 12)
CAMPAIGNS = ["20717", "20718", "20731"]

REFRESH = textwrap.dedent("""
    # As the daemon does: evaluate the refresh schedule's tick, then run its request, in another process.
    import datetime as dt, os, sys
    import dagster as dg
    from amd_pipeline.definitions import AMD_DAILY_JOB, build_definitions
    from amd_pipeline.settings import DefinitionSettings
    defs = build_definitions(DefinitionSettings.from_env())
    repo = defs.get_repository_def()
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime.now(dt.UTC), repository_def=repo,
        resources=repo.get_top_level_resources(),
    ) as context:
        [request] = defs.get_schedule_def("amd_daily_refresh").evaluate_tick(context).run_requests
    job = defs.resolve_job_def(AMD_DAILY_JOB)
    sys.exit(0 if job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False).success else 1)
""")


def env_for(sim: Simulator, tmp_path: Path, home: Path, locks: str, shared_lock: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_"))}
    env.update(
        WOLKVOX_BASE_URL=sim.url,
        WOLKVOX_TOKEN=sim.config.token,
        AMD_DUCKDB_PATH=str(tmp_path / "data" / "amd.duckdb"),
        DAGSTER_HOME=str(home),
        AMD_START_DATE="2026-01-01",
        AMD_LOCK_DIR=str(tmp_path / locks),  # one per process: as if each ran on its own machine
        WOLKVOX_BACKOFF_BASE_MS="5",
        WOLKVOX_MAINTENANCE_DELAY_MS="5",
    )
    if shared_lock:  # every request also takes an advisory lock in the instance's PostgreSQL
        env["AMD_TOKEN_LOCK_URL"] = os.environ["DAGSTER_PG_URL"]
    return env


def three_at_once(
    sim: Simulator, tmp_path: Path, home: Path, shared_lock: bool = True
) -> list[subprocess.CompletedProcess]:
    """Two CLI backfills (one campaign each) and a scheduled refresh, started together."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("campaign", CAMPAIGNS)  # as the discovery sensor would have
    args = ["backfill", "--start", str(START), "--end", str(END), "--campaign"]
    procs = [
        subprocess.Popen(
            [CLI, *args, campaign],
            env=env_for(sim, tmp_path, home, f"locks_{campaign}", shared_lock),
            cwd=tmp_path,
            text=True,
        )
        for campaign in CAMPAIGNS[:2]
    ]
    refresh_env = env_for(sim, tmp_path, home, "locks_refresh", shared_lock)
    procs.append(
        subprocess.Popen([sys.executable, "-c", REFRESH], env=refresh_env, stdout=subprocess.DEVNULL, text=True)
    )
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300)) for p in procs]


def pool_waits(home: Path) -> int:
    """How many times a run's step waited for the token pool's slot in PostgreSQL."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return sum(
            "blocked by limit for pool wolkvox_token" in (e.message or "")
            for r in instance.get_runs()
            for e in instance.all_logs(r.run_id)
        )


def database_text(url: str) -> str:
    """Every row of every table of the database, as text."""
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [t for (t,) in cur.fetchall()]
        out = []
        for table in tables:
            cur.execute(f'SELECT t::text FROM "{table}" t')
            out.extend(row for (row,) in cur.fetchall())
    return "\n".join(out)


def test_two_backfills_and_a_refresh_at_once_never_overlap_and_load_exact_totals(pg_home, tmp_path):
    # 150 ms a call: each load holds the token's slot for about 2 s, so the three really compete for it.
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=150)) as sim:
        results = three_at_once(sim, tmp_path, pg_home)
        stats = sim.stats()
    assert [r.returncode for r in results] == [0, 0, 0]
    assert stats["overlaps"] == 0, stats
    # Contention shown, not assumed: the pool in PostgreSQL made a step of one process wait while
    # another process held the token's one slot.
    assert len(stats["clients"]) == 3, stats
    assert pool_waits(pg_home) >= 1
    assert stats["statuses"].get("403", 0) == 0  # no "token busy" answer either
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert instance.event_log_storage.get_concurrency_info("wolkvox_token").claimed_slots == []
    rows = duckdb.connect(str(tmp_path / "data" / "amd.duckdb"), read_only=True).sql(
        "SELECT campaign_id, local_date, total_amd, is_final FROM amd_daily ORDER BY ALL"
    )
    rows = rows.fetchall()
    today = dt.datetime.now(ZoneInfo("America/Bogota")).date()
    backfilled = [(c, d, t) for c, d, t, _ in rows if START <= d <= END]
    assert len(backfilled) == 2 * 12  # every window once, none doubled
    assert all(t == truth_for_day(c, d) for c, d, t in backfilled)
    refreshed = {(c, d) for c, d, _, _ in rows if d >= today - dt.timedelta(days=1)}
    assert refreshed == {(c, d) for c in CAMPAIGNS for d in (today - dt.timedelta(days=1), today)}
    assert all(t == truth_for_day(c, d) for c, d, t, final in rows if final)
    assert sim.config.token not in database_text(os.environ["DAGSTER_PG_URL"])  # the token is a secret


def test_the_check_sees_overlaps_when_the_pool_limit_and_the_shared_lock_are_lifted(pg_home, tmp_path):
    # Control: the same three processes with the pool's limit raised to 10 in PostgreSQL and without
    # the shared lock (separate lock folders, as above): the simulator must count overlaps, so the
    # test above could fail.
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        instance.event_log_storage.set_concurrency_slots("wolkvox_token", 10)
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=60, max_in_flight=3)) as sim:
        results = three_at_once(sim, tmp_path, pg_home, shared_lock=False)
        stats = sim.stats()
    assert [r.returncode for r in results] == [0, 0, 0]
    assert stats["overlaps"] > 0, stats
