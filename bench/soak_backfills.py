"""The soak's CLI backfills: planned at seeded random moments and ranges, launched, watched."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import time
from pathlib import Path

from processes import ROOT, backfill_argv


class Backfill:
    """One `amd-pipeline backfill` launched at ``at`` seconds into the soak."""

    def __init__(self, label: str, at: float, start: dt.date, end: dt.date, campaigns: list[str], workdir: Path):
        """Plan it: ``start``..``end`` of ``campaigns`` (all when empty), its output in ``workdir``."""
        self.label, self.at, self.start, self.end, self.campaigns = label, at, start, end, campaigns
        self.log_path = workdir / f"backfill-{label}.log"
        self.proc: subprocess.Popen | None = None
        self.started = self.ended = 0.0

    def describe(self) -> str:
        """Its label, days and campaigns, in one line."""
        who = ",".join(self.campaigns) if self.campaigns else "all campaigns"
        return f"{self.label}: {self.start}..{self.end} ({(self.end - self.start).days + 1} days), {who}"

    def launch(self, env: dict[str, str]) -> None:
        """Start it in its own process group, its output to ``backfill-<label>.log``."""
        self.started = time.monotonic()
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(
                backfill_argv(self.start, self.end, self.campaigns),
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def poll(self) -> int | None:
        """Its exit code once it ended (noting when), else None."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None and not self.ended:
            self.ended = time.monotonic()
        return code

    def tail(self, lines: int = 4) -> str:
        """The last ``lines`` lines of its output, joined by `` | ``."""
        try:
            return " | ".join(self.log_path.read_text().strip().splitlines()[-lines:])
        except OSError:
            return ""


def plan_backfills(rng: random.Random, args, today: dt.date, duration: float, workdir: Path) -> list[Backfill]:
    """Two backfills (all campaigns, and a random three) of 20-40 days, at seeded moments of the soak."""
    ids = [str(30001 + n) for n in range(args.campaigns)]
    plans = []
    for label, campaigns in (("all", []), ("subset", sorted(rng.sample(ids, min(3, len(ids)))))):
        days = rng.randint(20, 40)
        end = today - dt.timedelta(days=rng.randint(1, 15))
        start = end - dt.timedelta(days=days - 1)
        at = rng.uniform(0.05, 0.6) * duration
        plans.append(Backfill(label, at, start, end, campaigns, workdir))
    return sorted(plans, key=lambda b: b.at)
