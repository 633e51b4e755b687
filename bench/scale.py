"""Operation-scale benchmark: 50 campaigns x 365 days through `amd-pipeline backfill`, per instance profile.

    python bench/scale.py                                               # 50 x 365, sqlite+postgres, L = 0 and 200 ms
    python bench/scale.py --campaigns 50 --days 20 --profiles sqlite     # a quick look
    python bench/scale.py --days 10 --latency-ms 0 --planned both      # also with Dagster's default
    python bench/scale.py --latency-ms 0 --event-batch both            # also writing events one at a time

Each run: a fresh instance warmed up by a 1-day backfill, the timed backfill checked against the
simulator's ground truth, its wall time split along the run's event log. docs/performance.md
("Measured at an operation's scale") says what the options change and what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from environments import bench_env
from event_log import event_time, event_times, last_answer_taken
from instances import PostgresProfile, Profile, SqliteProfile
from output import log, machine
from processes import backfill_argv, days_span, timed
from simulators import SimProcess
from truth import verify

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
    """The ids of the simulator's ``count`` predictive campaigns."""
    return [str(30001 + i) for i in range(count)]


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
        planned, run_start = event_time(logs, PLANNED), event_time(logs, RUN_START)
        step_start = event_time(logs, "STEP_START", STEP)
        step_end = event_time(logs, "STEP_SUCCESS", STEP, last=True) or event_time(
            logs, "STEP_FAILURE", STEP, last=True
        )
        last_answer = last_answer_taken(logs)
        mats = event_times(logs, MATERIALIZATION, STEP)
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
            ("planned", event_times(logs, PLANNED)),
            ("materialization", mats),
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
    """One profile's warm-up and timed backfill at one latency and event setting: its figures."""
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
    warmed = timed(backfill_argv(*warm), env, run_dir, 600)
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
    run = timed(backfill_argv(start, end), env, run_dir, args.timeout)
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
    """Bytes as megabytes with one decimal; empty for None."""
    return "" if n is None else f"{n / 1e6:.1f}"


def top3(events: dict[str, list[int]] | None) -> str:
    """The three event types that took most bytes: rows / MB each."""
    if not events:
        return ""
    return "; ".join(f"{kind} {rows:,} / {mb(size)} MB" for kind, (rows, size) in list(events.items())[:3])


def report(results: list[dict]) -> None:
    """The figures of every run and what their wall times are made of, as two Markdown tables."""
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
    """Every profile, latency and event setting the options name, one after the other; the tables and a JSON file."""
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
