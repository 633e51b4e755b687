"""Several operations from the command line, against two simulators: each its own token, zone and truth
(the same campaign ids), loading at once into one analysts' file, each within its own budget."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from pathlib import Path

import duckdb
import pytest
import yaml

from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, truth_for_day
from amd_pipeline.wolkvox.windows import day_window
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.barrier import runs_at_once
from amd_pipeline_tests.conftest import CONTENTION

START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 10)
ZONES = {"acme_bog": "America/Bogota", "beta_mex": "America/Mexico_City"}


@contextlib.contextmanager
def two_servers(latency_ms: float = 0, **config):
    """Two simulated operations: each its own token, zone and detections for the same campaign ids."""
    with contextlib.ExitStack() as stack:
        sims = {
            op: stack.enter_context(
                Simulator(
                    SimConfig(
                        token=f"SECRET-{op}-" + os.urandom(6).hex(),
                        latency_ms=latency_ms,
                        timezone=zone,
                        operation=op,
                        **config,
                    )
                )
            )
            for op, zone in ZONES.items()
        }
        yield sims


def operations_env(tmp_path: Path, sims: dict[str, Simulator], **attributes) -> dict[str, str]:
    """Operation folders for ``sims`` (``attributes[op]`` adds to one's defs.yaml) and the environment the
    commands run in: the tokens in their variables, nothing of the single-operation setup."""
    folder = tmp_path / "operations"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    for op, sim in sims.items():
        (folder / op).mkdir(parents=True, exist_ok=True)
        fields = {
            "id": op,
            "base_url": sim.url,
            "token_env": f"WOLKVOX_TOKEN_{op.upper()}",
            "timezone": ZONES[op],
            "start_date": "2026-01-01",
            "campaigns": ["20717", "20718", "20731"],
            "daily_quota": 100000,
            **attributes.get(op, {}),
        }
        (folder / op / "defs.yaml").write_text(
            yaml.safe_dump({"type": "amd_pipeline.WolkvoxOperation", "attributes": fields})
        )
        env.setdefault(fields["token_env"], sim.config.token)  # a shared token: the first server's
    env.update(
        AMD_OPERATIONS_DIR=str(folder),
        AMD_DUCKDB_PATH=str(tmp_path / "data" / "amd.duckdb"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        AMD_LOCK_DIR=str(tmp_path / "locks"),
        WOLKVOX_BACKOFF_BASE_MS="5",
        WOLKVOX_MAINTENANCE_DELAY_MS="5",
    )
    return env


def amd(env, *args, cwd, script: str | None = None):
    return forkserver.run(list(args), env=env, cwd=cwd, script=script)


def backfill_args(op: str, start=START, end=END, *extra) -> list[str]:
    return ["backfill", "--operation", op, "--start", str(start), "--end", str(end), "--quiet", *extra]


def backfill_each(tmp_path: Path, published_path: Path, days: int) -> list:
    """A backfill of ``days`` days of each operation in turn, beta_mex publishing also to ``published_path``."""
    with two_servers() as sims:
        env = operations_env(tmp_path, sims, beta_mex={"published_path": str(published_path)})
        end = START + dt.timedelta(days=days - 1)
        return [amd(env, *backfill_args(op, START, end), cwd=tmp_path) for op in sims]


def rows_by_operation(path: Path) -> dict[str, dict[tuple[str, dt.date], int]]:
    rows = AmdStore(path).query("SELECT operation, campaign_id, local_date, total_amd, window_start FROM amd_daily")
    out: dict[str, dict] = {}
    for r in rows.itertuples():
        out.setdefault(r.operation, {})[(r.campaign_id, r.local_date.date())] = r.total_amd
        window = day_window(r.local_date.date(), ZONES[r.operation])
        assert r.window_start.to_pydatetime() == window.start, "a day's window is the operation's own local day"
    return out


def truth_of(op: str, campaigns=("20717", "20718", "20731"), start=START, end=END) -> dict:
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return {(c, d): truth_for_day(c, d, op) for c in campaigns for d in days}


def test_several_operations_need_operation_and_a_bad_defs_yaml_stops_every_command(tmp_path):
    with two_servers() as sims:
        env = operations_env(tmp_path, sims)
        refused = amd(env, "backfill", "--start", str(START), "--end", str(END), cwd=tmp_path)
        assert refused.returncode == 2
        assert refused.stderr.strip() == "error: there are 2 operations (acme_bog, beta_mex): pass --operation ID"
        assert not (tmp_path / "data").exists()
        (tmp_path / "operations" / "beta_mex" / "defs.yaml").write_text(
            (tmp_path / "operations" / "beta_mex" / "defs.yaml").read_text().replace("Mexico_City", "Mexico_Cty")
        )
        for command in (
            ["backfill", "--operation", "acme_bog", "--start", str(START), "--end", str(END)],
            ["budget"],
            ["operations"],
            ["dev", "--port", "39999"],  # refused before `dagster dev` starts (it would fail to load the location)
        ):
            bad = amd(env, *command, cwd=tmp_path)
            assert bad.returncode == 2, bad.stderr
            [line] = bad.stderr.strip().splitlines()
            assert line.startswith(f"error: {tmp_path / 'operations' / 'beta_mex' / 'defs.yaml'}: timezone=")
        assert sum(s.stats()["requests"] for s in sims.values()) == 0


def test_operations_lists_each_operation_and_its_tokens_budget(tmp_path):
    with two_servers() as sims:
        env = operations_env(tmp_path, sims, beta_mex={"daily_quota": 40, "quota_share": 0.25})
        done = amd(env, *backfill_args("beta_mex", START, START + dt.timedelta(days=2)), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        listed = amd(env, "operations", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"acme_bog: {sims['acme_bog'].url}, America/Bogota, from 2026-01-01")
    assert "0 of 50000 calls used today" in lines[1]
    assert lines[2].startswith(f"beta_mex: {sims['beta_mex'].url}, America/Mexico_City")
    # the pre-flight token_info, then 3 days of one campaign_id=all call each; the budget is 40 x 0.25
    assert "4 of 10 calls used today" in lines[3]
    for sim in sims.values():
        assert sim.config.token not in listed.stdout + listed.stderr


@pytest.mark.slow
@CONTENTION
@pytest.mark.parametrize("lanes", ["one per token", "one for every token (control)"])
def test_two_operations_load_at_once_into_one_file_without_waiting_for_each_others_calls(tmp_path, lanes):
    # Each operation's backfill starts its run at a barrier and makes 30 calls (one per campaign and day),
    # each answered in 40 ms. With a lane per token, requests to the two servers are in flight at the same
    # moments; the control makes every token one lane (a constant token key), as one global lock would.
    prelude = runs_at_once(tmp_path / "gate", 2)
    if lanes != "one per token":
        prelude += "import amd_pipeline.orchestration.resources as r\nr.token_key = lambda url, token: 'f' * 20\n"
    with two_servers(latency_ms=40) as sims:
        env = operations_env(tmp_path, sims, **{op: {"campaign_all": "off"} for op in ZONES})
        (tmp_path / "gate").mkdir()
        results = {}

        def go(op: str) -> None:
            results[op] = amd(env, *backfill_args(op), cwd=tmp_path, script=prelude + forkserver.CLI_MAIN)

        threads = [threading.Thread(target=go, args=(op,)) for op in sims]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        logs = {op: list(sim.state.log) for op, sim in sims.items()}
        stats = {op: sim.stats() for op, sim in sims.items()}
    for op, result in results.items():
        assert result.returncode == 0, (op, result.stderr[-2000:])
        assert stats[op]["overlaps"] == 0
        assert stats[op]["calls"]["campaign_6:one"] == 30
    published = rows_by_operation(tmp_path / "data" / "amd.duckdb")
    assert published == {op: truth_of(op) for op in sims}
    at_once = sum(
        1
        for a_start, a_end, _ in logs["acme_bog"]
        for b_start, b_end, _ in logs["beta_mex"]
        if a_start < b_end and b_start < a_end
    )
    if lanes == "one per token":
        assert at_once >= 3, f"only {at_once} requests of one operation were in flight beside the other's"
    else:
        assert at_once == 0


@pytest.mark.slow
@pytest.mark.parametrize("tokens", ["each its own", "one shared (control)"])
def test_one_operations_budget_refusal_never_blocks_the_other(tmp_path, tokens):
    with two_servers() as sims:
        shared = tokens != "each its own"
        budget = {"daily_quota": 40, "quota_share": 0.5}  # 20 calls a day each
        beta = {**budget}
        if shared:  # the same account: beta's folder names acme's server and token
            beta |= {"base_url": sims["acme_bog"].url, "token_env": "WOLKVOX_TOKEN_ACME_BOG"}
        env = operations_env(tmp_path, sims, acme_bog=budget, beta_mex=beta)
        # acme spends its whole budget: 30 days need 30 calls, --force spends the 20 it has, then stops (exit 4)
        spent = amd(env, *backfill_args("acme_bog", START, START + dt.timedelta(days=29), "--force"), cwd=tmp_path)
        assert spent.returncode == 4, spent.stderr
        beta_run = amd(env, *backfill_args("beta_mex", START, START + dt.timedelta(days=9)), cwd=tmp_path)
        stats = {op: sim.stats() for op, sim in sims.items()}
    if not shared:
        assert beta_run.returncode == 0, beta_run.stderr
        assert stats["acme_bog"]["requests"] == 20  # token_info and 19 calls: its whole budget
        assert stats["beta_mex"]["requests"] == 11  # token_info and 10 days
        published = rows_by_operation(tmp_path / "data" / "amd.duckdb")
        assert published["beta_mex"] == truth_of("beta_mex", end=START + dt.timedelta(days=9))
    else:  # one token, one budget: beta finds it spent and calls nothing
        assert beta_run.returncode == 4, beta_run.stderr
        assert "daily call budget of 20 reached (20 used)" in beta_run.stderr
        assert stats["acme_bog"]["requests"] == 20 and stats["beta_mex"]["requests"] == 0


def test_an_operation_published_to_a_file_of_its_own_holds_nothing_of_the_others(tmp_path):
    own = tmp_path / "clients" / "beta.duckdb"
    for done in backfill_each(tmp_path, own, days=3):
        assert done.returncode == 0, done.stderr
    shared = rows_by_operation(tmp_path / "data" / "amd.duckdb")
    assert set(shared) == {"acme_bog", "beta_mex"}
    conn = duckdb.connect(str(own), read_only=True)
    try:
        tables = [name for (name,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        held = {
            table: {o for (o,) in conn.execute(f'SELECT DISTINCT operation FROM "{table}"').fetchall()}
            for table in tables
            if "operation" in {c for (c,) in conn.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall()}
        }
    finally:
        conn.close()
    assert held["amd_daily"] == {"beta_mex"}
    assert all(found <= {"beta_mex"} for found in held.values()), held
    assert rows_by_operation(own) == {"beta_mex": truth_of("beta_mex", end=START + dt.timedelta(days=2))}


def test_query_report_and_export_show_one_operation_on_request(tmp_path):
    with two_servers() as sims:
        env = operations_env(tmp_path, sims)
        for op in sims:
            done = amd(env, *backfill_args(op, START, START + dt.timedelta(days=2)), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
    both = amd(env, "query", "--csv", "SELECT DISTINCT operation FROM amd_daily_trend ORDER BY 1", cwd=tmp_path)
    assert both.stdout.split() == ["operation", "acme_bog", "beta_mex"]
    one = amd(
        env, "query", "--csv", "--operation", "beta_mex", "SELECT DISTINCT operation FROM amd_daily_trend", cwd=tmp_path
    )
    assert one.stdout.split() == ["operation", "beta_mex"]
    unknown = amd(env, "query", "--operation", "gamma", "SELECT 1", cwd=tmp_path)
    assert unknown.returncode == 2 and "holds acme_bog, beta_mex" in unknown.stderr
    mistyped = amd(env, "migrate-timezone", "--to", "America/Lima", "--operation", "gama", cwd=tmp_path)
    assert mistyped.returncode == 2 and "'gama' is not in" in mistyped.stderr
    assert AmdStore(tmp_path / "data" / "amd.working.duckdb").operations() == ["acme_bog", "beta_mex"]
    exported = amd(env, "export", "--format", "csv", "--out", "out", "--operation", "acme_bog", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert {line.split(",")[0] for line in (tmp_path / "out" / "amd_daily.csv").read_text().splitlines()[1:]} == {
        "acme_bog"
    }
    report = amd(env, "report", "--out", "r.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "beta_mex" in (tmp_path / "r.html").read_text()


@pytest.mark.slow
def test_the_demo_never_loads_the_operation_folders(tmp_path):
    # A folder pointing at a server (here a second simulator standing for a real one) must get no call: the
    # demo is always the one operation of its own simulator.
    with two_servers() as sims:
        env = operations_env(tmp_path, {"acme_bog": sims["acme_bog"]})
        demo = amd(env, "demo", "--days", "3", "--fault-rate", "0", cwd=tmp_path)
        stats = sims["acme_bog"].stats()
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "9 equal the simulator's ground truth" in demo.stdout
    assert stats["requests"] == 0


def test_a_wrong_token_names_the_operations_own_variable(tmp_path):
    with two_servers() as sims:
        env = operations_env(tmp_path, sims)
        env["WOLKVOX_TOKEN_BETA_MEX"] = "SECRET-not-the-right-one"
        refused = amd(env, *backfill_args("beta_mex"), cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("for token info: check WOLKVOX_TOKEN_BETA_MEX"), refused.stderr


def test_an_own_file_that_is_the_shared_file_is_refused_and_the_shared_file_kept(tmp_path):
    shared = tmp_path / "data" / "amd.duckdb"
    done = backfill_each(tmp_path, shared, days=2)[-1]
    assert done.returncode == 1
    assert f"published_path {shared} of operation beta_mex is the analysts' shared file" in done.stderr
    assert set(rows_by_operation(shared)) == {"acme_bog", "beta_mex"}  # not overwritten with beta's alone
