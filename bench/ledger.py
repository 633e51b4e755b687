"""What counting every call against the daily budget costs: CallLedger.charge() per call, in microseconds.

    .venv/bin/python bench/ledger.py [--calls 5000] [--processes 2]

Prints the median and 99th percentile of one charge (flock, read, write, rename of the ledger file)
in one process, then the wall time per call with several processes charging the same ledger at once.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from amd_pipeline.budget import CallLedger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    ledger = CallLedger(folder / "one.calls.json", "America/Bogota")
    times = []
    for _ in range(args.calls):
        started = time.perf_counter()
        ledger.charge("backfill", None)
        times.append(time.perf_counter() - started)
    times.sort()
    print(
        f"one process: {args.calls} charges, median {statistics.median(times) * 1e6:.0f} us, "
        f"p99 {times[int(len(times) * 0.99)] * 1e6:.0f} us, max {times[-1] * 1e6:.0f} us"
    )
    script = textwrap.dedent(f"""
        from amd_pipeline.budget import CallLedger
        ledger = CallLedger({str(folder / "shared.calls.json")!r}, "America/Bogota")
        for _ in range({args.calls}):
            ledger.charge("backfill", None)
    """)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(args.processes)]
    for proc in procs:
        proc.wait()
    wall = time.perf_counter() - started
    total = sum(CallLedger(folder / "shared.calls.json", "America/Bogota").usage().values())
    print(
        f"{args.processes} processes at once: {total} charges counted of {args.processes * args.calls}, "
        f"{wall / total * 1e6:.0f} us of wall time per charge (process start included)"
    )


if __name__ == "__main__":
    main()
