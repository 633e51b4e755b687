"""The real `dagster dev`: `amd-pipeline dev --demo` as a script or launcher starts it (in the background),
used as the UI is, stopped with SIGTERM; plain `amd-pipeline dev` from a terminal, stopped with Ctrl-C.

Everything else about the daemon (which runs a UI backfill becomes, answers reused between them, which
days a refresh reads, the sensor adding campaigns) is checked in-process in test_daemons.py; this test
is about the processes: the webserver, the daemon and the code servers really start, a backfill launched
as the UI does (GraphQL ``launchPartitionBackfill``) and one tick of the refresh schedule really run
in run workers, and a stop signal stops every process of the tree, those started late included, however
`dev` was launched. The control starts `dagster dev` itself the same background way (what `dev` used to
exec into): SIGTERM leaves all of it running.
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
UI_DAYS = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(4)]


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


def campaign_partitions(port: int) -> list[str]:
    nodes = graphql(port, "{ assetNodes { assetKey { path } partitionKeysByDimension { name partitionKeys } } }")
    [daily] = [n for n in nodes["assetNodes"] if n["assetKey"]["path"] == ["amd_daily"]]
    return {d["name"]: d["partitionKeys"] for d in daily["partitionKeysByDimension"]}["campaign"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    env.update(AMD_START_DATE="2026-01-01", **process_tree.new_mark(), **extra)
    return env


def stopped_cleanly(log: Path) -> bool:
    """`dagster dev` shut its services down itself: nothing had to be killed after the grace."""
    text = log.read_text()
    return "Dagster services shut down." in text and "killing what is left" not in text


def test_dev_demo_launched_in_the_background_serves_a_ui_backfill_and_a_schedule_tick_and_sigterm_stops_it_all(
    tmp_path,
):
    env = clean_env()
    log = tmp_path / "dev.log"
    dev, port = start_dev(env, tmp_path, log, "--demo", background=True)
    try:
        # The sensor discovers the simulator's campaigns as soon as the daemon starts.
        assert wait_for(lambda: campaign_partitions(port) == CAMPAIGNS, 120), log.read_text()[-3000:]
        schedules = graphql(
            port,
            '{ schedulesOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: '
            '"amd_pipeline"}) { ... on Schedules { results { name cronSchedule scheduleState { status } } } } }',
        )["schedulesOrError"]["results"]
        refresh = next(s for s in schedules if s["name"] == "amd_daily_refresh")
        assert refresh["cronSchedule"] == "* * * * *" and refresh["scheduleState"]["status"] == "RUNNING"
        launched = graphql(
            port,
            "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {"
            " ... on LaunchBackfillSuccess { backfillId } } }",
            {
                "p": {
                    "partitionNames": [f"{c}|{d}" for c in CAMPAIGNS for d in UI_DAYS],
                    "assetSelection": [{"path": ["amd_daily"]}],
                }
            },
        )
        backfill_id = launched["launchPartitionBackfill"]["backfillId"]

        def finished():
            backfill = graphql(
                port,
                "query($id: String!) { partitionBackfillOrError(backfillId: $id) {"
                " ... on PartitionBackfill { runs { status } } } }",
                {"id": backfill_id},
            )["partitionBackfillOrError"]["runs"]
            refreshes = graphql(
                port,
                'query { runsOrError(filter: {tags: [{key: "amd_pipeline/source", value: "refresh"}]}) {'
                " ... on Runs { results { runId status } } } }",
            )["runsOrError"]["results"]
            done = len(backfill) == 3 and all(r["status"] in ("SUCCESS", "FAILURE") for r in backfill)
            ticked = [r["runId"] for r in refreshes if r["status"] == "SUCCESS"]
            return (backfill, ticked) if done and ticked else None

        # The backfill daemon looks every 30 s and the schedule ticks on the minute: about a minute.
        outcome = wait_for(finished, 240, every=2)
        assert outcome, log.read_text()[-3000:]
        backfill, refreshed = outcome
        # What the demo handed its children: the simulator's address and its throwaway token.
        demo_env = next(e for e in map(process_tree.environ_of, process_tree.marked(env)) if "WOLKVOX_TOKEN" in e)
        stats = json.load(urllib.request.urlopen(f"{demo_env['WOLKVOX_BASE_URL']}/_sim/stats", timeout=10))
        tree = process_tree.marked(env)
    finally:
        dev.send_signal(signal.SIGTERM)  # to `amd-pipeline dev` only, as `kill PID` or a launcher does
        left = process_tree.wait_until_gone(env, 30)
        process_tree.kill_marked(env)  # nothing outlives the test, whatever happened
        status = dev.wait(10)

    assert left == [], f"still running 30 s after SIGTERM: {left}\n{log.read_text()[-2000:]}"
    assert status == 0 and stopped_cleanly(log), log.read_text()[-2000:]
    assert len(tree) >= 4  # amd-pipeline, dagster dev, its webserver, daemon, code servers
    assert {r["status"] for r in backfill} == {"SUCCESS"}
    store = AmdStore(tmp_path / "data" / "amd.duckdb")
    ui = store.query("SELECT campaign, count(*) AS n FROM api_requests WHERE source = 'ui' GROUP BY ALL")
    assert dict(zip(ui.campaign, ui.n, strict=True)) == {"all": len(UI_DAYS)}  # one call a day, answers reused
    rows = store.query("SELECT campaign_id, local_date, total_amd, is_final FROM amd_daily ORDER BY ALL")
    backfilled = rows[rows.local_date.dt.date <= UI_DAYS[-1]]
    assert len(backfilled) == 3 * len(UI_DAYS)
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in backfilled.itertuples())
    # The refresh's run: one campaign_id=all call a day for today (and yesterday, on the day's first tick).
    calls = store.query(
        "SELECT count(*) AS calls, count(DISTINCT date_ini) AS days, min(campaign) AS campaign FROM api_requests "
        f"WHERE source = 'refresh' AND run_id = '{refreshed[0]}'"
    )
    assert calls.calls[0] == calls.days[0] in (1, 2) and calls.campaign[0] == "all"
    today = dt.datetime.now(ZoneInfo("America/Bogota")).date()
    todays = rows[rows.local_date.dt.date == today]
    assert sorted(todays.campaign_id) == CAMPAIGNS and not todays.is_final.any()
    assert stats["overlaps"] == 0 and stats["requests"] > 0
    # The token is a secret: not in the output, the instance, the compute logs or the DuckDB files.
    token = demo_env["WOLKVOX_TOKEN"]
    output = log.read_text()
    assert re.search(r"demo: Wolkvox simulator at http://127\.0\.0\.1:\d+", output)
    compute_logs = list((tmp_path / ".dagster_home" / "storage").rglob("compute_logs/*.err"))
    assert compute_logs and any("plan (America/Bogota" in p.read_text() for p in compute_logs)
    assert secret_hits(tmp_path, token) == []


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
