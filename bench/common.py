"""What the benchmarks share: the simulator as a process, a clean environment, timing, the truth check.

The benchmarks are run as ``python bench/<name>.py``; Python then puts this folder on ``sys.path``, so
they ``import common``. Each benchmark keeps only what it measures.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import duckdb

from amd_pipeline.wolkvox.simulator import truth_for_day

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "amd-pipeline")
# The campaigns and token of the backfill and scale benchmarks' simulator (scale sets its own campaigns).
CAMPAIGNS = ["20717", "20718", "20731"]
TOKEN = "bench-token"
# Settings of the machine a benchmark runs on that would change what it measures.
OURS = ("WOLKVOX_", "AMD_", "DAGSTER_")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.load(response)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    return http(f"http://127.0.0.1:{port}/graphql", {"query": query, "variables": variables or {}})


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60) -> bool:
    """Signal the process group of ``proc`` (started with start_new_session), wait; SIGKILL it if it hangs.

    True when it ended on the first signal.
    """
    if proc.poll() is not None:
        return True
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return True
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return False


class SimProcess:
    """``amd-pipeline simulator`` on a free loopback port, in its own process group; ready when it answers."""

    def __init__(
        self,
        latency_ms: float,
        *,
        token: str = TOKEN,
        campaigns: int | None = None,
        daily_quota: int = 100_000_000,
        extra: Sequence[str] = (),
        log_path: Path | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            CLI,
            "simulator",
            "--port",
            str(self.port),
            "--token",
            token,
            "--latency-ms",
            str(latency_ms),
            "--daily-quota",
            str(daily_quota),
            *(["--campaigns", str(campaigns)] if campaigns else []),
            *extra,
        ]
        self.log = open(log_path, "w") if log_path else None  # noqa: SIM115 - closed in stop()
        output = self.log or subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("simulator did not start" + (f" (see {log_path})" if log_path else ""))

    def stats(self) -> dict:
        return http(self.url + "/_sim/stats")

    def reset(self) -> None:
        http(self.url + "/_sim/reset", {})

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGTERM, 10)
        if self.log:
            self.log.close()


def clean_env() -> dict[str, str]:
    """This process's environment without the project's and Dagster's settings: each benchmark sets its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OURS)}


def bench_env(sim: SimProcess, workdir: Path, home: Path, duckdb_path: Path, campaign_all: str) -> dict[str, str]:
    """The CLI's environment for a measured backfill: the simulator, CAMPAIGNS, no scheduled calls."""
    env = clean_env()
    env.update(
        WOLKVOX_BASE_URL=sim.url,
        WOLKVOX_TOKEN=TOKEN,
        AMD_CAMPAIGNS=",".join(CAMPAIGNS),
        AMD_DUCKDB_PATH=str(duckdb_path),
        AMD_START_DATE="2024-01-01",
        AMD_LOCK_DIR=str(workdir / "locks"),
        DAGSTER_HOME=str(home),
        WOLKVOX_CAMPAIGN_ALL=campaign_all,
        # No scheduled refresh or restatement during a measurement (they would share the token).
        AMD_REFRESH_CRON="0 0 1 1 *",
        AMD_RESTATE_CRON="0 0 1 1 *",
    )
    return env


def timed(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float | None = None) -> dict:
    """Run ``cmd``: wall seconds, process start/end (epoch), peak RSS (MB), CPU seconds, exit code, stderr tail.

    With ``timeout`` the process is killed after that many seconds (and the stderr tail says so).
    """
    began = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(timeout, proc.kill) if timeout else None
    if killer:
        killer.start()
    try:
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if killer:
            killer.cancel()
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if timeout and code == -9 and wall >= timeout:
        stderr += f"\n(killed after the {timeout:g} s time limit)"
    return {
        "wall": wall,
        "began": began,
        "ended": began + wall,
        "rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "code": code,
        "stderr": stderr[-800:],
    }


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def verify(duckdb_path: Path, windows: int) -> str:
    """The DuckDB file's amd_daily against the simulator's ground truth, in one line."""
    conn = duckdb.connect(str(duckdb_path), read_only=True)
    rows = conn.execute("SELECT campaign_id, local_date, total_amd FROM amd_daily").fetchall()
    conn.close()
    bad = sum(1 for c, d, n in rows if n != truth_for_day(c, d))
    if len(rows) != windows or bad:
        return f"MISMATCH ({len(rows)} rows for {windows} windows, {bad} differ from the ground truth)"
    return f"{len(rows)} rows = ground truth"


def days_span(days: int) -> tuple[dt.date, dt.date]:
    end = dt.date(2026, 10, 31)
    return end - dt.timedelta(days=days - 1), end


def machine() -> str:
    import dagster

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    versions = f"Python {platform.python_version()}, dagster {dagster.__version__}, duckdb {duckdb.__version__}"
    return f"{os.cpu_count()} cores ({cpu}), {versions}"


PROGRESS_LINE = re.compile(r"^\d+/\d+ windows, ")  # the amd_daily step's progress log


def last_answer_taken(logs) -> float | None:
    """When the step took its last answer: its last progress line ("180/180 windows, ..."), logged then.
    Materialisations may come before it (a CLI run logs them during the load), so they cannot mark it.
    """
    stamps = [e.timestamp for e in logs if e.dagster_event is None and PROGRESS_LINE.match(e.user_message)]
    return stamps[-1] if stamps else None
