"""The real `dagster dev`: `amd-pipeline dev --demo` as a script or launcher starts it (in the background),
used as the UI is, stopped with SIGTERM; plain `amd-pipeline dev` from a terminal, stopped with Ctrl-C.

Everything else about the daemon (which runs a UI backfill becomes, answers reused between them, which
days a refresh reads, the sensor adding campaigns) is checked in-process in test_daemons.py; this test
is about the processes: the webserver, the daemon and the code servers really start; the demo's two
operations (two simulators, two tokens, Bogota and Mexico City, the same campaign ids) each get a UI
backfill launched as the UI does (GraphQL ``launchPartitionBackfill``), both at once, and the two loads
really run side by side in run workers, each token one request at a time, into the one published file;
a tick of a refresh schedule runs; and a stop signal stops every process of the tree, those started
late included, however `dev` was launched. The control starts `dagster dev` itself the same background
way (what `dev` used to exec into): SIGTERM leaves all of it running.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.simulator import truth_for_day
from amd_pipeline_tests import forkserver, process_tree
from amd_pipeline_tests.secret_scan import secret_hits

# Process groups and POSIX signals, and the tree found through /proc (process_tree.py).
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.posix, pytest.mark.linux]
CLI = forkserver.CLI
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
CAMPAIGNS = ["20717", "20718", "20731"]
# `dev --demo`'s two operations (demo.py) and their zones: two simulated servers, the same campaign ids.
OPERATIONS = {"demo_bog": "America/Bogota", "demo_mex": "America/Mexico_City"}
UI_DAYS = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(30)]
# The simulators' latency here: an operation's 30 calls take about 12 s, long beside the few seconds between
# its first run's start and the other operation's, so whether the two loads ran side by side shows in the
# simulators' request logs.
DEMO_LATENCY_MS = 400


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev(
    env: dict[str, str], cwd: Path, log: Path, *extra: str, background: bool = False, command=None
) -> tuple[subprocess.Popen, int]:
    """`amd-pipeline dev` (or ``command(port)``) on a free port, once its UI answers.

    A session of its own (a test's Ctrl-C reaches that session's group). From a terminal, SIGINT is at its
    default (a suite started in the background ignores SIGINT, and a process that starts with it ignored
    keeps ignoring it); with ``background``, SIGINT is ignored, as a script's ``... &`` or ``nohup`` hands it.
    Its output goes to ``log``. The port was free when picked; if another process takes it first, the
    webserver cannot bind it, and another port is tried.
    """
    sigint = signal.SIG_IGN if background else signal.SIG_DFL
    for _ in range(3):
        port = free_port()
        argv = command(port) if command else [CLI, "dev", *extra, "--port", str(port), "--workspace", str(WORKSPACE)]
        with open(log, "w") as out:
            dev = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
            )
        if wait_for(functools.partial(settled, dev, port, log), 120) == "serving":
            return dev, port
        process_tree.kill_marked(env)
        dev.wait(10)
        if "address already in use" not in log.read_text().lower():
            break
    raise AssertionError(f"`amd-pipeline dev` did not serve its UI:\n{log.read_text()[-3000:]}")


def settled(dev: subprocess.Popen, port: int, log: Path) -> str | None:
    """ "serving" once the UI answers; "failed" if `dev` ended or its webserver could not bind the port
    (`dagster dev` itself keeps running then); None while it starts."""
    if dev.poll() is not None or "address already in use" in log.read_text().lower():
        return "failed"
    return "serving" if graphql(port, "{ version }") else None


def wait_for(what, seconds: float, every: float = 1.0):
    """``what()`` once it is truthy (OSError counts as not yet), or its last value at the deadline."""
    deadline, value = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            value = what()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(every)
    return value


def campaign_partitions(port: int, asset: list[str]) -> list[str]:
    nodes = graphql(port, "{ assetNodes { assetKey { path } partitionKeysByDimension { name partitionKeys } } }")
    [daily] = [n for n in nodes["assetNodes"] if n["assetKey"]["path"] == asset]
    return {d["name"]: d["partitionKeys"] for d in daily["partitionKeysByDimension"]}["campaign"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    env.update(AMD_START_DATE="2026-01-01", **process_tree.new_mark(), **extra)
    return env


def stopped_cleanly(log: Path) -> bool:
    """`dagster dev` shut its services down itself: nothing had to be killed after the grace."""
    text = log.read_text()
    return "Dagster services shut down." in text and "killing what is left" not in text


def launch_backfill(port: int, op_id: str) -> str:
    """A UI backfill of the operation's 3 campaigns x UI_DAYS, as the UI's "Materialize" dialog launches it."""
    launched = graphql(
        port,
        "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {"
        " ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
        {
            "p": {
                "partitionNames": [f"{c}|{d}" for c in CAMPAIGNS for d in UI_DAYS],
                "assetSelection": [{"path": [op_id, "amd_daily"]}],
            }
        },
    )["launchPartitionBackfill"]
    assert "backfillId" in launched, launched
    return launched["backfillId"]


def backfill_runs(port: int, backfill_id: str) -> list[dict]:
    return graphql(
        port,
        "query($id: String!) { partitionBackfillOrError(backfillId: $id) {"
        " ... on PartitionBackfill { runs { runId status } } } }",
        {"id": backfill_id},
    )["partitionBackfillOrError"]["runs"]


def refresh_runs(port: int) -> list[tuple[str, str, str]]:
    """(operation, run id, status) of every refresh run."""
    runs = graphql(
        port,
        'query { runsOrError(filter: {tags: [{key: "amd_pipeline/source", value: "refresh"}]}) {'
        " ... on Runs { results { runId status tags { key value } } } } }",
    )["runsOrError"]["results"]
    return [
        ({t["key"]: t["value"] for t in r["tags"]}.get("amd_pipeline/operation", ""), r["runId"], r["status"])
        for r in runs
    ]


def simulator_url(home: Path, op_id: str) -> str:
    """Where `dev --demo` put the operation's simulator: the base_url of the defs.yaml it wrote."""
    text = (home / "demo_operations" / op_id / "defs.yaml").read_text()
    return re.search(r"base_url: (\S+)", text).group(1)


def sim_get(url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:
        return json.load(response)


def backfill_calls(requests: list[dict]) -> list[dict]:
    """The campaign_6 requests for UI_DAYS (a refresh asks for today and yesterday)."""
    days = {d.strftime("%Y%m%d") for d in UI_DAYS}
    return [r for r in requests if r["api"] == "campaign_6" and r["date_ini"][:8] in days]


def test_dev_demo_launched_in_the_background_runs_two_operations_ui_backfills_side_by_side_and_sigterm_stops_it_all(
    tmp_path,
):
    env = clean_env()
    log = tmp_path / "dev.log"
    home = tmp_path / ".dagster_home"
    dev, port = start_dev(env, tmp_path, log, "--demo", "--latency-ms", str(DEMO_LATENCY_MS), background=True)
    try:
        # Each operation's sensor discovers its simulator's campaigns as soon as the daemon starts.
        for op_id in OPERATIONS:
            found = wait_for(lambda op_id=op_id: campaign_partitions(port, [op_id, "amd_daily"]) == CAMPAIGNS, 120)
            assert found, f"{op_id}: {log.read_text()[-3000:]}"
        schedules = graphql(
            port,
            '{ schedulesOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: '
            '"amd_pipeline"}) { ... on Schedules { results { name cronSchedule scheduleState { status } } } } }',
        )["schedulesOrError"]["results"]
        refreshes = {s["name"]: s for s in schedules if s["name"].endswith("amd_daily_refresh")}
        assert sorted(refreshes) == [f"{op_id}__amd_daily_refresh" for op_id in OPERATIONS]
        assert all(s["cronSchedule"] == "* * * * *" for s in refreshes.values())
        assert all(s["scheduleState"]["status"] == "RUNNING" for s in refreshes.values())
        # Both backfills at once: the daemon picks them up in one of its 30 s iterations.
        backfills = {op_id: launch_backfill(port, op_id) for op_id in OPERATIONS}

        def finished():
            runs = {op_id: backfill_runs(port, backfill_id) for op_id, backfill_id in backfills.items()}
            done = all(len(r) == 3 and all(x["status"] in ("SUCCESS", "FAILURE") for x in r) for r in runs.values())
            ticked = [(op_id, run_id) for op_id, run_id, status in refresh_runs(port) if status == "SUCCESS"]
            return (runs, ticked) if done and ticked else None

        # The backfill daemon looks every 30 s and the schedules tick on the minute: one to two minutes.
        outcome = wait_for(finished, 300, every=2)
        assert outcome, log.read_text()[-3000:]
        runs, refreshed = outcome
        # What the demo handed its children: the throwaway tokens, one per operation.
        demo_env = next(
            e for e in map(process_tree.environ_of, process_tree.marked(env)) if "WOLKVOX_TOKEN_DEMO_BOG" in e
        )
        tokens = {op_id: demo_env[f"WOLKVOX_TOKEN_{op_id.upper()}"] for op_id in OPERATIONS}
        urls = {op_id: simulator_url(home, op_id) for op_id in OPERATIONS}
        stats = {op_id: sim_get(url, "/_sim/stats") for op_id, url in urls.items()}
        requests = {op_id: sim_get(url, "/_sim/requests")["requests"] for op_id, url in urls.items()}
        tree = process_tree.marked(env)
    finally:
        dev.send_signal(signal.SIGTERM)  # to `amd-pipeline dev` only, as `kill PID` or a launcher does
        left = process_tree.wait_until_gone(env, 30)
        process_tree.kill_marked(env)  # nothing outlives the test, whatever happened
        status = dev.wait(10)

    assert left == [], f"still running 30 s after SIGTERM: {left}\n{log.read_text()[-2000:]}"
    assert status == 0 and stopped_cleanly(log), log.read_text()[-2000:]
    assert len(tree) >= 4  # amd-pipeline, dagster dev, its webserver, daemon, code servers
    assert {op_id: {r["status"] for r in r_} for op_id, r_ in runs.items()} == {op: {"SUCCESS"} for op in OPERATIONS}
    assert tokens["demo_bog"] != tokens["demo_mex"] and urls["demo_bog"] != urls["demo_mex"]

    # Each token: never two requests at once, every one accepted (its own token, on its own server), and the
    # backfill in one campaign_id=all call a day (the later runs of a backfill take the first run's answers).
    calls = {op_id: backfill_calls(requests[op_id]) for op_id in OPERATIONS}
    for op_id in OPERATIONS:
        assert stats[op_id]["overlaps"] == 0, (op_id, stats[op_id])
        assert set(stats[op_id]["statuses"]) <= {"200", "404"}, (op_id, stats[op_id])
        assert len(UI_DAYS) <= len(calls[op_id]) <= len(UI_DAYS) + 1, (op_id, len(calls[op_id]))
        assert {c["campaign_id"] for c in calls[op_id]} == {"all"}

    # The two loads ran side by side: each operation's backfill calls span a stretch of time, and the two
    # stretches share a good part of the shorter one (seen: 70%). With one lane for both operations the
    # second stretch starts after the first ends (shared < 0).
    spans = {op_id: (min(c["start"] for c in cs), max(c["end"] for c in cs)) for op_id, cs in calls.items()}
    (a0, a1), (b0, b1) = spans.values()
    shared = min(a1, b1) - max(a0, b0)
    assert shared >= min(a1 - a0, b1 - b0) / 3, f"shared {shared:.1f} s of {spans}"

    # The one published file: each operation's rows under its id, equal to its own simulator's truth.
    store = AmdStore(tmp_path / "data" / "amd.duckdb")
    assert set(OPERATIONS) <= set(store.operations())
    ui = store.query(
        "SELECT operation, campaign, count(*) AS n FROM api_requests WHERE source = 'ui' GROUP BY ALL ORDER BY ALL"
    )
    assert list(ui.itertuples(index=False, name=None)) == [(op_id, "all", len(UI_DAYS)) for op_id in OPERATIONS]
    rows = store.query("SELECT operation, campaign_id, local_date, total_amd, is_final FROM amd_daily ORDER BY ALL")
    backfilled = rows[rows.local_date.dt.date.between(UI_DAYS[0], UI_DAYS[-1])]
    for op_id in OPERATIONS:
        own = backfilled[backfilled.operation == op_id]
        assert len(own) == len(CAMPAIGNS) * len(UI_DAYS), op_id
        wrong = [r for r in own.itertuples() if r.total_amd != truth_for_day(r.campaign_id, r.local_date.date(), op_id)]
        assert wrong == [], (op_id, wrong[:3])
    # The two truths differ on these days, so a row loaded under the other operation would show above.
    assert any(truth_for_day(c, d, "demo_bog") != truth_for_day(c, d, "demo_mex") for c in CAMPAIGNS for d in UI_DAYS)

    # A refresh's run: one campaign_id=all call a day for today (and yesterday, on the day's first tick), and
    # today's rows, open, in its operation's own zone.
    op_id, run_id = refreshed[0]
    refresh = store.query(
        "SELECT count(*) AS calls, count(DISTINCT date_ini) AS days, min(campaign) AS campaign, "
        f"min(operation) AS operation FROM api_requests WHERE source = 'refresh' AND run_id = '{run_id}'"
    )
    assert refresh.calls[0] == refresh.days[0] in (1, 2) and refresh.campaign[0] == "all"
    assert refresh.operation[0] == op_id
    today = dt.datetime.now(ZoneInfo(OPERATIONS[op_id])).date()
    todays = rows[(rows.operation == op_id) & (rows.local_date.dt.date == today)]
    assert sorted(todays.campaign_id) == CAMPAIGNS and not todays.is_final.any()

    # The tokens are secrets: not in the output, the instance, the compute logs or the DuckDB files.
    output = log.read_text()
    assert re.search(
        r"demo: two Wolkvox simulators, demo_bog \(America/Bogota\) at http://127\.0\.0\.1:\d+; "
        r"demo_mex \(America/Mexico_City\) at http://127\.0\.0\.1:\d+",
        output,
    )
    compute_logs = [p.read_text() for p in (home / "storage").rglob("compute_logs/*.err")]
    for op_id, zone in OPERATIONS.items():
        assert any(f"plan ({op_id}, {zone}" in text for text in compute_logs), op_id
    for op_id, token in tokens.items():
        assert secret_hits(tmp_path, token) == [], op_id


def test_ctrl_c_in_the_terminal_stops_every_process_of_plain_dev(tmp_path):
    env = clean_env()
    log = tmp_path / "dev.log"
    dev, _ = start_dev(env, tmp_path, log, "--home", str(tmp_path / "home"))
    try:
        assert len(process_tree.marked(env)) >= 4
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C in the terminal: its foreground group, `amd-pipeline dev`'s
        left = process_tree.wait_until_gone(env, 30)
        process_tree.kill_marked(env)
        status = dev.wait(10)
    assert left == [], f"still running 30 s after Ctrl-C: {left}\n{log.read_text()[-2000:]}"
    assert status == 0 and stopped_cleanly(log), log.read_text()[-2000:]


def test_control_dagster_dev_launched_in_the_background_keeps_running_after_sigterm(tmp_path):
    # What `amd-pipeline dev` exec'd into, and what `dev --demo` started, before they caught the stop
    # signals: `dagster dev` with SIGINT ignored maps SIGTERM to "ignored" too, and its webserver and
    # daemon stop by sending themselves SIGINT. The tests above would see this tree stay.
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(DAGSTER_HOME=str(home))
    dagster = str(Path(sys.executable).parent / "dagster")
    log = tmp_path / "dev.log"
    dev, _ = start_dev(
        env,
        tmp_path,
        log,
        background=True,
        command=lambda port: [dagster, "dev", "-w", str(WORKSPACE), "-p", str(port)],
    )
    try:
        tree = process_tree.marked(env)
        dev.send_signal(signal.SIGTERM)
        left = process_tree.wait_until_gone(env, 10)  # the fixed `dev` is gone in 2-6 s
    finally:
        process_tree.kill_marked(env)
        dev.wait(10)
    assert len(tree) >= 4 and left == tree


LATE_CHILD = textwrap.dedent("""
    import signal, subprocess, sys, time
    time.sleep(0.5)  # starts after the tree was first looked at
    subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"],
        start_new_session=True,  # out of the group a Ctrl-C reaches
    )
    signal.pause()
""")


def test_the_tree_check_finds_a_child_started_late_that_outlives_ctrl_c(tmp_path):
    # Control for the check above: a process that starts after the tree was first seen, in a session of
    # its own and deaf to SIGINT, survives the Ctrl-C. A snapshot of the children taken at the start
    # cannot see it; the mark does, and kill_marked stops it.
    env = {**os.environ, **process_tree.new_mark()}
    parent = subprocess.Popen(
        [sys.executable, "-c", LATE_CHILD],
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal (see start_dev)
    )
    try:
        snapshot = process_tree.marked(env)
        assert snapshot == [parent.pid]
        assert wait_for(lambda: len(process_tree.marked(env)) == 2, 30, every=0.1)
        os.killpg(parent.pid, signal.SIGINT)
        parent.wait(30)
        left = process_tree.wait_until_gone(env, 2)
        assert len(left) == 1 and left[0] not in snapshot
    finally:
        process_tree.kill_marked(env)
    assert process_tree.wait_until_gone(env, 10) == []
