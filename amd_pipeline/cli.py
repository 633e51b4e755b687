"""The ``amd-pipeline`` command: demo, simulator, backfill, query, dev."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from amd_pipeline.simulator import FAULTS, SimConfig, Simulator

# Dagster and pandas are imported inside the commands that need them: `amd-pipeline simulator`
# starts in a fraction of a second.


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day like 2026-11-01: {text!r}") from None


class ProgressPrinter:
    """A progress bar on a terminal, plain lines (every 5 s and at the end) otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        finished = p.windows_done == p.windows_total
        rate = p.windows_done / p.elapsed if p.elapsed > 0 else 0.0
        eta = (p.windows_total - p.windows_done) / rate if rate else 0.0
        text = f"{p.windows_done}/{p.windows_total} windows, {p.calls} calls, {p.retries} retries, ETA {eta:.0f} s"
        if self.tty:
            if not finished and now - self._last < 0.1:
                return
            self._last = now
            width = 30
            filled = int(width * p.windows_done / max(p.windows_total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}   ")
            if finished:
                self.stream.write("\n")
            self.stream.flush()
        elif finished or now - self._last >= 5.0:
            self._last = now
            print(f"progress: {text}", file=self.stream, flush=True)


def _campaign_groups(ordered: Sequence[str], selected: Sequence[str]) -> list[list[str]]:
    """Split ``selected`` into runs of campaigns adjacent in the partition order (one Dagster run each)."""
    chosen = set(selected)
    groups: list[list[str]] = []
    current: list[str] = []
    for campaign in ordered:
        if campaign in chosen:
            current.append(campaign)
        elif current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def run_backfill(
    start: dt.date,
    end: dt.date,
    campaigns: Sequence[str] = (),
    *,
    home: str | None = None,
    show_progress: bool = True,
    dry_run: bool = False,
    force: bool = False,
) -> int:
    """Materialise ``amd_daily`` for campaigns x [start, end] through Dagster. Returns an exit code.

    Before launching, it plans the calls, asks the server how much of the daily quota is left
    (``token_info``, one call) and refuses a backfill that needs more unless ``force``.
    """
    import dagster as dg

    from amd_pipeline import progress
    from amd_pipeline.assets import observed_latency
    from amd_pipeline.definitions import AMD_DAILY_JOB, build_definitions
    from amd_pipeline.instance import cli_run_tags, get_instance, prepare_home, release_dead_cli_runs
    from amd_pipeline.loader import CampaignAll, Plan, plan_calls
    from amd_pipeline.partitions import CAMPAIGN_DIMENSION, campaigns_partitions, day_key, window_request
    from amd_pipeline.settings import DefinitionSettings
    from amd_pipeline.wolkvox.errors import WolkvoxError

    settings = DefinitionSettings.from_env()
    today = dt.datetime.now(ZoneInfo(settings.timezone)).date()
    if start > end:
        print(f"error: --start {start} is after --end {end}", file=sys.stderr)
        return 2
    if start < settings.start_date or end > today:
        print(
            f"error: days must lie between AMD_START_DATE={settings.start_date} and today ({today}, "
            f"{settings.timezone}); got {start}..{end}",
            file=sys.stderr,
        )
        return 2
    home_path = prepare_home(home)
    instance = get_instance(home_path)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(AMD_DAILY_JOB)
    top_level = defs.get_repository_def().get_top_level_resources()

    with dg.build_resources(
        {"wolkvox": top_level["wolkvox"], "campaign_source": top_level["campaign_source"]}
    ) as built:
        wolkvox = built.wolkvox
        selected = list(dict.fromkeys(campaigns)) or built.campaign_source.resolve(wolkvox)
        if not selected:
            print("error: no campaigns: set AMD_CAMPAIGNS or pass --campaign ID", file=sys.stderr)
            return 2
        days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        requests = [window_request(day_key(c, d), settings.timezone) for d in days for c in selected]
        mode = wolkvox.campaign_all_mode()
        quota = None
        try:
            with wolkvox.client() as client:
                quota = client.token_info()
        except WolkvoxError as exc:
            print(f"warning: daily quota unknown ({exc})", file=sys.stderr)
        daily = wolkvox.daily_quota or (quota["token_limit"] if quota else 0)
        plan = Plan(
            windows=len(requests),
            calls=len(plan_calls(requests, use_all=mode != CampaignAll.OFF)),
            daily_quota=daily or None,
            quota_remaining=(daily - quota["token_use_today"]) if quota and daily else None,
            median_latency=observed_latency(instance, dg.AssetKey("amd_daily")),
        )

    existing = instance.get_dynamic_partitions(CAMPAIGN_DIMENSION)
    missing = [c for c in selected if c not in existing]
    groups = _campaign_groups([*existing, *missing], selected)
    print(
        f"amd_daily: {len(selected)} campaign(s) x {len(days)} day(s) in {len(groups)} run(s), "
        f"campaign_id=all {mode}: {plan.describe()}",
        file=sys.stderr,
    )
    if dry_run:
        return 0
    if plan.exceeds_remaining and not force:
        print(
            f"error: this backfill needs {plan.calls} calls but only {plan.quota_remaining} of today's "
            f"{plan.daily_quota} remain; it needs {plan.quota_days} day(s) of quota. Backfill fewer days at a "
            "time, or pass --force to spend what is left (the run stops when the quota runs out).",
            file=sys.stderr,
        )
        return 3
    if missing:
        instance.add_dynamic_partitions(campaigns_partitions.name, missing)
        print(f"added campaign partitions: {', '.join(missing)}", file=sys.stderr)
    for run_id in release_dead_cli_runs(instance):
        print(f"run {run_id} of a dead amd-pipeline process: marked failed, its token slot freed", file=sys.stderr)

    failed = 0
    listener = ProgressPrinter() if show_progress else (lambda p: None)
    with progress.listening(listener):
        for group in groups:
            tags = {
                "dagster/asset_partition_range_start": str(day_key(group[0], start)),
                "dagster/asset_partition_range_end": str(day_key(group[-1], end)),
                "amd_pipeline/launched_by": "cli",
                **cli_run_tags(),
            }
            result = job.execute_in_process(
                instance=instance,
                tags=tags,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            if result.success:
                print(f"run {result.run_id}: ok ({', '.join(group)})", file=sys.stderr)
                continue
            failed += 1
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                    print(
                        f"run {result.run_id} failed: {event.step_failure_data.error.message.strip()}", file=sys.stderr
                    )
    return 1 if failed else 0


def _summary(duckdb_path: str, start: dt.date, end: dt.date):
    from amd_pipeline.store import AmdStore

    return AmdStore(duckdb_path).query(
        """
        SELECT campaign_id,
               count(*) AS days,
               count(*) FILTER (WHERE fetch_status = 'fetched_empty') AS empty_days,
               sum(total_amd)::BIGINT AS total_amd,
               round(avg(total_amd), 1) AS avg_per_day,
               max(total_amd) AS max_day
        FROM amd_daily
        WHERE local_date BETWEEN ? AND ?
        GROUP BY campaign_id ORDER BY campaign_id
        """,
        [start, end],
    )


def _foreign_campaigns(duckdb_path: str, home: Path, demo_ids: set[str]) -> list[str]:
    """Campaigns that are not the simulator's, already in the DuckDB file or the instance."""
    import dagster as dg

    from amd_pipeline.partitions import CAMPAIGN_DIMENSION
    from amd_pipeline.store import AmdStore

    found: set[str] = set()
    if Path(duckdb_path).exists():
        tables = AmdStore(duckdb_path).query("SELECT table_name FROM information_schema.tables")
        if "amd_daily" in set(tables.table_name):
            found |= set(AmdStore(duckdb_path).query("SELECT DISTINCT campaign_id FROM amd_daily").campaign_id)
    if (home / "dagster.yaml").exists():
        instance = dg.DagsterInstance.from_config(str(home))
        found |= set(instance.get_dynamic_partitions(CAMPAIGN_DIMENSION))
    return sorted(found - demo_ids)


def cmd_demo(args: argparse.Namespace) -> int:
    from amd_pipeline.instance import prepare_home
    from amd_pipeline.settings import DefinitionSettings

    settings = DefinitionSettings.from_env()
    duckdb_path = args.duckdb
    home = prepare_home(args.home)
    foreign = _foreign_campaigns(duckdb_path, home, {c.campaign_id for c in SimConfig().campaigns})
    if foreign:
        print(
            f"error: {duckdb_path} or DAGSTER_HOME={home} already holds campaigns that are not the demo's "
            f"({', '.join(foreign[:5])}); the demo will not mix its data with yours. "
            "Pass --duckdb and --home to run it elsewhere.",
            file=sys.stderr,
        )
        return 2
    today = dt.datetime.now(ZoneInfo(settings.timezone)).date()
    end = today - dt.timedelta(days=1)
    start = max(end - dt.timedelta(days=args.days - 1), settings.start_date)
    config = SimConfig(
        token=secrets.token_urlsafe(24),
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        faults=("500", "html502", "maintenance", "busy", "drop", "truncated", "code_string", "data_object"),
        seed=7,
    )
    with Simulator(config) as sim:
        # The demo never calls a real host: the simulator's URL and a throwaway token for this process.
        os.environ.update(
            WOLKVOX_BASE_URL=sim.url,
            WOLKVOX_TOKEN=config.token,
            WOLKVOX_BACKOFF_BASE_MS="50",
            WOLKVOX_MAINTENANCE_DELAY_MS="100",
        )
        for name in ("WOLKVOX_SERVER", "AMD_CAMPAIGNS"):
            os.environ.pop(name, None)
        os.environ["AMD_DUCKDB_PATH"] = duckdb_path
        print(
            f"demo: Wolkvox simulator at {sim.url} "
            f"({args.latency_ms:g} ms per answer, faults on {args.fault_rate:.0%} of calls)"
        )
        code = run_backfill(start, end, home=str(home))
        stats = sim.stats()
    if code:
        return code
    from amd_pipeline.simulator import truth_for_day
    from amd_pipeline.store import AmdStore

    rows = AmdStore(duckdb_path).query(
        "SELECT campaign_id, local_date, total_amd FROM amd_daily WHERE local_date BETWEEN ? AND ?", [start, end]
    )
    mismatches = sum(1 for r in rows.itertuples() if r.total_amd != truth_for_day(r.campaign_id, r.local_date.date()))
    print()
    print(f"amd_daily in {duckdb_path}, {start} .. {end} ({settings.timezone}):")
    print(_summary(duckdb_path, start, end).to_string(index=False))
    print()
    print(
        f"{len(rows)} rows; {len(rows) - mismatches} equal the simulator's ground truth, {mismatches} differ. "
        f"Simulator: {stats['requests']} requests, {sum(stats['faults_injected'].values())} faults injected, "
        f"{stats['overlaps']} overlapping requests."
    )
    print('Try: amd-pipeline query "SELECT * FROM amd_daily ORDER BY local_date DESC LIMIT 10"')
    return 0 if mismatches == 0 and stats["overlaps"] == 0 else 1


def cmd_backfill(args: argparse.Namespace) -> int:
    return run_backfill(
        args.start,
        args.end,
        args.campaign or (),
        home=args.home,
        show_progress=not args.quiet,
        dry_run=args.dry_run,
        force=args.force,
    )


def cmd_query(args: argparse.Namespace) -> int:
    import pandas as pd

    from amd_pipeline.settings import DEFAULT_DUCKDB_PATH
    from amd_pipeline.store import AmdStore

    path = args.duckdb or os.environ.get("AMD_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH
    if not Path(path).exists():
        print(f"error: {path} does not exist yet; run `amd-pipeline demo` or a backfill first", file=sys.stderr)
        return 2
    timezone = os.environ.get("WOLKVOX_TIMEZONE") or "America/Bogota"
    try:
        frame = AmdStore(path).query(args.sql, timezone=timezone)
    except Exception as exc:  # duckdb raises many error types; show the message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.csv:
        print(frame.to_csv(index=False), end="")
        return 0
    with pd.option_context("display.width", 200):
        print(frame.head(args.max_rows).to_string(index=False))
    if len(frame) > args.max_rows:
        print(f"({len(frame)} rows, first {args.max_rows} shown; --max-rows or --csv for more)", file=sys.stderr)
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    faults = tuple(f for f in args.faults.split(",") if f) if args.faults else ()
    unknown = set(faults) - set(FAULTS)
    if unknown:
        print(f"error: unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    config = SimConfig(
        token=args.token,
        latency_ms=args.latency_ms,
        daily_quota=args.daily_quota,
        max_in_flight=args.max_in_flight,
        supports_all=not args.no_all,
        fault_rate=args.fault_rate,
        faults=faults,
        seed=args.seed,
    )
    sim = Simulator(config, host=args.host, port=args.port, verbose=args.verbose)
    print(f"Wolkvox simulator on {sim.url} (WOLKVOX_BASE_URL={sim.url}); stats at {sim.url}/_sim/stats", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from amd_pipeline.instance import prepare_home

    home = prepare_home(args.home)
    print(f"DAGSTER_HOME={home}", file=sys.stderr)
    # The venv's dagster, even when the venv is not activated.
    beside = Path(sys.executable).parent / "dagster"
    executable = str(beside) if beside.exists() else shutil.which("dagster")
    if executable is None:
        print("error: the dagster command is not installed in this environment", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    # Become `dagster dev` (not its parent), so Ctrl-C and kill reach it directly.
    os.execv(executable, [executable, "dev", "-w", args.workspace, "-p", str(args.port)])
    return 0  # pragma: no cover - exec does not return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amd-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="backfill a few weeks from the built-in simulator into DuckDB and summarise")
    demo.add_argument("--days", type=int, default=21)
    demo.add_argument("--latency-ms", type=float, default=5.0)
    demo.add_argument("--fault-rate", type=float, default=0.1, help="share of calls that get a fault")
    demo.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    demo.add_argument("--duckdb", default="data/amd.duckdb", help="database file (default: data/amd.duckdb)")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulator", help="serve the Wolkvox simulator in the foreground")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--token", default="demo-token", help="the token it accepts")
    sim.add_argument("--latency-ms", type=float, default=0.0)
    sim.add_argument("--daily-quota", type=int, default=1000)
    sim.add_argument("--max-in-flight", type=int, default=1, help="simultaneous requests before 403 busy")
    sim.add_argument("--fault-rate", type=float, default=0.0)
    sim.add_argument("--faults", default="", help=f"comma list of: {', '.join(FAULTS)}")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--no-all", action="store_true", help="refuse campaign_id=all")
    sim.add_argument("--verbose", action="store_true", help="log every request")
    sim.set_defaults(func=cmd_simulator)

    backfill = sub.add_parser("backfill", help="materialise amd_daily for campaigns x days through Dagster")
    backfill.add_argument("--start", type=_day, required=True, help="first local day, inclusive")
    backfill.add_argument("--end", type=_day, required=True, help="last local day, inclusive")
    backfill.add_argument("--campaign", action="append", help="campaign id (repeatable); default: all campaigns")
    backfill.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    backfill.add_argument("--quiet", action="store_true", help="no progress output")
    backfill.add_argument("--dry-run", action="store_true", help="print calls, quota share and ETA; launch nothing")
    backfill.add_argument("--force", action="store_true", help="launch even if it needs more than today's quota left")
    backfill.set_defaults(func=cmd_backfill)

    query = sub.add_parser("query", help="run read-only SQL on the DuckDB file")
    query.add_argument("sql")
    query.add_argument("--duckdb", help="database file (default: $AMD_DUCKDB_PATH or data/amd.duckdb)")
    query.add_argument("--csv", action="store_true")
    query.add_argument("--max-rows", type=int, default=200)
    query.set_defaults(func=cmd_query)

    dev = sub.add_parser("dev", help="start the Dagster UI and daemon on the project's DAGSTER_HOME")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument("--workspace", default="workspace.yaml")
    dev.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is superseded)")
    sys.exit(args.func(args))
