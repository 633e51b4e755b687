"""The production profile (deploy/dagster.yaml) against a real PostgreSQL: one lock and one budget.

Each process gets its own token lock folder, as processes on separate machines (or containers) would,
and no AMD_TOKEN_LOCK_URL, as in deploy/env.example: only what lives in the instance's PostgreSQL (the
pool slots, the token's advisory lock, the daily call ledger) stands between them and two requests in
flight on one token, or a budget spent twice. The controls switch that sharing off in the processes
(``instance_url`` returns nothing, as before it existed) and must see the failure.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import psycopg2
import pytest

from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, truth_for_day
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.conftest import CONTENTION

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Control: the processes keep the token's state in their own files, as if the instance were not shared.
UNSHARED = "import amd_pipeline.core.shared_state as s; s.instance_url = lambda instance: None\n"
CLI_MAIN = forkserver.CLI_MAIN
# With the pool lifted: every process's load waits at a file barrier, so the three loads really run at once
# (without it, a process that started late could find the others done: a control seeing 0 overlaps).
AT_ONCE = textwrap.dedent("""
    import pathlib, amd_pipeline.core.loader as loader, amd_pipeline.orchestration.assets as assets
    from amd_pipeline_tests.barrier import wait_at_barrier
    _load = loader.load
    def _load_at_once(*args, **kwargs):
        wait_at_barrier(pathlib.Path({gate!r}), 3)
        return _load(*args, **kwargs)
    loader.load = assets.load = _load_at_once  # the asset imported the name before this ran
""")
ROOT = Path(__file__).resolve().parents[1]
START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 12)
CAMPAIGNS = ["20717", "20718", "20731"]

REFRESH = textwrap.dedent("""
    # As the daemon does: evaluate the refresh schedule's tick, then run its request, in another process.
    import datetime as dt, os, sys
    import dagster as dg
    from amd_pipeline.orchestration.build import AMD_DAILY_JOB
    from amd_pipeline.orchestration.location import build_definitions
    from amd_pipeline.core.settings import DefinitionSettings
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


def env_for(sim: Simulator, tmp_path: Path, home: Path, locks: str) -> dict[str, str]:
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
    return env  # no AMD_TOKEN_LOCK_URL: the instance's PostgreSQL is shared by default


def three_at_once(
    sim: Simulator, tmp_path: Path, home: Path, shared: bool = True, at_once: bool = False
) -> list[subprocess.CompletedProcess]:
    """Two CLI backfills (one campaign each) and a scheduled refresh, started together; with ``at_once``
    (only with the pool lifted, or the first load would hold the slot at the barrier) their loads start
    together too."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("campaign", CAMPAIGNS)  # as the discovery sensor would have
    prelude = ("" if shared else UNSHARED) + (AT_ONCE.format(gate=str(tmp_path / "gate")) if at_once else "")
    (tmp_path / "gate").mkdir()

    def env(locks: str) -> dict[str, str]:
        return {**env_for(sim, tmp_path, home, locks), "PYTHONPATH": str(ROOT)}

    args = ["backfill", "--start", str(START), "--end", str(END), "--campaign"]
    procs = [
        forkserver.start([*args, campaign], env=env(f"locks_{campaign}"), cwd=tmp_path, script=prelude + CLI_MAIN)
        for campaign in CAMPAIGNS[:2]
    ]
    procs.append(forkserver.start([], env=env("locks_refresh"), cwd=tmp_path, script=prelude + REFRESH))
    return [p.wait() for p in procs]


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


@CONTENTION
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


def lift_pool_limit(home: Path) -> None:
    """Let 10 steps hold the token's pool at once: only the token's own lock keeps requests apart."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots("wolkvox_token", 10)


@CONTENTION
def test_the_instances_postgresql_alone_keeps_requests_apart_with_no_setting(pg_home, tmp_path):
    # The pool's limit lifted: the two backfills' and the refresh's steps all run at once, and only the
    # advisory lock the token takes in the instance's PostgreSQL (no AMD_TOKEN_LOCK_URL) keeps them apart.
    lift_pool_limit(pg_home)
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=60, max_in_flight=3)) as sim:
        results = three_at_once(sim, tmp_path, pg_home, at_once=True)
        stats = sim.stats()
    assert [r.returncode for r in results] == [0, 0, 0]
    assert stats["overlaps"] == 0, stats
    assert len(stats["clients"]) == 3 and stats["client_switches"] >= 3, stats  # they took turns


@CONTENTION
def test_the_check_sees_overlaps_when_the_pool_limit_and_the_shared_lock_are_lifted(pg_home, tmp_path):
    # Control: the same three processes with the pool's limit lifted and the token's state kept in each
    # process's own lock folder (as before it moved to PostgreSQL): the simulator must count overlaps,
    # so the tests above could fail.
    lift_pool_limit(pg_home)
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=60, max_in_flight=3)) as sim:
        results = three_at_once(sim, tmp_path, pg_home, shared=False, at_once=True)
        stats = sim.stats()
    assert [r.returncode for r in results] == [0, 0, 0]
    assert stats["overlaps"] > 0, stats


def spend_one_budget(sim: Simulator, tmp_path: Path, home: Path, shared: bool = True) -> list:
    """Two CLI backfills of 60 days (one campaign each) at once, each with its own lock folder, against a
    quota of 40 at a share of 0.5 (a budget of 20), both forced past the quota guard."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("campaign", CAMPAIGNS)
    script = ("" if shared else UNSHARED) + CLI_MAIN
    args = ["backfill", "--start", "2026-08-01", "--end", "2026-09-29", "--force", "--quiet", "--campaign"]
    procs = []
    for campaign in CAMPAIGNS[:2]:
        env = env_for(sim, tmp_path, home, f"locks_{campaign}")
        env.update(WOLKVOX_DAILY_QUOTA="40", AMD_QUOTA_SHARE="0.5")
        procs.append(forkserver.start([*args, campaign], env=env, cwd=tmp_path, script=script))
    return [(done.returncode, done.stderr) for done in (p.wait() for p in procs)]


@CONTENTION
def test_machines_sharing_the_instance_spend_one_daily_budget_with_no_setting(pg_home, tmp_path):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=40)) as sim:
        results = spend_one_budget(sim, tmp_path, pg_home)
        after_two = sim.stats()
        # A third process as a new container starts: an empty lock folder, the same instance.
        env = env_for(sim, tmp_path, pg_home, "locks_new_container")
        env.update(WOLKVOX_DAILY_QUOTA="40", AMD_QUOTA_SHARE="0.5")
        third = forkserver.run(
            ["backfill", "--start", "2026-08-01", "--end", "2026-09-29", "--force", "--campaign", "20731"],
            env=env,
            cwd=tmp_path,
        )
        budget = forkserver.run(["budget"], env=env, cwd=tmp_path)
        stats = sim.stats()
    assert [code for code, _ in results] == [4, 4], "\n".join(
        err for _, err in results
    )  # both stopped by the one budget
    assert after_two["requests"] == 20, after_two  # 20 between them, not 20 each
    assert after_two["overlaps"] == 0
    assert third.returncode == 4 and "daily call budget of 20 reached (20 used)" in third.stderr, third.stderr
    assert stats["requests"] == 20  # the new container made no call
    # One ledger: what `budget` prints is what the server counted, by source.
    assert budget.returncode == 0, budget.stderr
    used = re.search(r"used today: 20 \(backfill (\d+), cli (\d+)\); left: 0; counted in PostgreSQL", budget.stdout)
    assert used and int(used[1]) + int(used[2]) == 20, budget.stdout  # pre-flight calls included
    rows = (
        duckdb.connect(str(tmp_path / "data" / "amd.duckdb"), read_only=True)
        .sql("SELECT campaign_id, local_date, total_amd FROM amd_daily")
        .fetchall()
    )
    assert rows and all(t == truth_for_day(c, d) for c, d, t in rows)  # what was fetched is exact
    assert sim.config.token not in database_text(os.environ["DAGSTER_PG_URL"])


@CONTENTION
def test_the_budget_check_sees_each_machine_spend_its_own_when_nothing_is_shared(pg_home, tmp_path):
    # Control: the same two backfills with the ledger in each process's own lock folder spend 20 each.
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=40)) as sim:
        results = spend_one_budget(sim, tmp_path, pg_home, shared=False)
        stats = sim.stats()
    assert [code for code, _ in results] == [4, 4], "\n".join(err for _, err in results)
    assert stats["requests"] == 40, stats
