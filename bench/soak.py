"""Soak benchmark: `amd-pipeline dev` with its schedules on, CLI backfills and an analyst, on a faulty simulator.

    .venv/bin/python bench/soak.py                    # 6 minutes, 10 campaigns, sqlite instance
    .venv/bin/python bench/soak.py --minutes 2 --seed 3
    .venv/bin/python bench/soak.py --pg-url postgresql://user:pw@localhost:5432/dagster

For ``--minutes M`` it starts the simulator (faults on 10% of calls: 500, html502, busy, 429, drop) and
`amd-pipeline dev` on a throwaway DAGSTER_HOME and DuckDB file, with ``amd_daily_refresh`` firing every
minute (and ``amd_daily_restate`` every few minutes). Meanwhile it launches two CLI backfills (all
campaigns, and a random subset) at seeded random moments, reads the published DuckDB file read-only
every ~2 s like an analyst, and samples the RSS of the `dagster dev` process tree every ~5 s.
After M minutes it turns the schedules off, lets the runs in flight finish, stops `dagster dev` with
SIGINT and checks: no overlapping requests on the token, every run ended (SUCCESS, or FAILURE/CANCELED
with a reason), no pool slot left claimed, every closed day's row equals the simulator's ground truth,
no reader error, memory flat (last minute vs first minute) and no process left behind.
Exit status 0 when every check passed, 1 otherwise.

Memory: "long-lived" is the tree without the run workers (the code server's `spawn_main` children and
their compute-log `tail`s), which come and go with each run; its median over the first minute after the
code location loaded is compared with the median over the soak's last minute. With --pg-url the
instance lives in that database (only runs and ticks created during this soak are checked; a plain
``postgresql://`` URL gets ``+psycopg2`` when psycopg 3 is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLI, ROOT, SimProcess, clean_env, free_port, graphql, log, stop_group

from amd_pipeline.wolkvox.simulator import truth_for_day

TOKEN = "soak-token"
TIMEZONE = "America/Bogota"
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
MEMORY_GROWTH_LIMIT = 0.15  # the last minute's RSS may be at most 15% above the first minute's


# --- processes ------------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int, str, str]]:
    """Pid -> (ppid, process group, start time in ticks, state) of every process, from /proc/<pid>/stat."""
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
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
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
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, float, float, int, int]] = []  # (t, tree MB, long-lived MB, procs, workers)
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (start time, command) of every process in the tree
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def sample(self) -> None:
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


class Reader(threading.Thread):
    """An analyst: every ``interval`` s opens the published file read-only and sums amd_daily."""

    def __init__(self, path: Path, interval: float = 2.0):
        super().__init__(daemon=True)
        self.path = path
        self.interval = interval
        self.ok = 0
        self.not_yet = 0  # the file was not published yet: not an error
        self.errors: list[str] = []
        self.last: tuple | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.read()
            self.stop_event.wait(self.interval)

    def read(self) -> None:
        if not self.path.exists():
            self.not_yet += 1
            return
        try:
            conn = duckdb.connect(str(self.path), read_only=True)
            try:
                self.last = conn.execute("SELECT count(*), sum(total_amd) FROM amd_daily").fetchone()
            finally:
                conn.close()
            self.ok += 1
        except Exception as exc:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {' '.join(str(exc).split())}")


class Backfill:
    """One `amd-pipeline backfill` launched at ``at`` seconds into the soak."""

    def __init__(self, label: str, at: float, start: dt.date, end: dt.date, campaigns: list[str], workdir: Path):
        self.label, self.at, self.start, self.end, self.campaigns = label, at, start, end, campaigns
        self.log_path = workdir / f"backfill-{label}.log"
        self.proc: subprocess.Popen | None = None
        self.started = self.ended = 0.0

    @property
    def argv(self) -> list[str]:
        argv = [CLI, "backfill", "--start", str(self.start), "--end", str(self.end), "--quiet"]
        for campaign in self.campaigns:
            argv += ["--campaign", campaign]
        return argv

    def describe(self) -> str:
        who = ",".join(self.campaigns) if self.campaigns else "all campaigns"
        return f"{self.label}: {self.start}..{self.end} ({(self.end - self.start).days + 1} days), {who}"

    def launch(self, env: dict[str, str]) -> None:
        self.started = time.monotonic()
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(
                self.argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def poll(self) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None and not self.ended:
            self.ended = time.monotonic()
        return code

    def tail(self, lines: int = 4) -> str:
        try:
            return " | ".join(self.log_path.read_text().strip().splitlines()[-lines:])
        except OSError:
            return ""


# --- the simulator and dagster dev ------------------------------------------------------------------


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


def write_pg_home(home: Path) -> None:
    """DAGSTER_HOME/dagster.yaml on PostgreSQL, with the shipped file's pool, queue and monitoring blocks."""
    shipped = yaml.safe_load((ROOT / "amd_pipeline" / "dagster.yaml").read_text())
    config = {"storage": {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}}
    for block in ("concurrency", "run_queue", "run_monitoring", "telemetry", "nux"):
        if block in shipped:
            config[block] = shipped[block]
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def pg_driver_url(url: str) -> str:
    """``postgresql://`` names psycopg (3) in SQLAlchemy 2.1; the venv has psycopg2: name it when only it is there."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    plain = scheme in ("postgres", "postgresql") and sep
    if plain and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def soak_env(args: argparse.Namespace, sim: SimProcess, workdir: Path, home: Path, today: dt.date) -> dict[str, str]:
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


WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { name repositories { name
    schedules { name scheduleState { id status } } sensors { name sensorState { status } } } }
  ... on PythonError { message } } } } } }"""
START_SCHEDULE = """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
STOP_SCHEDULE = """mutation($id: String!) { stopRunningSchedule(id: $id) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
ACTIVE_RUNS = """query($s: [RunStatus!]) { runsOrError(filter: {statuses: $s}) {
  ... on Runs { results { runId status tags { key value } } } } }"""


def wait_loaded(port: int, dev: subprocess.Popen, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.returncode} before the code location loaded")
        try:
            entries = graphql(port, WORKSPACE)["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                for entry in entries:
                    location = entry["locationOrLoadError"]
                    if location["__typename"] != "RepositoryLocation":
                        raise RuntimeError(f"code location {entry['name']} failed to load: {location.get('message')}")
                return entries
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the code location did not load within {timeout:.0f} s")


def schedules_of(entries: list[dict]) -> list[tuple[str, str, dict]]:
    """(location, repository, schedule) for every schedule of the workspace."""
    return [
        (entry["locationOrLoadError"]["name"], repo["name"], schedule)
        for entry in entries
        for repo in entry["locationOrLoadError"]["repositories"]
        for schedule in repo["schedules"]
    ]


def ensure_schedules_running(port: int, entries: list[dict]) -> list[str]:
    """Start every schedule that is not running (they default to RUNNING); returns a line per schedule."""
    lines = []
    for location, repo, schedule in schedules_of(entries):
        status = schedule["scheduleState"]["status"]
        if status != "RUNNING":
            selector = {"repositoryLocationName": location, "repositoryName": repo, "scheduleName": schedule["name"]}
            answer = graphql(port, START_SCHEDULE, {"s": selector})["data"]["startSchedule"]
            status = f"{status} -> started: {answer.get('scheduleState', answer)}"
        lines.append(f"{schedule['name']}: {status}")
    return lines


def stop_schedules(port: int) -> None:
    entries = graphql(port, WORKSPACE)["data"]["workspaceOrError"]["locationEntries"]
    for _, _, schedule in schedules_of(entries):
        if schedule["scheduleState"]["status"] == "RUNNING":
            answer = graphql(port, STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})["data"]
            if answer["stopRunningSchedule"]["__typename"] != "ScheduleStateResult":
                log(f"could not stop {schedule['name']}: {answer}")


def active_runs(port: int) -> list[dict]:
    answer = graphql(port, ACTIVE_RUNS, {"s": list(IN_PROGRESS)})
    return answer["data"]["runsOrError"]["results"]


# --- checks after the soak ------------------------------------------------------------------------


def run_report(home: Path, since: float) -> tuple[list[dict], dict]:
    """Every run created since ``since`` (a Unix time) with its source and, for a failed or canceled one, its
    reason; the schedules' and sensors' ticks since then; the pool's state. (A --pg-url database may hold
    the runs of earlier soaks: they are left out.)
    """
    import dagster as dg

    from amd_pipeline.orchestration.assets import SOURCE_TAG

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = []
        created_after = dt.datetime.fromtimestamp(since, dt.UTC)
        for run in instance.get_runs(filters=dg.RunsFilter(created_after=created_after)):
            source = run.tags.get(SOURCE_TAG) or ("ui" if not run.tags.get("dagster/schedule_name") else "schedule")
            record = {
                "run_id": run.run_id,
                "status": run.status.value,
                "source": source,
                "schedule": run.tags.get("dagster/schedule_name", ""),
                "reason": "",
            }
            if run.status != dg.DagsterRunStatus.SUCCESS:
                record["reason"] = failure_reason(instance, run.run_id)
            runs.append(record)
        ticks = {}
        for state in instance.all_instigator_state():
            counts: dict[str, int] = {}
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=float(since)):
                status = tick.status.value
                if status == "FAILURE" and tick.error is not None:
                    status += f" ({tick.error.message.strip().splitlines()[-1][:120]})"
                counts[status] = counts.get(status, 0) + 1
            ticks[state.name] = counts
        info = instance.event_log_storage.get_concurrency_info("wolkvox_token")
        pool = {
            "limit": info.limit,
            "slot_count": info.slot_count,
            "claimed": [(s.run_id, s.step_key) for s in info.claimed_slots],
            "pending": [(s.run_id, s.step_key) for s in info.pending_steps],
            "ticks": ticks,
        }
    finally:
        instance.dispose()
    return runs, pool


def failure_reason(instance, run_id: str) -> str:
    """The step's Failure description (what the CLI prints), else the error, else the run's own message."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELED,
        dg.DagsterEventType.ENGINE_EVENT,
    }
    records = instance.all_logs(run_id, of_type=kinds)
    for entry in records:
        event = entry.dagster_event
        if event is not None and event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return f"{event.step_key}: {data.user_failure_data.description.strip()}"
            if data.error:
                return f"{event.step_key}: {data.error.message.strip().splitlines()[-1]}"
    for entry in records:
        event = entry.dagster_event
        if event is not None and event.event_type in (
            dg.DagsterEventType.RUN_FAILURE,
            dg.DagsterEventType.RUN_CANCELED,
        ):
            return (entry.message or event.message or "").strip()
    return ""


def check_totals(published: Path, today: dt.date) -> dict:
    """Every closed day's row of the published file against the ground truth; today's only as a bound."""
    if not published.exists():
        return {"rows": 0, "closed": 0, "mismatches": 0, "examples": [], "not_final": 0, "today_over": 0}
    conn = duckdb.connect(str(published), read_only=True)
    try:
        rows = conn.execute("SELECT campaign_id, local_date, total_amd, is_final FROM amd_daily").fetchall()
    finally:
        conn.close()
    closed = [r for r in rows if r[1] < today]
    bad = [(c, d, n, truth_for_day(c, d)) for c, d, n, _ in closed if n != truth_for_day(c, d)]
    return {
        "rows": len(rows),
        "closed": len(closed),
        "mismatches": len(bad),
        "examples": bad[:5],
        "not_final": sum(1 for r in closed if not r[3]),
        # A partial day can only be below (or at) the whole day's total.
        "today_over": sum(1 for c, d, n, _ in rows if d >= today and n > truth_for_day(c, d)),
        "keys": {(c, d) for c, d, _, _ in rows},
    }


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


# --- the soak -------------------------------------------------------------------------------------


def plan_backfills(rng: random.Random, args, today: dt.date, duration: float, workdir: Path) -> list[Backfill]:
    ids = [str(30001 + n) for n in range(args.campaigns)]
    plans = []
    for label, campaigns in (("all", []), ("subset", sorted(rng.sample(ids, min(3, len(ids)))))):
        days = rng.randint(20, 40)
        end = today - dt.timedelta(days=rng.randint(1, 15))
        start = end - dt.timedelta(days=days - 1)
        at = rng.uniform(0.05, 0.6) * duration
        plans.append(Backfill(label, at, start, end, campaigns, workdir))
    return sorted(plans, key=lambda b: b.at)


def soak(args: argparse.Namespace) -> int:
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
        dev = subprocess.Popen(
            [CLI, "dev", "--port", str(port), "--workspace", str(ROOT / "workspace.yaml")],
            env=env,
            cwd=workdir,
            stdout=dev_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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


def summarise(args, workdir, results, backfills, reader, runs, pool, totals, today) -> int:
    stats, memory = results["stats"], results["memory"]
    checks: list[tuple[str, bool, str]] = []

    checks.append(
        (
            "simulator overlaps",
            stats["overlaps"] == 0,
            f"{stats['overlaps']} overlaps, max in flight {stats['max_in_flight_seen']}; {stats['requests']} requests, "
            f"faults {sum(stats['faults_injected'].values())} {stats['faults_injected']}; calls {stats['calls']}; "
            f"statuses {stats['statuses']}",
        )
    )
    by_source: dict[str, dict[str, int]] = {}
    for r in runs:
        counts = by_source.setdefault(r["source"], {})
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    unfinished = [r for r in runs if r["status"] not in ("SUCCESS", "FAILURE", "CANCELED")]
    unexplained = [r for r in runs if r["status"] in ("FAILURE", "CANCELED") and not r["reason"]]
    explained = [r for r in runs if r["status"] in ("FAILURE", "CANCELED") and r["reason"]]
    per_source = "; ".join(
        f"{source}: " + ", ".join(f"{n} {status}" for status, n in sorted(c.items()))
        for source, c in sorted(by_source.items())
    )
    checks.append(
        (
            "runs ended",
            not unfinished and not unexplained,
            f"{len(runs)} runs ({per_source}); {len(unfinished)} not ended, {len(explained)} failed/canceled with "
            f"a reason, {len(unexplained)} without",
        )
    )
    tick_failures = sum(n for counts in pool["ticks"].values() for status, n in counts.items() if "FAILURE" in status)
    checks.append(
        (
            "schedule/sensor ticks",
            tick_failures == 0 and pool["ticks"].get("amd_daily_refresh", {}).get("SUCCESS", 0) > 0,
            "; ".join(
                f"{name}: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no ticks")
                for name, counts in sorted(pool["ticks"].items())
            ),
        )
    )
    checks.append(
        (
            "pool wolkvox_token",
            not pool["claimed"] and not pool["pending"],
            f"limit {pool['limit']}, {len(pool['claimed'])} slots claimed, {len(pool['pending'])} steps pending",
        )
    )
    missing = 0
    for b in backfills:
        if b.proc is not None and b.proc.returncode == 0:
            ids = b.campaigns or [str(30001 + n) for n in range(args.campaigns)]
            day = b.start
            while day <= b.end:
                missing += sum(1 for c in ids if (c, day) not in totals.get("keys", set()))
                day += dt.timedelta(days=1)
    checks.append(
        (
            "exact totals",
            totals["mismatches"] == 0 and totals["closed"] > 0 and missing == 0 and totals["today_over"] == 0,
            f"{totals['closed']} closed-day rows (before {today}) of {totals['rows']}: {totals['mismatches']} differ "
            f"from truth_for_day{' e.g. ' + str(totals['examples']) if totals['examples'] else ''}; "
            f"{missing} backfilled campaign-days missing; {totals['not_final']} closed rows not final; "
            f"{totals['today_over']} of today's rows above the day's truth",
        )
    )
    backfill_ok = all(b.proc is not None and b.proc.returncode == 0 for b in backfills)
    checks.append(
        (
            "CLI backfills",
            backfill_ok,
            "; ".join(
                f"{b.describe()} at +{b.at:.0f} s: "
                + (
                    f"exit {b.proc.returncode} in {b.ended - b.started:.1f} s"
                    if b.proc is not None and b.ended
                    else "not launched/ended"
                )
                for b in backfills
            ),
        )
    )
    checks.append(
        (
            "analyst reads",
            not reader.errors and reader.ok > 0,
            f"{reader.ok} ok, {len(reader.errors)} errors, {reader.not_yet} before the first publish; last "
            f"count/sum {reader.last}" + (f"; first errors: {reader.errors[:3]}" if reader.errors else ""),
        )
    )
    first, last = memory["first_long"], memory["last_long"]
    growth = (last - first) / first if first and last else None
    checks.append(
        (
            "memory flat",
            growth is not None and growth <= MEMORY_GROWTH_LIMIT,
            f"long-lived processes: first minute {first} MB, last minute {last} MB ({growth:+.1%}; "
            f"limit +{MEMORY_GROWTH_LIMIT:.0%}), peak {memory['max_long']} MB"
            if growth is not None
            else "not enough samples",
        )
    )
    checks.append(
        (
            "memory (whole tree)",
            True,
            f"first minute {memory['first_tree']} MB, last minute {memory['last_tree']} MB, peak {memory['max_tree']}"
            f" MB (includes run workers, up to {memory['max_workers']} at once); samples first/last/all "
            f"{memory['samples']}",
        )
    )
    checks.append(
        (
            "dev stopped cleanly",
            results["stopped_cleanly"] and not results["leftovers"],
            f"SIGINT -> exit {results['dev_rc']}; {len(results['leftovers'])} processes left behind; drain "
            f"{results['drained']:.1f} s; dev loaded in {results['loaded_s']:.1f} s",
        )
    )

    print()
    print(
        f"soak: {args.minutes:g} min, {args.campaigns} campaigns, L={args.latency_ms:g} ms, faults "
        f"{args.fault_rate:.0%} ({args.faults}), seed {args.seed}, "
        f"{'postgres' if args.pg_url else 'sqlite'} instance; workdir {workdir}"
    )
    width = max(len(name) for name, _, _ in checks)
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    for r in explained + unexplained + unfinished:
        print(f"      run {r['run_id']} {r['status']} ({r['source']}): {r['reason'] or 'no reason recorded'}")
    failed = [name for name, ok, _ in checks if not ok]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


def main() -> None:
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
