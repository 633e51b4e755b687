"""The `amd-pipeline` command as a user runs it: processes against the simulator on loopback.

Each command is a process of its own, forked from the pre-warmed server (forkserver.py); the killed
backfill and the killed publish are plain subprocesses."""

import datetime as dt
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import dagster as dg
import pytest
import yaml

from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.instance import shipped_instance_yaml
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, truth_for_day
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.barrier import runs_at_once
from amd_pipeline_tests.conftest import CONTENTION
from amd_pipeline_tests.secret_scan import secret_hits

pytestmark = pytest.mark.slow
CLI = forkserver.CLI
CAMPAIGNS = ["20717", "20718", "20731"]
START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 30)


def cli_env(sim: Simulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    env.update(
        WOLKVOX_BASE_URL=sim.url,
        WOLKVOX_TOKEN=sim.config.token,
        AMD_DUCKDB_PATH=str(tmp_path / "data" / "amd.duckdb"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        AMD_START_DATE="2026-01-01",
        AMD_LOCK_DIR=str(tmp_path / "locks"),
        WOLKVOX_BACKOFF_BASE_MS="5",
        WOLKVOX_MAINTENANCE_DELAY_MS="5",
    )
    env.update(extra)
    return env


def amd(env, *args, cwd) -> subprocess.CompletedProcess:
    """``amd-pipeline *args`` in a process of its own, forked from the pre-warmed server (forkserver.py)."""
    return forkserver.run(list(args), env=env, cwd=cwd)


def backfill(env, tmp_path, *extra):
    return amd(env, "backfill", "--start", str(START), "--end", str(END), *extra, cwd=tmp_path)


@pytest.fixture
def faulty_sim():
    config = SimConfig(
        token="SECRET-cli-" + os.urandom(8).hex(),
        latency_ms=2,
        fault_rate=0.15,
        faults=("500", "html502", "maintenance", "busy", "429", "drop", "truncated", "code_string", "data_object"),
        seed=11,
        retry_after=0,
    )
    with Simulator(config) as sim:
        yield sim


@pytest.mark.parametrize(("campaign_all", "calls"), [("off", 90), ("auto", 30)])
def test_a_backfill_with_faults_equals_the_ground_truth_and_a_rerun_changes_nothing(
    faulty_sim, tmp_path, campaign_all, calls
):
    env = cli_env(faulty_sim, tmp_path, AMD_CAMPAIGNS=",".join(CAMPAIGNS), WOLKVOX_CAMPAIGN_ALL=campaign_all)
    first = backfill(env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (
        f"3 campaign(s) x 30 day(s) in 1 run(s), campaign_id=all {campaign_all}: 90 windows, {calls} calls"
        in first.stderr
    )
    assert "progress: 90/90 windows" in first.stderr  # plain lines, not a bar, when stderr is not a terminal
    assert "\r" not in first.stderr
    store = AmdStore(env["AMD_DUCKDB_PATH"])
    rows = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL")
    assert len(rows) == 90
    assert all(r.total_amd == faulty_sim.day_total(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    stats = faulty_sim.stats()
    assert sum(stats["faults_injected"].values()) >= 3
    assert stats["overlaps"] == 0

    second = backfill(env, tmp_path)
    assert second.returncode == 0, second.stderr
    again = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL")
    assert again.equals(rows)
    assert faulty_sim.stats()["overlaps"] == 0

    token = faulty_sim.config.token
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert token not in text
    assert secret_hits(tmp_path, token) == []


def test_a_subset_of_campaigns_that_are_not_neighbours_costs_one_call_a_day(sim, tmp_path):
    # 20717 and 20731 are not adjacent partitions: two Dagster runs. The first asks campaign_id=all for
    # each day; the second takes its days from those answers (same backfill) instead of calling again.
    env = cli_env(sim, tmp_path, WOLKVOX_DAILY_QUOTA="1000")
    home = Path(env["DAGSTER_HOME"])
    home.mkdir()
    (home / "dagster.yaml").write_text(shipped_instance_yaml())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("campaign", CAMPAIGNS)  # as the discovery sensor would have
    start, end = dt.date(2026, 10, 1), dt.date(2026, 10, 10)
    done = amd(
        env,
        "backfill",
        "--start",
        str(start),
        "--end",
        str(end),
        "--campaign",
        "20717",
        "--campaign",
        "20731",
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "in 2 run(s)" in done.stderr and "20 windows, 10 calls" in done.stderr
    calls = sim.stats()["calls"]
    assert calls.get("campaign_6:all") == 10 and "campaign_6:one" not in calls, calls
    store = AmdStore(env["AMD_DUCKDB_PATH"])
    rows = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL")
    assert len(rows) == 20 and set(rows.campaign_id) == {"20717", "20731"}
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    backfills = store.query("SELECT DISTINCT backfill_id FROM api_answers").backfill_id.tolist()
    assert len(backfills) == 1 and backfills[0].startswith("cli-")  # one id over both runs


@pytest.mark.parametrize(("setting", "planned"), [(None, 1), ("false", 9)])
def test_a_cli_run_plans_its_partitions_in_one_event_unless_told_otherwise(sim, tmp_path, setting, planned):
    # Dagster writes a "planned" event per partition before a run starts (about 9 ms each); the CLI
    # asks for one per run, which leaves the materialised partitions of the matrix as they are.
    import dagster as dg

    env = cli_env(sim, tmp_path, AMD_CAMPAIGNS=",".join(CAMPAIGNS))
    if setting is not None:
        env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = setting
    out = amd(env, "backfill", "--start", str(START), "--end", str(START + dt.timedelta(days=2)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [run] = instance.get_runs()
        events = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ).records
        assert len(events) == planned
        materialized = instance.get_materialized_partitions(dg.AssetKey("amd_daily"))
    assert materialized == {f"{c}|{START + dt.timedelta(days=i)}" for c in CAMPAIGNS for i in range(3)}


def test_the_secret_scan_would_find_a_leaked_token(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / "x.db")
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.execute("INSERT INTO t VALUES (?)", [zlib.compress(b'{"token": "SECRET-leak"}')])
    conn.commit()
    conn.close()
    assert secret_hits(home, "SECRET-leak") == [f"{home / 'x.db'}:t"]


# For two runs on one instance: the run whose step got the token's pool slot first holds it (before
# its first call) until the other run's step has been refused the slot, so the pool is seen at work
# however slowly that other run starts on a busy machine. A step that finds the other run ended goes on,
# and so does one that waited 15 s (a pool that let both steps in: the assertion below then fails).
HOLD_UNTIL_THE_OTHER_IS_BLOCKED = """
import os, time, dagster as dg, amd_pipeline.orchestration.assets as assets
_load = assets.load
def _blocked_or_ended(instance, run):
    if run.is_finished:
        return True
    return any("blocked by limit for pool" in (e.message or "") for e in instance.all_logs(run.run_id))
def _when_the_other_waits(*args, **kwargs):
    mine = kwargs["request_tags"]["run_id"]
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            others = [r for r in instance.get_runs() if r.run_id != mine]
            if others and all(_blocked_or_ended(instance, r) for r in others):
                break
            time.sleep(0.05)
    return _load(*args, **kwargs)
assets.load = _when_the_other_waits
"""


def concurrent_backfills(sim, envs, prelude: str = ""):
    """Two backfills whose runs start together (a barrier after their pre-flight); returns the simulator's
    stats after checking both ran and really contended."""
    results, gate = [], Path(envs[0]["_cwd"]) / "gate"
    gate.mkdir()
    script = runs_at_once(gate, 2) + prelude + forkserver.CLI_MAIN

    def go(env, campaign):
        args = ["backfill", "--start", str(START), "--end", str(END), "--campaign", campaign]
        results.append(forkserver.run(args, env=env, cwd=env["_cwd"], script=script))

    threads = [threading.Thread(target=go, args=(env, c)) for env, c in zip(envs, ["20717", "20718"], strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    stats = sim.stats()
    assert stats["calls"].get("campaign_6:one", 0) >= 60
    # Contention shown, not assumed: both processes were talking to the server during one common
    # stretch of over a second (a backfill alone takes about 1.3 s of calls here), so with one
    # request in flight at a time, one of them had to wait for the token while the other held it.
    assert len(stats["clients"]) == 2 and stats["clients_overlap_seconds"] > 1.0, stats
    return stats


@pytest.mark.parametrize("homes", ["one DAGSTER_HOME (pool and lock)", "two DAGSTER_HOMEs (lock only)"])
@CONTENTION
def test_two_concurrent_backfills_never_overlap_at_the_simulator(tmp_path, homes):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=40)) as sim:
        a = cli_env(sim, tmp_path, _cwd=str(tmp_path))
        b = cli_env(sim, tmp_path, _cwd=str(tmp_path))
        if homes.startswith("two"):
            b["DAGSTER_HOME"] = str(tmp_path / "other_home")
        stats = concurrent_backfills(sim, [a, b], "" if homes.startswith("two") else HOLD_UNTIL_THE_OTHER_IS_BLOCKED)
        assert stats["overlaps"] == 0
    if homes.startswith("two"):
        # Without a shared instance only the token lock keeps them apart, request by request.
        assert stats["client_switches"] >= 5, stats
    else:
        # On one instance the pool holds the second run's step until the first one's is done.
        import dagster as dg

        with dg.DagsterInstance.from_config(a["DAGSTER_HOME"]) as instance:
            runs = instance.get_runs()
            messages = [e.message for r in runs for e in instance.all_logs(r.run_id)]
        assert len(runs) == 2 and any("blocked by limit for pool wolkvox_token" in (m or "") for m in messages)


@pytest.mark.parametrize("homes", ["one DAGSTER_HOME", "two DAGSTER_HOMEs"])
@CONTENTION
def test_the_concurrency_check_does_see_overlaps_when_the_guards_are_bypassed(tmp_path, homes):
    # Control: the same configurations minus the guard (separate lock folders; on one home, a pool
    # limit of 10 instead of 1), so the simulator must count overlaps. The tests above could fail.
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=60, max_in_flight=2)) as sim:
        a = cli_env(sim, tmp_path, _cwd=str(tmp_path), AMD_LOCK_DIR=str(tmp_path / "locks_a"))
        b = cli_env(sim, tmp_path, _cwd=str(tmp_path), AMD_LOCK_DIR=str(tmp_path / "locks_b"))
        if homes.startswith("two"):
            b["DAGSTER_HOME"] = str(tmp_path / "other_home")
        else:
            home = Path(a["DAGSTER_HOME"])
            home.mkdir()
            (home / "dagster.yaml").write_text(
                "concurrency:\n  pools:\n    default_limit: 10\ntelemetry:\n  enabled: false\n"
            )
        assert concurrent_backfills(sim, [a, b])["overlaps"] > 0


def test_a_wrong_token_exits_1_with_one_line_before_any_campaign_call(sim, tmp_path):
    env = cli_env(sim, tmp_path, WOLKVOX_TOKEN="SECRET-wrong", AMD_CAMPAIGNS="20717")
    out = backfill(env, tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "error: the server refused the token (403 PLEASE VALIDATE TOKEN) for token info: check WOLKVOX_TOKEN"
    ]
    assert "SECRET-wrong" not in out.stderr + out.stdout
    assert sim.stats()["requests"] == 1  # token_info only: no campaign_6 call


def test_campaigns_are_discovered_when_none_are_configured(sim, tmp_path):
    out = backfill(cli_env(sim, tmp_path), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "added campaign partitions: 20717, 20718, 20731" in out.stderr  # 20744 is a preview campaign


def test_days_outside_the_partitions_are_refused(sim, tmp_path):
    out = amd(cli_env(sim, tmp_path), "backfill", "--start", "2025-12-31", "--end", "2026-01-02", cwd=tmp_path)
    assert out.returncode == 2 and "AMD_START_DATE" in out.stderr


def test_the_demo_runs_end_to_end_and_query_reads_its_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    demo = amd(env, "demo", "--days", "14", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    # Compared with the simulator's ground truth here, not with the demo's own check line.
    rows = AmdStore(tmp_path / "data" / "amd.duckdb").query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
    assert len(rows) == 42 and set(rows.campaign_id) == {"20717", "20718", "20731"}
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()
    query = amd(env, "query", "SELECT count(*) AS n FROM amd_daily", cwd=tmp_path)
    assert query.returncode == 0 and query.stdout.split() == ["n", "42"]
    refused = amd(env, "query", "DROP TABLE amd_daily", cwd=tmp_path)
    assert refused.returncode == 2 and "read-only" in refused.stderr and len(refused.stderr.splitlines()) == 1
    csv = amd(env, "query", "SELECT campaign_id, total_amd FROM amd_daily ORDER BY ALL LIMIT 2", "--csv", cwd=tmp_path)
    lines = csv.stdout.splitlines()
    assert csv.returncode == 0 and lines[0] == "campaign_id,total_amd" and len(lines) == 3
    assert lines[1].split(",")[0] == "20717" and lines[1].split(",")[1].isdigit()
    as_json = amd(
        env, "query", "SELECT campaign_id, avg_7d FROM amd_daily_trend ORDER BY ALL LIMIT 2", "--json", cwd=tmp_path
    )
    records = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and [r["campaign_id"] for r in records] == ["20717", "20717"]
    assert all(isinstance(r["avg_7d"], float) for r in records)  # the analyst views exist in the demo's file
    # query shows instants in the operation's zone: a window starts at local midnight there.
    sql = "SELECT current_setting('TimeZone') AS tz, strftime(min(window_start), '%H:%M') AS t FROM amd_daily"
    bogota = amd(env, "query", sql, "--csv", cwd=tmp_path).stdout.splitlines()
    assert bogota == ["tz,t", "America/Bogota,00:00"]
    madrid = amd({**env, "WOLKVOX_TIMEZONE": "Europe/Madrid"}, "query", sql, "--csv", cwd=tmp_path).stdout.splitlines()
    assert madrid[0] == "tz,t" and madrid[1].startswith("Europe/Madrid,0") and madrid[1] != "Europe/Madrid,00:00"


def test_a_dry_run_prints_calls_quota_share_and_eta_and_launches_nothing(sim, tmp_path):
    env = cli_env(sim, tmp_path, AMD_CAMPAIGNS="20717,20718", WOLKVOX_CAMPAIGN_ALL="off", WOLKVOX_DAILY_QUOTA="2000")
    out = backfill(env, tmp_path, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "60 windows, 60 calls, 3.0% of the daily quota of 2000, 1999 calls left today" in out.stderr
    assert "ETA unknown" in out.stderr
    assert sim.stats()["calls"] == {"information:token_info": 1}  # no campaign_6 call, no run
    assert not (tmp_path / "data" / "amd.duckdb").exists()
    # After a real run the ETA comes from the median latency the pipeline observed.
    assert backfill(env, tmp_path, "--quiet").returncode == 0
    again = backfill(env, tmp_path, "--dry-run")
    assert "ETA " in again.stderr and "ETA unknown" not in again.stderr


def test_a_backfill_beyond_the_remaining_quota_is_refused_unless_forced(sim, tmp_path):
    sim.state.config.daily_quota = 20
    # A share of 1: the vendor's own quota, not the pipeline's budget, is what runs out here.
    env = cli_env(sim, tmp_path, AMD_CAMPAIGNS="20717", WOLKVOX_CAMPAIGN_ALL="off", AMD_QUOTA_SHARE="1")
    refused = backfill(env, tmp_path)
    assert refused.returncode == 3
    assert "needs 30 calls but only 19 of today's 20 remain; it needs 2 day(s) of quota" in refused.stderr
    assert sim.stats()["requests"] == 1  # token_info only: no campaign_6 call
    sim.state.quota_used += 5  # the operation's other integrations spend some of the quota meanwhile
    forced = backfill(env, tmp_path, "--force", "--quiet")
    assert forced.returncode == 4
    # token_info (7 used), 13 windows (20 used), then 403 TOKEN LIMIT EXCEEDED: the vendor's quota ran
    # out before the pipeline's own budget (20 at a share of 1, 15 spent) did.
    assert "error: the operation's daily call quota is spent (403 TOKEN LIMIT EXCEEDED): 17 windows deferred" in (
        forced.stderr
    )
    assert len(AmdStore(env["AMD_DUCKDB_PATH"]).query("SELECT * FROM amd_daily")) == 13


def test_a_killed_backfill_leaves_a_consistent_table_and_the_rerun_completes_it(tmp_path):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=25)) as sim:
        env = cli_env(sim, tmp_path, AMD_CAMPAIGNS=",".join(CAMPAIGNS), WOLKVOX_CAMPAIGN_ALL="off", AMD_BATCH_SIZE="10")
        proc = subprocess.Popen(
            [CLI, "backfill", "--start", str(START), "--end", str(END)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill -9 once a few batches have landed, in the middle of fetching the next one.
        deadline = time.monotonic() + 60
        while sim.stats()["requests"] < 36 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait(10)
        # A killed run never published: its batches are in the working file, which the rerun completes.
        store = AmdStore(tmp_path / "data" / "amd.working.duckdb")
        partial = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
        assert 20 <= len(partial) < 90 and len(partial) % 10 == 0  # whole batches only
        assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in partial.itertuples())

        rerun = amd(env, "backfill", "--start", str(START), "--end", str(END), "--quiet", cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert "of a dead amd-pipeline process: marked failed, its token slot freed" in rerun.stderr
        rows = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
        assert len(rows) == 90
        assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in rows.itertuples())


def test_the_demo_refuses_to_mix_its_rows_with_a_real_operations(tmp_path):
    from amd_pipeline.core.normalize import Fetched, normalize
    from amd_pipeline.core.schema import AMD_DAILY
    from amd_pipeline.wolkvox.models import Answer
    from amd_pipeline.wolkvox.windows import day_window

    real = tmp_path / "data" / "amd.duckdb"
    answer = Answer(({"campaign_id": "555", "total_amd": "9"},), False, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    AmdStore(real).replace(AMD_DAILY, normalize([Fetched(("555",), day_window(START, "America/Bogota"), answer)]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    out = amd(env, "demo", "--days", "3", cwd=tmp_path)
    assert out.returncode == 2
    assert "already holds campaigns that are not the demo's (555)" in out.stderr
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert AmdStore(real).query("SELECT campaign_id FROM amd_daily").campaign_id.tolist() == ["555"]


def test_the_demo_refuses_an_instance_that_holds_other_campaigns(tmp_path):
    import dagster as dg

    from amd_pipeline.orchestration.instance import prepare_home

    home = tmp_path / ".dagster_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    old = os.environ.get("DAGSTER_HOME")
    try:
        prepare_home(home)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("campaign", ["777"])
    finally:
        os.environ.pop("DAGSTER_HOME", None) if old is None else os.environ.update(DAGSTER_HOME=old)
    out = amd(env, "demo", "--days", "3", cwd=tmp_path)
    assert out.returncode == 2 and "already holds campaigns that are not the demo's (777)" in out.stderr
    assert not (tmp_path / "data" / "amd.duckdb").exists()


BAD_INPUTS = [
    (["--campaign", "all"], {}, "--campaign 'all' is not a campaign id: one call for every campaign is what"),
    (["--campaign", "abc"], {}, "--campaign 'abc' is not a campaign id"),
    (["--campaign", " 12"], {}, "--campaign ' 12' is not a campaign id"),
    (["--start", "2026-10-05", "--end", "2026-10-01"], {}, "--start 2026-10-05 is after --end 2026-10-01"),
    (["--start", "2026-13-01"], {}, "argument --start: not a day like 2026-11-01: '2026-13-01'"),
    (["--start", "2025-12-31"], {}, "days must lie between AMD_START_DATE=2026-01-01 and today"),
    (["--end", "2099-01-01"], {}, "days must lie between AMD_START_DATE=2026-01-01 and today"),
    ([], {"WOLKVOX_TIMEZONE": "Mars/Base"}, "WOLKVOX_TIMEZONE='Mars/Base' is not an IANA time zone"),
    ([], {"WOLKVOX_BASE_URL": "", "WOLKVOX_SERVER": "12ab"}, "WOLKVOX_SERVER='12ab' is not a server nomenclature"),
    ([], {"WOLKVOX_BASE_URL": ""}, "neither WOLKVOX_SERVER nor WOLKVOX_BASE_URL is set"),
    ([], {"WOLKVOX_TOKEN": ""}, "WOLKVOX_TOKEN is not set"),
    ([], {"WOLKVOX_CAMPAIGN_ALL": "sometimes"}, "WOLKVOX_CAMPAIGN_ALL='sometimes' is not one of auto, on, off"),
    ([], {"WOLKVOX_MAX_ATTEMPTS": "six"}, "WOLKVOX_MAX_ATTEMPTS='six' is not a whole number"),
    ([], {"AMD_BATCH_SIZE": "1e3"}, "AMD_BATCH_SIZE='1e3' is not a whole number"),
    ([], {"AMD_CAMPAIGNS": "20717,all"}, "AMD_CAMPAIGNS 'all' is not a campaign id"),
    ([], {"AMD_START_DATE": "soon"}, "AMD_START_DATE='soon' is not a date"),
]


@pytest.mark.parametrize(("args", "env_extra", "says"), BAD_INPUTS, ids=[b[2][:40] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_no_call_no_file(sim, tmp_path, args, env_extra, says):
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(sim, work, **{"AMD_CAMPAIGNS": "20717", **env_extra})
    days = {"--start": str(START), "--end": str(END)}
    for flag in ("--start", "--end"):
        if flag in args:
            days.pop(flag)
    argv = ["backfill", *[x for kv in days.items() for x in kv], *args]
    out = amd(env, *argv, cwd=work)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [out.stderr.strip()] and out.stderr.startswith(f"error: {says}")
    assert out.stdout == ""
    assert sim.stats()["requests"] == 0
    assert list(work.iterdir()) == []  # no Dagster home, no DuckDB file, no lock folder


def test_a_campaign_the_operation_does_not_have_is_refused_with_the_known_ones_unless_forced(sim, tmp_path):
    env = cli_env(sim, tmp_path)
    out = backfill(env, tmp_path, "--campaign", "20717", "--campaign", "55555")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: campaign 55555 is not one of the operation's predictive campaigns (20717, 20718, 20731); "
        "check the id, or pass --force to load it anyway"
    )
    assert "campaign_6:one" not in sim.stats()["calls"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "dagster_home").exists()  # no file written
    forced = backfill(env, tmp_path, "--campaign", "55555", "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr
    rows = AmdStore(env["AMD_DUCKDB_PATH"]).query("SELECT DISTINCT total_amd, fetch_status FROM amd_daily")
    assert rows.values.tolist() == [[0, "fetched_empty"]]  # the server has no data for it, as the real one


def test_an_unreachable_server_is_one_sentence_and_exit_1(tmp_path):
    with Simulator(SimConfig()) as sim:
        env = cli_env(sim, tmp_path, AMD_CAMPAIGNS="20717", WOLKVOX_BASE_URL="http://127.0.0.1:9")
        out = backfill(env, tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "error: could not reach http://127.0.0.1:9 (connection refused, 6 attempts): check WOLKVOX_SERVER or "
        "WOLKVOX_BASE_URL, and that this machine's IP is on the operation's allow-list"
    ]


@pytest.mark.parametrize("quota", ["", "1000"], ids=["token_info_in_the_resource", "token_info_in_the_pre_flight"])
def test_an_unreachable_shared_budget_database_is_one_sentence_before_any_call_and_exit_1(sim, tmp_path, quota):
    """The token's shared state is the pipeline's own error (not the vendor's): the pre-flight still ends on it."""
    url = "postgresql://amd:SECRET-pw@127.0.0.1:9/amd"  # nothing listens on port 9
    env = cli_env(sim, tmp_path, AMD_CAMPAIGNS="20717", AMD_TOKEN_LOCK_URL=url, WOLKVOX_DAILY_QUOTA=quota)
    out = backfill(env, tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "error: cannot reach the PostgreSQL that holds the token's call budget (OperationalError): check "
        "DAGSTER_PG_URL (or AMD_TOKEN_LOCK_URL) and that the database is up"
    ]
    assert sim.stats()["requests"] == 0  # refused before its first call
    assert "SECRET-pw" not in out.stdout + out.stderr


def test_a_failed_run_says_what_happened_then_its_run_id_and_where_its_logs_are(sim, tmp_path):
    sim.state.config.bad_values = {"20718": "1,234"}
    env = cli_env(sim, tmp_path, AMD_CAMPAIGNS="20717,20718")
    out = backfill(env, tmp_path, "--quiet")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "dagster._core" not in out.stderr
    lines = out.stderr.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[error] == "error: 30 window(s) rejected, not written:"
    assert "campaign 20718, window 2026-10-01" in lines[error + 1] and "'1,234'" in lines[error + 1]
    assert re.fullmatch(r"run [0-9a-f-]{36} failed; its logs: `amd-pipeline dev`, then http://\S+", lines[-1])
    verbose = backfill(env, tmp_path, "--quiet", "--campaign", "abc", "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.splitlines()[-1].startswith("error: --campaign 'abc'")


def test_a_file_in_another_time_zone_is_refused_before_any_call_and_can_be_migrated(sim, tmp_path):
    env = cli_env(sim, tmp_path, AMD_CAMPAIGNS="20717")
    assert backfill(env, tmp_path, "--quiet").returncode == 0
    requests = sim.stats()["requests"]
    madrid = {**env, "WOLKVOX_TIMEZONE": "Europe/Madrid"}
    out = backfill(madrid, tmp_path)
    assert out.returncode == 2 and sim.stats()["requests"] == requests
    assert "holds days in America/Bogota, but WOLKVOX_TIMEZONE is Europe/Madrid" in out.stderr
    migrate = amd(madrid, "migrate-timezone", "--to", "Europe/Madrid", cwd=tmp_path)
    assert migrate.returncode == 0 and "dropped 30 day(s) (30 rows)" in migrate.stdout
    assert "backfill --start 2026-10-01 --end 2026-10-30" in migrate.stdout
    again = backfill(madrid, tmp_path, "--quiet")
    assert again.returncode == 0, again.stderr
    rows = AmdStore(env["AMD_DUCKDB_PATH"]).query("SELECT local_date, total_amd FROM amd_daily ORDER BY ALL")
    assert len(rows) == 30  # one row per day, in the new zone; no second row for any local date


def ledger_of(lock_dir: Path) -> dict:

    [path] = lock_dir.glob("*.calls.json")
    return json.loads(path.read_text())


def a_day_passes(lock_dir: Path, sim: Simulator) -> None:
    """Local midnight, simulated: the ledger's day becomes yesterday and the simulator's clock moves on."""

    [path] = lock_dir.glob("*.calls.json")
    data = json.loads(path.read_text())
    data["day"] = (dt.date.fromisoformat(data["day"]) - dt.timedelta(days=1)).isoformat()
    path.write_text(json.dumps(data))
    sim.state.config.clock_offset_seconds += 86400


def test_a_backfill_stops_at_the_daily_budget_and_later_days_fetch_only_what_is_missing(tmp_path):
    start, end = dt.date(2026, 8, 1), dt.date(2026, 9, 29)  # 60 days x 3 campaigns: 60 campaign_id=all calls
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), daily_quota=40)) as sim:
        env = cli_env(sim, tmp_path, AMD_CAMPAIGNS=",".join(CAMPAIGNS), WOLKVOX_DAILY_QUOTA="40", AMD_QUOTA_SHARE="0.5")
        store, locks = AmdStore(env["AMD_DUCKDB_PATH"]), Path(env["AMD_LOCK_DIR"])

        def run(*extra):
            return amd(env, "backfill", "--start", str(start), "--end", str(end), "--quiet", *extra, cwd=tmp_path)

        refused = run()
        assert refused.returncode == 3 and "19 of the pipeline's daily budget of 20 left" in refused.stderr
        first = run("--force")
        assert first.returncode == 4, first.stderr
        stats = sim.stats()
        assert stats["requests"] == 20 == sum(ledger_of(locks)["calls"].values())  # the ledger and the server agree
        rows = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
        assert len(rows) == 3 * stats["calls"]["campaign_6:all"]
        assert all(r.total_amd == sim.day_total(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
        deferred = 180 - len(rows)
        assert (
            f"error: daily call budget of 20 reached (20 used): {deferred} windows deferred; a backfill after "
            "midnight America/Bogota fetches them"
        ) in first.stderr
        ledger_rows = store.query("SELECT count(*) AS n FROM api_requests WHERE source = 'backfill'").n[0]
        assert ledger_rows == stats["calls"]["campaign_6:all"]  # one api_requests row per campaign_6 attempt
        # One ledger: the table holds the pre-flight token_info calls too, as the budget and the server count them.
        by_source = store.query("SELECT source, count(*) AS n FROM api_requests GROUP BY ALL")
        assert dict(zip(by_source.source, by_source.n, strict=True)) == {"backfill": 18, "cli": 2}

        budget = amd(env, "budget", cwd=tmp_path)
        assert budget.returncode == 0 and sim.stats()["requests"] == 20  # `budget` makes no call
        assert "budget: 20 calls = WOLKVOX_DAILY_QUOTA 40 x AMD_QUOTA_SHARE 0.5" in budget.stdout
        assert "used today: 20 (backfill 18, cli 2); left: 0" in budget.stdout  # cli: two token_info calls
        assert "refresh (*/5 * * * *): 1 call(s) per refresh x 288 ticks = 288 calls/day would pass half" in (
            budget.stdout
        )

        again = run("--force")
        assert again.returncode == 4 and sim.stats()["requests"] == 20  # no call at all
        assert again.stderr.strip() == (
            "error: daily call budget of 20 reached (20 used): a backfill after midnight America/Bogota fetches "
            "what is missing; nothing was called"
        )

        for _ in range(5):  # a day's budget at a time, never a finished window again
            a_day_passes(locks, sim)
            later = run("--force")
            if later.returncode == 0:
                break
            assert later.returncode == 4, later.stderr
        assert later.returncode == 0, later.stderr
        assert sim.stats()["calls"]["campaign_6:all"] == 60  # each window fetched exactly once
        rows = store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
        assert len(rows) == 180
        assert all(r.total_amd == sim.day_total(r.campaign_id, r.local_date.date()) for r in rows.itertuples())


@CONTENTION
def test_two_backfills_spending_one_budget_at_once_stay_within_it(tmp_path):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=200, daily_quota=40)) as sim:
        env = cli_env(sim, tmp_path, WOLKVOX_DAILY_QUOTA="40", WOLKVOX_CAMPAIGN_ALL="off")
        # Two Dagster homes, so that no pool serialises the runs: only the shared lock folder (token
        # lock and call ledger) stands between them, request by request.
        envs = {"20717": env, "20718": {**env, "DAGSTER_HOME": str(tmp_path / "other_home")}}
        results = []

        def go(campaign):
            results.append(backfill(envs[campaign], tmp_path, "--campaign", campaign, "--force", "--quiet"))

        threads = [threading.Thread(target=go, args=(c,)) for c in envs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(r.returncode for r in results) == [4, 4], [r.stderr for r in results]
    stats = sim.stats()
    assert stats["requests"] == 20 == sum(ledger_of(Path(env["AMD_LOCK_DIR"]))["calls"].values())
    assert len(stats["clients"]) == 2 and stats["client_switches"] >= 3, stats  # they really took turns


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only reader", "read-write reader"])
def test_an_analyst_holding_the_published_file_never_blocks_a_load(tmp_path, read_only):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=3)) as sim:
        env = cli_env(sim, tmp_path, AMD_CAMPAIGNS=",".join(CAMPAIGNS), WOLKVOX_CAMPAIGN_ALL="off")
        published = env["AMD_DUCKDB_PATH"]
        first = amd(env, "backfill", "--start", "2026-09-01", "--end", "2026-09-02", "--quiet", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                    import duckdb, sys, threading, time
                    conn = duckdb.connect({published!r}, read_only={read_only!r})
                    stop, seen, errors = threading.Event(), set(), []
                    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
                    print("open", flush=True)
                    while not stop.is_set():  # an analyst's notebook, querying all along
                        try:
                            seen.add(conn.execute("SELECT count(*) FROM amd_daily_trend").fetchall()[0][0])
                        except Exception as exc:
                            errors.append(repr(exc))
                        time.sleep(0.02)
                    conn.close()
                    again = duckdb.connect({published!r}, read_only=True)
                    print(sorted(seen), len(errors), again.execute("SELECT count(*) FROM amd_daily").fetchall()[0][0])
                """),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout.readline().strip() == "open"
            load = amd(env, "backfill", "--start", "2026-09-03", "--end", "2026-10-12", "--quiet", cwd=tmp_path)
        finally:
            output, _ = reader.communicate("\n", timeout=60)
    assert load.returncode == 0, load.stderr  # 3 campaigns x 40 days = 120 windows while the file was held
    seen, errors, rows_after_reconnect = output.strip().rsplit(" ", 2)[0], *output.strip().rsplit(" ", 2)[1:]
    assert errors == "0", output
    assert seen == "[6]"  # the state it opened, complete, all along
    assert rows_after_reconnect == "126"  # reconnected: every row of both loads


def test_a_publish_killed_at_any_moment_leaves_the_previous_file_intact(tmp_path):
    from amd_pipeline.core.normalize import FETCHED, to_frame
    from amd_pipeline.wolkvox.windows import day_window

    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"

    def rows(days: int) -> list[dict]:
        out = []
        for k in range(days):
            window = day_window(dt.date(2023, 1, 1) + dt.timedelta(days=k), "America/Bogota")
            for c in range(50):
                at = window.end + dt.timedelta(hours=1)
                out.append(
                    {
                        "campaign_id": str(10000 + c),
                        "window_start": window.start,
                        "window_end": window.end,
                        "local_date": window.local_date,
                        "total_amd": k + c,
                        "fetch_status": FETCHED,
                        "fetched_at": at,
                        "is_final": True,
                    }
                )
        return out

    store = AmdStore(working, timezone="America/Bogota")
    store.prepare(AMD_DAILY)
    store.replace(AMD_DAILY, to_frame(rows(10)))
    store.publish(published)  # the previous state: 500 rows
    store.replace(AMD_DAILY, to_frame(rows(1000)))  # the next one: 50,000 rows
    script = textwrap.dedent(f"""
        from amd_pipeline.core.store import AmdStore
        store = AmdStore({str(working)!r})
        print("publishing", flush=True)
        store.publish({str(published)!r})
    """)
    outcomes = []
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 30.0):  # after the publish started
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "publishing"
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL, mid-publish
            proc.wait()
        count = AmdStore(published).query("SELECT count(*) AS n FROM amd_daily").n[0]
        assert count in (500, 50000)  # the old file or the new one, always openable, never half of one
        outcomes.append((proc.returncode == -9, int(count)))
    assert (True, 500) in outcomes and outcomes[-1] == (False, 50000), outcomes  # killed mid-way, then done


def test_an_instance_that_cannot_be_opened_is_one_sentence_and_exit_1(sim, tmp_path):
    # The production profile copied into the home, DAGSTER_PG_URL forgotten: one line naming it, no traceback.
    env = cli_env(sim, tmp_path)
    home = Path(env["DAGSTER_HOME"])
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml").read_text())
    env.pop("DAGSTER_PG_URL", None)
    for args in (["budget"], ["backfill", "--start", str(START), "--end", str(START)]):
        out = amd(env, *args, cwd=tmp_path)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.strip() == (
            f"error: {home / 'dagster.yaml'} reads the environment variable DAGSTER_PG_URL, which is not set: "
            "set it (DAGSTER_PG_URL is the production profile's PostgreSQL URL)"
        ), out.stderr
    assert sim.stats()["requests"] == 0


def test_an_unreachable_instance_database_is_named_without_its_url():
    from amd_pipeline.orchestration.instance import cannot_open

    exc = RuntimeError("could not connect to postgresql://amd:SECRET-pw@db:5432/dagster")
    said = cannot_open(Path("/srv/home"), exc)
    assert said.startswith("cannot open the Dagster instance in /srv/home (RuntimeError)") and "SECRET" not in said


@pytest.mark.parametrize("demo", [[], ["--demo"]], ids=["dev", "dev --demo"])
def test_dev_refuses_a_port_in_use_in_one_line_before_starting_anything(tmp_path, demo):
    # dagster dev itself would start its daemon anyway and serve no UI, and keep running.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    workspace = str(Path(__file__).resolve().parents[1] / "workspace.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = amd(env, "dev", *demo, "--port", str(port), "--home", "home", "--workspace", workspace, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert re.fullmatch(rf"error: port {port} on 127\.0\.0\.1 is already in use .*--port N\n", done.stderr)
    assert list(tmp_path.iterdir()) == []  # no home, no DuckDB file


FAKE_DEV = textwrap.dedent("""
    # Stands for `dagster dev`: one child, both stop on Ctrl-C, or with "deaf" neither does.
    import signal, subprocess, sys, time
    deaf = sys.argv[1] == "deaf"
    if deaf:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # kept by the child too
    stop = "" if deaf else "signal.signal(signal.SIGINT, lambda *_: sys.exit(0)); "
    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; " + stop + "time.sleep(120)"])
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        child.wait()
""")
SUPERVISE = (
    "import os, sys; from amd_pipeline.cli.dev import run_dagster_dev\n"
    "sys.exit(run_dagster_dev(sys.argv[1:], dict(os.environ)))\n"
)


@pytest.mark.posix
@pytest.mark.linux  # the tree is found through /proc (process_tree.py)
@pytest.mark.parametrize(
    ("sig", "deaf", "status"), [("SIGHUP", False, 0), ("SIGTERM", True, 130)], ids=["stops", "deaf: killed"]
)
def test_dev_passes_a_stop_signal_on_as_ctrl_c_and_kills_what_is_left_after_the_grace(tmp_path, sig, deaf, status):
    from amd_pipeline.cli.dev import STOP_GRACE_S
    from amd_pipeline_tests import process_tree

    env = {**os.environ, **process_tree.new_mark()}
    argv = [sys.executable, "-c", FAKE_DEV, "deaf" if deaf else "hears"]
    dev = forkserver.start(argv, env=env, cwd=tmp_path, script=SUPERVISE)
    try:
        deadline = time.monotonic() + 30
        # The fake and its child (the forked `dev` itself is not seen: its mark was set after it started).
        while len(process_tree.marked(env)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(dev.pid, getattr(signal, sig))
        sent = time.monotonic()
        done = dev.wait(STOP_GRACE_S + 20)
        left = process_tree.wait_until_gone(env, 5)
        took = time.monotonic() - sent
    finally:
        process_tree.kill_marked(env)
    assert left == [] and done.returncode == status, (left, done)
    killed = "killing what is left of it" in done.stderr
    assert killed == deaf and (took >= STOP_GRACE_S) == deaf, (took, done.stderr)


@pytest.mark.parametrize(("cron", "said"), [(None, "refresh every minute"), ("0 0 1 1 *", "refresh at '0 0 1 1 *'")])
def test_dev_demo_says_the_refresh_its_operations_were_given(tmp_path, monkeypatch, capsys, cron, said):
    # `dagster dev` stood for by a command that ends at once: what matters is what the demo wrote and said.
    from amd_pipeline.cli.demo import run_dev_demo

    if cron is None:
        monkeypatch.delenv("AMD_REFRESH_CRON", raising=False)
    else:
        monkeypatch.setenv("AMD_REFRESH_CRON", cron)
    argv = [sys.executable, "-c", "pass"]
    assert run_dev_demo(home=tmp_path, argv=argv, duckdb_path=str(tmp_path / "amd.duckdb"), latency_ms=0, port=1) == 0
    for op_id in ("demo_bog", "demo_mex"):
        written = yaml.safe_load((tmp_path / "demo_operations" / op_id / "defs.yaml").read_text())
        assert written["attributes"]["refresh_cron"] == (cron or "* * * * *")
    assert f"; {said} into " in capsys.readouterr().err
