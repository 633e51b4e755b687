"""The soak's memory: the RSS of the `dagster dev` process tree, sampled from /proc, and what it left running.

"Long-lived" is the tree without the run workers (the code server's `spawn_main` children and their
compute-log `tail`s), which come and go with each run.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path


def proc_table() -> dict[int, tuple[int, int, str, str]]:
    """Every process by pid: (ppid, process group, start time in ticks, state), from /proc/<pid>/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[19], fields[0])
    return table


def descendants(root: int, table: dict[int, tuple[int, int, str, str]]) -> list[int]:
    """``root`` and every process below it in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kb(pid: int) -> int:
    """The resident set of ``pid`` in kB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_run_worker(pid: int, table: dict[int, tuple[int, int, str, str]], root: int) -> bool:
    """A run's worker, or a child of one (its compute-log `tail`s): they come and go with each run.

    The code server starts each run as a `multiprocessing` spawn child (`spawn_main`); other launchers
    use `dagster api execute_run` / `execute_step`.
    """
    while pid in table and pid != root:
        text = cmdline(pid)
        if any(marker in text for marker in ("spawn_main", "execute_run", "execute_step")):
            return True
        pid = table[pid][0]
    return False


class MemorySampler(threading.Thread):
    """Every ``interval`` s: RSS of the whole `dagster dev` tree and of its long-lived processes only."""

    def __init__(self, root: int, interval: float = 5.0):
        """Sample the tree below the pid ``root`` every ``interval`` s once started."""
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, float, float, int, int]] = []  # (t, tree MB, long-lived MB, procs, workers)
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (start time, command) of every process in the tree
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Sample every ``interval`` s until ``stop_event`` is set."""
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def sample(self) -> None:
        """One sample: the tree's and the long-lived processes' RSS, its processes and run workers."""
        table = proc_table()
        pids = descendants(self.root, table)
        if not pids:
            return
        tree = long_lived = workers = 0
        for pid in pids:
            if pid not in self.seen:
                self.seen[pid] = (table[pid][2], cmdline(pid)[:160])
            kb = rss_kb(pid)
            tree += kb
            if is_run_worker(pid, table, self.root):
                workers += 1
            else:
                long_lived += kb
        self.samples.append((time.monotonic(), tree / 1024, long_lived / 1024, len(pids), workers))

    def leftovers(self) -> list[int]:
        """Processes once seen in the tree (same pid and start time) or in its process group that still run."""
        table = proc_table()
        for pid, (_, group, start, _) in table.items():
            if group == self.root and pid not in self.seen:
                self.seen[pid] = (start, cmdline(pid)[:160])
        return [
            pid
            for pid, (start, _) in self.seen.items()
            if pid in table and table[pid][2] == start and table[pid][3] != "Z"  # a zombie is on its way out
        ]

    def wait_gone(self, timeout: float = 15) -> list[int]:
        """Leftovers still there after ``timeout`` s (a child may take a moment to exit after its parent)."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left


def minute_rss(samples: list[tuple], first_t: float, last_t: float) -> dict:
    """Median RSS (MB) of the tree and of its long-lived processes in the first and last minute."""
    first = [s for s in samples if first_t <= s[0] < first_t + 60]
    last = [s for s in samples if last_t - 60 <= s[0] <= last_t]

    def med(window, index):
        return round(statistics.median(s[index] for s in window), 1) if window else None

    return {
        "first_tree": med(first, 1),
        "last_tree": med(last, 1),
        "first_long": med(first, 2),
        "last_long": med(last, 2),
        "max_tree": round(max((s[1] for s in samples), default=0), 1),
        "max_long": round(max((s[2] for s in samples), default=0), 1),
        "max_workers": max((s[4] for s in samples), default=0),
        "samples": (len(first), len(last), len(samples)),
    }
