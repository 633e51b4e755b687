"""The soak's analyst: reads the published DuckDB file read-only every few seconds while it loads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from truth import read_rows


class Reader(threading.Thread):
    """An analyst: every ``interval`` s opens the published file read-only and sums amd_daily."""

    def __init__(self, path: Path, interval: float = 2.0):
        """Read ``path`` every ``interval`` s once started."""
        super().__init__(daemon=True)
        self.path = path
        self.interval = interval
        self.ok = 0
        self.not_yet = 0  # the file was not published yet: not an error
        self.errors: list[str] = []
        self.last: tuple | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Read every ``interval`` s until ``stop_event`` is set."""
        while not self.stop_event.is_set():
            self.read()
            self.stop_event.wait(self.interval)

    def read(self) -> None:
        """One read: counted as ok, not yet published, or an error with its time and message."""
        if not self.path.exists():
            self.not_yet += 1
            return
        try:
            self.last = read_rows(self.path, "SELECT count(*), sum(total_amd) FROM amd_daily")[0]
            self.ok += 1
        except Exception as exc:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {' '.join(str(exc).split())}")
