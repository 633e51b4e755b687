"""Every process a test started, however deep and however late: found by a mark in their environment.

A process tree seen once (the children alive at one moment) misses what starts later: a run worker the
daemon launches after the snapshot, a code server that detaches into a session of its own. Every one of
them inherits its parent's environment, so a mark put there (``AMD_TEST_TREE=<id>``) finds them all, at
any moment, through ``/proc/<pid>/environ`` (Linux). ``kill_marked`` then stops whatever is left, so a
failed test leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

MARK = "AMD_TEST_TREE"


def new_mark() -> dict[str, str]:
    """An environment entry to give the first process of a tree."""
    return {MARK: uuid.uuid4().hex}


def marked(env: dict[str, str]) -> list[int]:
    """The live processes (zombies excepted) carrying ``env``'s mark."""
    needle = f"{MARK}={env[MARK]}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes() + b"\0" and not _zombie(entry):
                found.append(int(entry.name))
    return sorted(found)


def _zombie(entry: Path) -> bool:
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2] in "ZX"


def wait_until_gone(env: dict[str, str], seconds: float) -> list[int]:
    """The marked processes still alive after waiting up to ``seconds`` for all of them to end."""
    deadline = time.monotonic() + seconds
    while (left := marked(env)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_marked(env: dict[str, str]) -> list[int]:
    """SIGKILL every marked process; returns those it found."""
    found = marked(env)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
