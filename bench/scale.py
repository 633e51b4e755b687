"""Operation-scale benchmark: 50 campaigns x 365 days through `amd-pipeline backfill`, per instance profile.

    python bench/scale.py                                               # 50 x 365, sqlite+postgres, L = 0 and 200 ms
    python bench/scale.py --campaigns 50 --days 20 --profiles sqlite     # a quick look
    python bench/scale.py --days 10 --latency-ms 0 --planned both      # also with Dagster's default
    python bench/scale.py --latency-ms 0 --event-batch both            # also writing events one at a time

With ``WOLKVOX_CAMPAIGN_ALL=auto`` a backfill makes one ``campaign_id=all`` call per day (plus one
``token_info``), so at 50 x 365 the token's floor is 366 x L while Dagster records 18,250 partitions.
This measures what that costs on each instance profile:

- ``sqlite``: the shipped instance (DAGSTER_HOME created by the CLI from amd_pipeline/dagster.yaml);
- ``postgres``: deploy/dagster.yaml on a throwaway PostgreSQL cluster (amd_pipeline_tests/pg_cluster.py,
  which runs with fsync=off, so PostgreSQL's figures are a lower bound of a durable server's).

Every run gets a fresh DAGSTER_HOME (warmed up by a 1-day backfill) and an empty DuckDB file; the
timed backfill is then checked against the simulator's ground truth, and the simulator's overlap
count must stay 0. Per run it reports wall time against the floor, peak RSS, the DuckDB file, how
much the instance grew and which events it wrote, and splits the wall time along the run's own
event log: planned events, fetching + DuckDB, per-partition materialization events, asset checks,
and the rest (process start, imports, token_info, run start and end).

The CLI writes one planned event per run (it sets DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true
unless told otherwise). ``--planned per-partition`` (or ``both``) runs with it set to false,
Dagster's default: one planned event per partition before the run starts.

The CLI also sets DAGSTER_EVENT_BATCH_SIZE=1000 unless told otherwise: a ranged step's per-partition
materialisations reach the storage 1000 at a time (one multi-row insert on PostgreSQL, one transaction
per file with the shipped SQLite instance). ``--event-batch off`` (or ``both``) runs with it set to 0,
Dagster's default: one committed write per event.

The CLI's runs log each partition's materialisation as its DuckDB batch commits, while the next calls
are made (AMD_PARTITION_EVENTS=during, the default). ``--events after`` (or ``both``) runs with
AMD_PARTITION_EVENTS=after: Dagster makes them all after the step's compute, as for runs the daemon launches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import CLI, ROOT, SimProcess, bench_env, days_span, du_bytes, last_answer_taken, log, machine, timed, verify

PLANNED = "ASSET_MATERIALIZATION_PLANNED"
MATERIALIZATION = "ASSET_MATERIALIZATION"
RUN_START = "PIPELINE_START"  # DagsterEventType.RUN_START's stored value
STEP = "amd_daily"
SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENTS_ENV = "AMD_PARTITION_EVENTS"


def ScaleSim(latency_ms: float, campaigns: int) -> SimProcess:  # noqa: N802 (reads as the class it builds)
    """The simulator serving ``campaigns`` predictive campaigns (ids 30001...)."""
    return SimProcess(latency_ms, campaigns=campaigns)


def campaign_ids(count: int) -> list[str]:
    return [str(30001 + i) for i in range(count)]


class Profile:
    """Where the Dagster instance lives; one fresh instance per run."""

    name = ""

    def prepare(self, home: Path, env: dict[str, str]) -> None:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    def events(self, run_ids: list[str]) -> dict[str, list[int]]:
        """``{event type: [rows, bytes of the serialised event]}`` the runs wrote."""
        raise NotImplementedError

    @contextlib.contextmanager
    def instance(self):
        import dagster as dg

        saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")}
        os.environ.update(self.env)
        instance = dg.DagsterInstance.from_config(str(self.home))
        try:
            yield instance
        finally:
            instance.dispose()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class SqliteProfile(Profile):
    name = "sqlite"

    def prepare(self, home: Path, env: dict[str, str]) -> None:
        self.home = home  # the CLI creates it with the shipped dagster.yaml
        self.env = {"DAGSTER_HOME": str(home)}

    def size(self) -> int:
        return du_bytes(self.home)

    def events(self, run_ids: list[str]) -> dict[str, list[int]]:
        """Summed over the runs' own shards and index.db, which holds a second copy of the asset events."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.detail = {"index_db": defaultdict(lambda: [0, 0])}
        shards = self.home / "history" / "runs"
        marks = ",".join("?" * len(run_ids))
        sources = [(shards / f"{run_id}.db", "", []) for run_id in run_ids]
        sources.append((shards / "index.db", f" WHERE run_id IN ({marks})", run_ids))
        for path, where, params in sources:
            if not path.exists():
                continue
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                query = f"SELECT dagster_event_type, count(*), sum(length(event)) FROM event_logs{where} GROUP BY 1"
                for kind, rows, size in conn.execute(query, params):
                    for into in (totals, self.detail["index_db"]) if where else (totals,):
                        into[kind or "(log message)"][0] += rows
                        into[kind or "(log message)"][1] += size or 0
        return dict(totals)


class PostgresProfile(Profile):
    name = "postgres"

    def __init__(self, cluster):
        self.cluster = cluster

    def prepare(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.url = self.cluster.create_database()
        home.mkdir(parents=True)
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        env.update(DAGSTER_PG_URL=self.url, AMD_TOKEN_LOCK_URL=self.url)
        self.env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": self.url}

    def size(self) -> int:
        return self.cluster.database_bytes(self.url)

    def events(self, run_ids: list[str]) -> dict[str, list[int]]:
        import psycopg2

        conn = psycopg2.connect(self.url.replace("+psycopg2", ""))
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(
                "SELECT dagster_event_type, count(*), sum(length(event)) FROM event_logs "
                "WHERE run_id = ANY(%s) GROUP BY 1",
                (run_ids,),
            )
            return {(kind or "(log message)"): [int(rows), int(size or 0)] for kind, rows, size in cur.fetchall()}


def breakdown(profile: Profile, run_ids: list[str], began: float, ended: float) -> tuple[dict, dict]:
    """Split [process start, process end] along the runs' event logs (seconds); and ms per event early and late."""
    parts = defaultdict(float)
    rates: dict[str, float] = {}
    with profile.instance() as instance:
        entries = []
        for run_id in run_ids:
            entries.append(instance.all_logs(run_id))
    first_event = min(e[0].timestamp for e in entries if e)
    last_event = max(e[-1].timestamp for e in entries if e)
    for logs in entries:

        def first(kind: str, step: str | None = None, logs=logs) -> float | None:
            for e in logs:
                d = e.dagster_event
                if d and d.event_type_value == kind and (step is None or d.step_key == step):
                    return e.timestamp
            return None

        def last(kind: str, step: str | None = None, logs=logs) -> float | None:
            for e in reversed(logs):
                d = e.dagster_event
                if d and d.event_type_value == kind and (step is None or d.step_key == step):
                    return e.timestamp
            return None

        planned, run_start = first(PLANNED), first(RUN_START)
        step_start, step_end = first("STEP_START", STEP), last("STEP_SUCCESS", STEP) or last("STEP_FAILURE", STEP)
        last_answer = last_answer_taken(logs)
        mats = [
            e.timestamp
            for e in logs
            if e.dagster_event
            and e.dagster_event.event_type_value == MATERIALIZATION
            and e.dagster_event.step_key == STEP
        ]
        if last_answer is not None:
            parts["materializations_before_last_answer"] += sum(1 for t in mats if t < last_answer)
        checks = [
            e.timestamp
            for e in logs
            if e.dagster_event
            and e.dagster_event.step_key not in (None, STEP)
            and e.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE")
        ]
        for name, stamps in (
            ("planned", [e.timestamp for e in logs if e.dagster_event and e.dagster_event.event_type_value == PLANNED]),
            (
                "materialization",
                [
                    e.timestamp
                    for e in logs
                    if e.dagster_event
                    and e.dagster_event.event_type_value == MATERIALIZATION
                    and e.dagster_event.step_key == STEP
                ],
            ),
        ):
            # ms per event over the first and the last tenth: equal if writing one costs the same throughout.
            tenth = len(stamps) // 10
            if tenth >= 2:
                rates[f"{name}_ms_per_event_first_tenth"] = (stamps[tenth] - stamps[0]) / tenth * 1000
                rates[f"{name}_ms_per_event_last_tenth"] = (stamps[-1] - stamps[-1 - tenth]) / tenth * 1000
        if planned is not None and run_start is not None:
            # Dagster writes them before the run starts; a CLI run logging its partitions during the load
            # writes them in its step (counted there).
            parts["planned_events"] += max(0.0, run_start - planned)
        if run_start is not None and step_start is not None:
            parts["run_start_to_step"] += step_start - run_start
        if step_start is not None and last_answer is not None:
            parts["fetch_and_duckdb"] += last_answer - step_start
        if last_answer is not None and step_end is not None:
            # The last batch's write, the publish, and every materialisation event not made yet: on
            # Dagster's path (AMD_PARTITION_EVENTS=after) all of them, made after the step's compute.
            parts["after_last_answer"] += step_end - last_answer
        if checks:
            parts["asset_checks"] += max(checks) - min(checks)
    parts["process_start_to_first_event"] = first_event - began
    parts["last_event_to_exit"] = ended - last_event
    named = ("planned_events", "fetch_and_duckdb", "after_last_answer", "asset_checks")
    parts["rest"] = (ended - began) - sum(parts[k] for k in named)
    return {k: round(v, 3) for k, v in parts.items()}, {k: round(v, 2) for k, v in rates.items()}


def one_run(
    profile: Profile,
    sim: SimProcess,
    workdir: Path,
    args,
    latency_ms: float,
    subset: bool,
    batch: bool,
    events: str = "during",
) -> dict:
    label = (
        f"{profile.name}-L{latency_ms:g}"
        + ("-subset" if subset else "")
        + ("-batch" if batch else "-one")
        + f"-{events}"
    )
    run_dir = workdir / label
    run_dir.mkdir()
    home = run_dir / "home"
    duckdb_path = run_dir / "amd.duckdb"
    env = bench_env(sim, run_dir, home, duckdb_path, "auto")  # its own lock folder, so its own call ledger
    env["AMD_CAMPAIGNS"] = ",".join(campaign_ids(args.campaigns))
    env[SUBSET_ENV] = "true" if subset else "false"
    if not batch:
        env[BATCH_ENV] = "0"  # else the CLI's default (1000)
    env[EVENTS_ENV] = events
    profile.prepare(home, env)
    windows = args.campaigns * args.days
    result = {
        "profile": profile.name,
        "latency_ms": latency_ms,
        "subset_planned": subset,
        "event_batch": batch,
        "events": events,
        "campaigns": args.campaigns,
        "days": args.days,
        "windows": windows,
    }

    log(f"{label}: warm-up (1-day backfill, {args.campaigns} windows)")
    sim.reset()
    warm = days_span(1)
    warmed = timed([CLI, "backfill", "--start", str(warm[0]), "--end", str(warm[1]), "--quiet"], env, run_dir, 600)
    warm_overlaps = sim.stats()["overlaps"]
    if warmed["code"] != 0:
        result.update(check=f"WARM-UP FAILED rc={warmed['code']}: {warmed['stderr']}", overlaps=warm_overlaps)
        return result
    for path in (duckdb_path, duckdb_path.with_name("amd.working.duckdb")):
        path.unlink(missing_ok=True)
    with profile.instance() as instance:
        before_runs = {r.run_id for r in instance.get_runs()}
    size_before = profile.size()

    start, end = days_span(args.days)
    log(f"{label}: timed backfill {start}..{end}, {windows} windows (limit {args.timeout:g} s)")
    sim.reset()
    run = timed([CLI, "backfill", "--start", str(start), "--end", str(end), "--quiet"], env, run_dir, args.timeout)
    stats = sim.stats()
    size_after = profile.size()
    calls = stats["requests"]
    floor = calls * latency_ms / 1000
    # The simulator's own answer time: L plus computing 50 campaigns' truth for a new day (about 28 ms
    # here); a client that never waited between calls could not be faster than this.
    server = stats.get("busy_seconds") or 0.0
    wall = run["wall"]
    working = duckdb_path.with_name("amd.working.duckdb")
    result.update(
        calls=calls,
        calls_by_kind=stats.get("calls"),
        wall_s=round(wall, 2),
        floor_s=round(floor, 2),
        ratio=round(wall / floor, 3) if floor else None,
        server_s=round(server, 2),
        server_ratio=round(wall / server, 3) if server else None,
        overhead_over_server_ms_per_window=round((wall - server) / windows * 1000, 3),
        overhead_per_window_ms=round((wall - floor) / windows * 1000, 3),
        peak_rss_mb=round(run["rss_mb"], 1),
        cli_cpu_s=round(run["cpu_s"], 2),
        duckdb_mb=round(duckdb_path.stat().st_size / 1e6, 2) if duckdb_path.exists() else None,
        working_duckdb_mb=round(working.stat().st_size / 1e6, 2) if working.exists() else None,
        instance_before_bytes=size_before,
        instance_growth_bytes=size_after - size_before,
        growth_per_partition_bytes=round((size_after - size_before) / windows, 1),
        overlaps=stats["overlaps"] + warm_overlaps,
        exit_code=run["code"],
    )
    result["check"] = verify(duckdb_path, windows) if run["code"] == 0 else f"FAILED rc={run['code']}: {run['stderr']}"
    result["ok"] = run["code"] == 0 and "MISMATCH" not in result["check"] and result["overlaps"] == 0

    with profile.instance() as instance:
        run_ids = [r.run_id for r in instance.get_runs() if r.run_id not in before_runs]
    result["runs"] = len(run_ids)
    if run_ids:
        events = profile.events(run_ids)
        result["event_rows"] = sum(v[0] for v in events.values())
        result["event_bytes"] = sum(v[1] for v in events.values())
        result["events_by_type"] = dict(sorted(events.items(), key=lambda kv: -kv[1][1]))
        if getattr(profile, "detail", None):
            result["events_in_index_db"] = dict(profile.detail["index_db"])
        log(f"{label}: reading the run's event log")
        parts, rates = breakdown(profile, run_ids, run["began"], run["ended"])
        result["breakdown_s"] = parts
        result["event_write_ms"] = rates
        result["breakdown_ms_per_window"] = {k: round(v / windows * 1000, 3) for k, v in parts.items()}
    log(
        f"{label}: {result['wall_s']} s (floor {result['floor_s']} s, server's answer time {result['server_s']} s), "
        f"{result['check']}, overlaps {result['overlaps']}"
    )
    return result


def mb(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f}"


def top3(events: dict[str, list[int]] | None) -> str:
    if not events:
        return ""
    return "; ".join(f"{kind} {rows:,} / {mb(size)} MB" for kind, (rows, size) in list(events.items())[:3])


def report(results: list[dict]) -> None:
    print()
    print(
        "| profile | L ms | planned events | event writes | windows | calls | wall s | CLI CPU s | floor s "
        "| wall/floor | server s | wall/server | overhead ms/window (over server) | peak RSS MB | DuckDB MB "
        "| instance growth MB | growth B/partition "
        "| event rows | event MB | top 3 event types (rows / MB) | ground truth | overlaps |"
    )
    print("|" + "---|" * 22)
    for r in results:
        cells = [
            r["profile"],
            f"{r['latency_ms']:g}",
            "per run" if r["subset_planned"] else "per partition",
            ("batched" if r.get("event_batch") else "one at a time") + f", {r.get('events', 'after')}",
            f"{r['windows']:,}",
            r.get("calls", ""),
            r.get("wall_s", ""),
            r.get("cli_cpu_s", ""),
            r.get("floor_s", ""),
            r.get("ratio") or "",
            r.get("server_s", ""),
            r.get("server_ratio") or "",
            f"{r.get('overhead_per_window_ms', '')} ({r.get('overhead_over_server_ms_per_window', '')})",
            r.get("peak_rss_mb", ""),
            r.get("duckdb_mb", ""),
            mb(r.get("instance_growth_bytes")),
            f"{r['growth_per_partition_bytes']:,.0f}" if "growth_per_partition_bytes" in r else "",
            f"{r['event_rows']:,}" if "event_rows" in r else "",
            mb(r.get("event_bytes")),
            top3(r.get("events_by_type")),
            r.get("check", ""),
            r.get("overlaps", ""),
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")

    print()
    print(
        "Event rows/bytes: the timed run's rows in the instance; on sqlite summed over the run's shard and "
        "index.db, which keeps a second copy of every asset event (planned, materialization, check)."
    )
    print()
    print("What the wall time is made of (seconds, and ms per window in parentheses):")
    print()
    columns = [
        ("planned_events", "planned events (first planned -> RUN_START)"),
        ("fetch_and_duckdb", "calls + parsing + DuckDB (amd_daily STEP_START -> the last answer taken)"),
        ("after_last_answer", "last batch + publish + events not logged yet (-> step end)"),
        ("asset_checks", "asset check steps"),
        ("rest", "rest"),
    ]
    print(
        "| profile | L ms | planned events | event writes | wall s | "
        + " | ".join(t for _, t in columns)
        + " | rest: of which process start -> first event, run start -> step, last event -> exit"
        + " | materialisations logged before the last answer"
        + " | ms per planned event, first -> last tenth | ms per materialization event, first -> last tenth |"
    )
    print("|" + "---|" * (9 + len(columns)))
    for r in results:
        parts, per = r.get("breakdown_s"), r.get("breakdown_ms_per_window")
        if not parts:
            continue
        cells = [
            r["profile"],
            f"{r['latency_ms']:g}",
            "per run" if r["subset_planned"] else "per partition",
            ("batched" if r.get("event_batch") else "one at a time") + f", {r.get('events', 'after')}",
            r["wall_s"],
        ]
        cells += [f"{parts.get(k, 0):.2f} ({per.get(k, 0):.2f})" for k, _ in columns]
        rest = ("process_start_to_first_event", "run_start_to_step", "last_event_to_exit")
        cells.append(", ".join(f"{parts.get(k, 0):.2f}" for k in rest))
        cells.append(f"{parts.get('materializations_before_last_answer', 0):,.0f}")
        rates = r.get("event_write_ms", {})
        for name in ("planned", "materialization"):
            head, tail = rates.get(f"{name}_ms_per_event_first_tenth"), rates.get(f"{name}_ms_per_event_last_tenth")
            cells.append(f"{head:.1f} -> {tail:.1f}" if head is not None else "")
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaigns", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--latency-ms", default="0,200", help="comma list of simulator latencies")
    parser.add_argument("--profiles", default="sqlite,postgres", help="comma list of: sqlite, postgres")
    parser.add_argument(
        "--planned",
        choices=["per-run", "per-partition", "both"],
        default="per-run",
        help=f"per-run: the CLI's default; per-partition: {SUBSET_ENV}=false (Dagster's default); both",
    )
    parser.add_argument(
        "--event-batch",
        choices=["on", "off", "both"],
        default="on",
        help=f"on: the CLI's default ({BATCH_ENV}=1000); off: {BATCH_ENV}=0 (Dagster's default); both",
    )
    parser.add_argument(
        "--events",
        choices=["during", "after", "both"],
        default="during",
        help=f"during: the CLI's default ({EVENTS_ENV}=during); after: Dagster's path, after the step; both",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one timed backfill may take")
    parser.add_argument("--out", default="/tmp/amd-scale.json", help="JSON file of all figures")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # the table and the progress lines (stderr) in order
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = set(profiles) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown profiles {sorted(unknown)}")
    latencies = [float(x) for x in args.latency_ms.split(",") if x]

    workdir = Path(tempfile.mkdtemp(prefix="amd-scale-"))
    print(f"machine: {machine()}")
    print(
        f"{args.campaigns} campaigns x {args.days} days = {args.campaigns * args.days:,} windows, "
        f"WOLKVOX_CAMPAIGN_ALL=auto; latencies {args.latency_ms} ms; profiles {args.profiles}; workdir {workdir}"
    )
    results: list[dict] = []
    out = Path(args.out)

    def save() -> None:
        out.write_text(json.dumps({"machine": machine(), "args": vars(args), "runs": results}, indent=2))

    with contextlib.ExitStack() as stack:
        pg = None
        if "postgres" in profiles:
            from amd_pipeline_tests.pg_cluster import cluster

            log("starting a throwaway PostgreSQL cluster")
            pg = stack.enter_context(cluster())
        for latency in latencies:
            log(f"simulator: {args.campaigns} campaigns, L = {latency:g} ms")
            sim = ScaleSim(latency, args.campaigns)
            try:
                for name in profiles:
                    for subset in {"per-run": (True,), "per-partition": (False,), "both": (True, False)}[args.planned]:
                        for batch in {"on": (True,), "off": (False,), "both": (False, True)}[args.event_batch]:
                            for events in {"during": ("during",), "after": ("after",), "both": ("after", "during")}[
                                args.events
                            ]:
                                profile = SqliteProfile() if name == "sqlite" else PostgresProfile(pg)
                                results.append(one_run(profile, sim, workdir, args, latency, subset, batch, events))
                                save()
            finally:
                sim.stop()
    report(results)
    save()
    print(f"\nJSON: {out}")
    failed = [r for r in results if not r.get("ok")]
    if failed:
        for r in failed:
            print(f"FAILED: {r['profile']} L={r['latency_ms']:g}: {r.get('check')}, overlaps {r.get('overlaps')}")
        sys.exit(1)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
