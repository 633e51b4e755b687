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


def runs_at_once(gate: str | os.PathLike[str], parties: int) -> str:
    """A prelude for ``parties`` CLI processes: each waits at the barrier in ``gate`` just before it starts
    its Dagster run (after its pre-flight), so their runs really start together and contend for the pool
    and the token, however late one process got going on a busy machine."""
    return (
        "import pathlib, dagster as dg\n"
        "from amd_pipeline_tests.barrier import wait_at_barrier\n"
        "_execute = dg.JobDefinition.execute_in_process\n"
        "def _at_once(self, *args, **kwargs):\n"
        f"    wait_at_barrier(pathlib.Path({str(gate)!r}), {parties})\n"
        "    return _execute(self, *args, **kwargs)\n"
        "dg.JobDefinition.execute_in_process = _at_once\n"
    )
