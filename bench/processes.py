"""The `amd-pipeline` command as a benchmark's child process: a timed run, `dev` on a port, a stop.

The benchmarks are run as ``python bench/<name>.py``; Python then puts this folder on ``sys.path``, so
they import these modules by their plain names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "amd-pipeline")


def days_span(days: int) -> tuple[dt.date, dt.date]:
    """The ``days`` days a measured backfill covers, ending on the benchmarks' fixed last day."""
    end = dt.date(2026, 10, 31)
    return end - dt.timedelta(days=days - 1), end


def backfill_argv(start: dt.date, end: dt.date, campaigns: Sequence[str] = ()) -> list[str]:
    """`amd-pipeline backfill --quiet` of ``start``..``end``, of every campaign unless ``campaigns`` names some."""
    argv = [CLI, "backfill", "--start", str(start), "--end", str(end), "--quiet"]
    for campaign in campaigns:
        argv += ["--campaign", campaign]
    return argv


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


def start_dev(
    port: int, env: dict[str, str], cwd: Path, *, extra: Sequence[str] = (), output: IO | None = None
) -> subprocess.Popen:
    """`amd-pipeline dev` (with ``extra`` options) on ``port`` in its own process group; output to ``output``."""
    argv = [CLI, "dev", *extra, "--port", str(port), "--workspace", str(ROOT / "workspace.yaml")]
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=output or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60) -> bool:
    """Signal the process group of ``proc`` (started with start_new_session), wait; SIGKILL it if it hangs.

    Returns:
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
