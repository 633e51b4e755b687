"""A file barrier for test subprocesses: each registers, then waits until all have, so they really run at once."""

from __future__ import annotations

import os
import time
from pathlib import Path


def wait_at_barrier(folder: str | os.PathLike[str], parties: int, timeout: float = 60) -> None:
    gate = Path(folder)
    (gate / f"ready.{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(gate.glob("ready.*"))) < parties and time.monotonic() < deadline:
        time.sleep(0.001)
