"""What counting every call against the daily budget costs: one charge, in microseconds.

    .venv/bin/python bench/ledger.py [--calls 5000] [--processes 2]
    .venv/bin/python bench/ledger.py --pg-url postgresql+psycopg2://postgres@127.0.0.1:PORT/dagster

Prints the median and 99th percentile of one charge in one process, then the wall time per call with
several processes charging the same ledger at once. Without ``--pg-url``: the file ledger of the SQLite
profile (file lock, read, write, rename). With it: the PostgreSQL ledger of the production profile (one
transaction with an advisory lock), e.g. on a throwaway cluster from
``python -m amd_pipeline_tests.pg_cluster``.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


def make_ledger(pg_url: str | None, folder: Path, name: str) -> str:
    """Python source that builds the ledger ``name`` (run here and in the child processes)."""
    if pg_url:
        key = {"one": "00000000000000000001", "shared": "00000000000000000002"}[name]
        return (
            "from amd_pipeline.core.shared_state import PgCallLedger\n"
            f"ledger = PgCallLedger({pg_url!r}, {key!r}, 'America/Bogota')\n"
        )
    return (
        "from amd_pipeline.core.budget import CallLedger\n"
        f"ledger = CallLedger({str(folder / (name + '.calls.json'))!r}, 'America/Bogota')\n"
    )


def main() -> None:
    """Time the charges in one process, then in ``--processes`` at once on one ledger."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pg-url", default=None, help="measure the PostgreSQL ledger on this database")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    scope: dict = {}
    exec(make_ledger(args.pg_url, folder, "one"), scope)
    ledger = scope["ledger"]
    print(f"ledger: {'PostgreSQL' if args.pg_url else 'file'}")
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
    script = make_ledger(args.pg_url, folder, "shared") + textwrap.dedent(f"""
        for _ in range({args.calls}):
            ledger.charge("backfill", None)
    """)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(args.processes)]
    for proc in procs:
        proc.wait()
    wall = time.perf_counter() - started
    exec(make_ledger(args.pg_url, folder, "shared"), scope)
    total = sum(scope["ledger"].usage().values())
    print(
        f"{args.processes} processes at once: {total} charges counted of {args.processes * args.calls}, "
        f"{wall / total * 1e6:.0f} us of wall time per charge (process start included)"
    )


if __name__ == "__main__":
    main()
