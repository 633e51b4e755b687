"""Soak benchmark: `amd-pipeline dev` with its schedules on, CLI backfills and an analyst, on a faulty simulator.

    .venv/bin/python bench/soak.py                    # 6 minutes, 10 campaigns, sqlite instance
    .venv/bin/python bench/soak.py --minutes 2 --seed 3
    .venv/bin/python bench/soak.py --pg-url postgresql://user:pw@localhost:5432/dagster

For ``--minutes M`` it refreshes every minute, backfills and reads at once, then drains, stops
`dagster dev` with SIGINT and checks what docs/performance.md ("Soak") lists. Exit status 0 when every
check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environments import clean_env
from instances import pg_driver_url, write_pg_home
from loopback import free_port
from output import log
from processes import start_dev, stop_group
from simulators import SimProcess
from soak_backfills import Backfill, plan_backfills
from soak_memory import MemorySampler, minute_rss
from soak_reader import Reader
from soak_runs import run_report
from soak_summary import summarise
from truth import check_totals
from webserver import active_runs, ensure_schedules_running, stop_schedules, wait_loaded

TOKEN = "soak-token"
TIMEZONE = "America/Bogota"


def FaultySim(args: argparse.Namespace, workdir: Path) -> SimProcess:  # noqa: N802 (reads as the class it builds)
    """The simulator with the soak's faults, seed and quota, logging to ``workdir/simulator.log``."""
    extra = ["--fault-rate", str(args.fault_rate), "--faults", args.faults, "--seed", str(args.seed)]
    return SimProcess(
        args.latency_ms,
        token=TOKEN,
        campaigns=args.campaigns,
        daily_quota=args.daily_quota,
        extra=extra,
        log_path=workdir / "simulator.log",
    )


def soak_env(args: argparse.Namespace, sim: SimProcess, workdir: Path, home: Path, today: dt.date) -> dict[str, str]:
    """The environment of `dagster dev` and the backfills: the simulator, refresh every minute, the instance."""
    env = clean_env()
    env.update(
        WOLKVOX_BASE_URL=sim.url,
        WOLKVOX_TOKEN=TOKEN,
        WOLKVOX_TIMEZONE=TIMEZONE,
        # Big enough that the budget never spaces the every-minute refresh out.
        WOLKVOX_DAILY_QUOTA=str(args.daily_quota),
        AMD_DUCKDB_PATH=str(workdir / "amd.duckdb"),
        AMD_LOCK_DIR=str(workdir / "locks"),
        AMD_START_DATE=str(today - dt.timedelta(days=120)),
        AMD_REFRESH_CRON="* * * * *",
        AMD_RESTATE_CRON=args.restate_cron,
        DAGSTER_HOME=str(home),
    )
    if args.pg_url:
        env["DAGSTER_PG_URL"] = pg_driver_url(args.pg_url)
    return env


def soak(args: argparse.Namespace) -> int:
    """The soak's flow: start, run ``--minutes``, drain, stop, then check; its exit status."""
    workdir = Path(tempfile.mkdtemp(prefix="amd-soak-"))
    home = workdir / "dagster_home"
    published = workdir / "amd.duckdb"
    rng = random.Random(args.seed)
    today = dt.datetime.now(ZoneInfo(TIMEZONE)).date()
    duration = args.minutes * 60
    started_at = time.time()
    log(f"workdir {workdir}; {args.campaigns} campaigns; {args.minutes:g} minutes; seed {args.seed}")
    if args.pg_url:
        write_pg_home(home)
        log("DAGSTER_HOME on PostgreSQL (DAGSTER_PG_URL)")

    sim = dev = None
    backfills: list[Backfill] = []
    sampler = reader = None
    results: dict = {}
    try:
        sim = FaultySim(args, workdir)
        env = soak_env(args, sim, workdir, home, today)
        port = free_port()
        dev_log = open(workdir / "dev.log", "w")  # noqa: SIM115 - closed in the finally below
        dev_started = time.monotonic()
        dev = start_dev(port, env, workdir, output=dev_log)
        sampler = MemorySampler(dev.pid, args.sample_seconds)
        sampler.start()
        entries = wait_loaded(port, dev)
        loaded = time.monotonic()
        log(f"dagster dev on port {port} loaded in {loaded - dev_started:.1f} s (pid {dev.pid}); simulator {sim.url}")
        for line in ensure_schedules_running(port, entries):
            log(f"schedule {line}")
        reader = Reader(published, args.read_seconds)
        reader.start()
        backfills = plan_backfills(rng, args, today, duration, workdir)
        for b in backfills:
            log(f"planned backfill at +{b.at:.0f} s: {b.describe()}")

        t0 = loaded
        next_report = t0 + 60
        while (now := time.monotonic()) < t0 + duration:
            for b in backfills:
                if b.proc is None and now - t0 >= b.at:
                    b.launch(env)
                    log(f"launched backfill {b.describe()} (pid {b.proc.pid})")
                code = b.poll()
                if code is not None and b.ended and not getattr(b, "reported", False):
                    b.reported = True
                    log(f"backfill {b.label} exited {code} after {b.ended - b.started:.1f} s: {b.tail(2)}")
            if dev.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {dev.returncode} during the soak")
            if now >= next_report:
                next_report += 60
                last = sampler.samples[-1] if sampler.samples else None
                mem = f"tree {last[1]:.0f} MB ({last[3]} procs), long-lived {last[2]:.0f} MB" if last else "?"
                log(
                    f"+{(now - t0) / 60:.0f} min: {sim.stats()['requests']} requests; reader {reader.ok} ok, "
                    f"{len(reader.errors)} errors; {mem}"
                )
            time.sleep(0.5)
        soak_end = time.monotonic()

        # Drain: no more ticks, let the backfills and the runs in flight finish, then stop dev.
        log("time is up: stopping the schedules, waiting for the backfills and the runs in flight")
        stop_schedules(port)
        drain_deadline = time.monotonic() + args.drain_seconds
        while time.monotonic() < drain_deadline:
            for b in backfills:
                b.poll()
            pending = [b for b in backfills if b.proc is None or b.proc.poll() is None]
            active = active_runs(port)
            if not pending and not active:
                break
            time.sleep(1)
        drained = time.monotonic() - soak_end
        still_active = active_runs(port)
        log(f"drained in {drained:.1f} s; {len(still_active)} run(s) still in progress")
        reader.stop_event.set()
        reader.join(10)
        reader.read()  # one last read of what was published
        sampler.stop_event.set()
        sampler.join(10)
        stopped_cleanly = stop_group(dev, signal.SIGINT, 60)
        dev_rc = dev.returncode
        leftovers = sampler.wait_gone()
        for pid in leftovers:
            log(f"left behind by dagster dev: pid {pid}: {sampler.seen[pid][1]}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stats = sim.stats()
        results = {
            "stats": stats,
            "dev_rc": dev_rc,
            "stopped_cleanly": stopped_cleanly,
            "leftovers": leftovers,
            "drained": drained,
            "memory": minute_rss(sampler.samples, loaded, soak_end),
            "loaded_s": loaded - dev_started,
        }
    finally:
        for b in backfills:
            if b.proc is not None and b.proc.poll() is None:
                log(f"stopping backfill {b.label} (pid {b.proc.pid})")
                stop_group(b.proc, signal.SIGINT, 30)
        if reader is not None:
            reader.stop_event.set()
        if sampler is not None:
            sampler.stop_event.set()
        if dev is not None and dev.poll() is None:
            stop_group(dev, signal.SIGINT, 60)
        if sampler is not None:
            for pid in sampler.leftovers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if sim is not None:
            sim.stop()
        if dev is not None:
            dev_log.close()

    os.environ["DAGSTER_HOME"] = str(home)
    if args.pg_url:
        os.environ["DAGSTER_PG_URL"] = pg_driver_url(args.pg_url)
    runs, pool = run_report(home, started_at)
    end_today = dt.datetime.now(ZoneInfo(TIMEZONE)).date()
    totals = check_totals(published, min(today, end_today))
    return summarise(args, workdir, results, backfills, reader, runs, pool, totals, min(today, end_today))


def main() -> None:
    """Parse the options, turn SIGTERM into an interrupt (so the cleanup runs) and soak."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--campaigns", type=int, default=10, help="simulated predictive campaigns (ids 30001..)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the backfill moments and ranges and the faults")
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--faults", default="500,html502,busy,429,drop")
    parser.add_argument("--daily-quota", type=int, default=100000, help="simulator quota (and WOLKVOX_DAILY_QUOTA)")
    parser.add_argument("--restate-cron", default="*/3 * * * *", help="AMD_RESTATE_CRON during the soak")
    parser.add_argument("--drain-seconds", type=float, default=300, help="wait this long for runs in flight at the end")
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--read-seconds", type=float, default=2)
    parser.add_argument("--pg-url", help="run the Dagster instance on PostgreSQL at this URL (DAGSTER_PG_URL)")
    args = parser.parse_args()

    def terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    sys.exit(soak(args))


if __name__ == "__main__":
    main()
