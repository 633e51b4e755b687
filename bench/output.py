"""What the benchmarks print: progress lines on stderr, the machine they ran on, plain tables."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def log(message: str) -> None:
    """A progress line on stderr, stamped with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    """Cores, CPU model and the versions that change the figures, in one line."""
    import dagster
    import duckdb

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    versions = f"Python {platform.python_version()}, dagster {dagster.__version__}, duckdb {duckdb.__version__}"
    return f"{os.cpu_count()} cores ({cpu}), {versions}"


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A header line of ``columns`` and a line per row, cells joined by `` | ``."""
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(cell) for cell in row))
