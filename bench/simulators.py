"""The simulator as a benchmark's child process: `amd-pipeline simulator` on a free loopback port."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from loopback import free_port, http
from processes import CLI, stop_group

# The campaigns and token of the backfill and scale benchmarks' simulator (scale sets its own campaigns).
CAMPAIGNS = ["20717", "20718", "20731"]
TOKEN = "bench-token"


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
        """Start it and wait until it answers; ``extra`` options go to the command as they are."""
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
        """The simulator's counters (``/_sim/stats``): requests, overlaps, faults, busy seconds."""
        return http(self.url + "/_sim/stats")

    def reset(self) -> None:
        """Zero the simulator's counters and request log."""
        http(self.url + "/_sim/reset", {})

    def stop(self) -> None:
        """End the simulator's process group and close its log."""
        stop_group(self.proc, signal.SIGTERM, 10)
        if self.log:
            self.log.close()
