"""The ``amd-pipeline`` command: demo, simulator, backfill, query, migrate-timezone, dev.

Exit statuses: 0 ok, 1 a run or a call failed, 2 bad input (nothing was called or written),
3 refused by the quota guard, 4 stopped by the daily call budget or quota (the rest is deferred),
130 interrupted. Errors are one line on stderr; ``--verbose`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from amd_pipeline.settings import RunSettings, SettingsError
from amd_pipeline.simulator import DEMO_CAMPAIGNS, FAULTS, SimConfig, Simulator, many_campaigns

# Dagster and pandas are imported inside the commands that need them: `amd-pipeline simulator`
# starts in a fraction of a second.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_QUOTA = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130


class CliExit(Exception):  # noqa: N818 - an exit, not an error
    """Stop the command with ``status`` after printing ``message`` as one ``error:`` line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line (``SettingsError``) instead of usage + message."""

    def error(self, message: str):
        raise SettingsError(f"{message} (see `{self.prog} --help`)")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day like 2026-11-01: {text!r}") from None


def _number(kind, low: float, high: float | None = None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}..{high if high is not None else ''})")
        return value

    return parse


class ProgressPrinter:
    """A `rich` progress bar on a terminal; plain lines (every 5 s and at the end) otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0
        self._bar = None
        self._task = None

    def __call__(self, p) -> None:
        finished = p.windows_done == p.windows_total
        if self.tty:
            self._draw(p, finished)
            return
        now = time.monotonic()
        if finished or now - self._last >= 5.0:
            self._last = now
            rate = p.windows_done / p.elapsed if p.elapsed > 0 else 0.0
            eta = (p.windows_total - p.windows_done) / rate if rate else 0.0
            print(
                f"progress: {p.windows_done}/{p.windows_total} windows, {p.calls} calls, {p.retries} retries, "
                f"ETA {eta:.0f} s",
                file=self.stream,
                flush=True,
            )

    def _draw(self, p, finished: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Progress(
                TextColumn("windows"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[calls]} calls, {task.fields[retries]} retries"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task("load", total=p.windows_total, calls=0, retries=0)
            self._bar.start()
        self._bar.update(self._task, completed=p.windows_done, total=p.windows_total, calls=p.calls, retries=p.retries)
        if finished:
            self._bar.stop()
            self._bar = None


def _preflight_calls(wolkvox, campaign_source, explicit: Sequence[str], force: bool, store=None):
    """The API calls made before a backfill starts: the quota left, and which campaigns to load.

    Returns ``(quota, selected)``. Raises :class:`SettingsError` for an unknown campaign (exit 2),
    :class:`CliExit` when the server cannot be used (exit 1) or the quota is spent (exit 3).
    """
    from amd_pipeline.messages import explain
    from amd_pipeline.wolkvox import errors

    quota = None
    try:
        with wolkvox.client("cli") as client:
            quota = client.token_info_today or client.token_info()
    except errors.BudgetExhaustedError as exc:
        raise CliExit(EXIT_BUDGET, f"{explain(exc, timezone=wolkvox.timezone)}; nothing was called") from None
    except errors.QuotaExhaustedError as exc:
        raise CliExit(EXIT_QUOTA, explain(exc)) from None
    except (errors.FatalError, errors.TransportError) as exc:
        raise CliExit(EXIT_FAILED, explain(exc)) from None
    except errors.WolkvoxError as exc:
        print(f"warning: daily quota unknown ({explain(exc)})", file=sys.stderr)

    if not explicit:
        try:
            selected = campaign_source.resolve(wolkvox, store=store)
        except errors.WolkvoxError as exc:
            raise CliExit(EXIT_FAILED, f"cannot list the operation's campaigns: {explain(exc)}") from None
        if not selected:
            raise SettingsError("no campaigns: set AMD_CAMPAIGNS or pass --campaign ID")
        return quota, selected
    if not force:
        try:
            rows = campaign_source.listing(wolkvox)
        except errors.WolkvoxError as exc:
            print(f"warning: could not check the campaign ids ({explain(exc)})", file=sys.stderr)
        else:
            known = campaign_source.kept(rows)
            unknown = [c for c in explicit if c not in known]
            if unknown:  # refused before the list is kept: a mistyped id writes no file
                raise SettingsError(
                    f"campaign {', '.join(unknown)} is not one of the operation's predictive campaigns "
                    f"({', '.join(known) or 'none found'}); check the id, or pass --force to load it anyway"
                )
            if store is not None:
                store.record_campaigns(rows, dt.datetime.now(dt.UTC))
    return quota, list(explicit)


def run_backfill(
    start: dt.date,
    end: dt.date,
    campaigns: Sequence[str] = (),
    *,
    home: str | None = None,
    show_progress: bool = True,
    dry_run: bool = False,
    force: bool = False,
    verbose: bool = False,
    refetch: bool = False,
) -> int:
    """Materialise ``amd_daily`` for campaigns x [start, end] through Dagster. Returns an exit status.

    Every argument and setting is checked first (exit 2, nothing called or written). Then it asks
    the server how much of the daily quota is left (``token_info``, one call), plans the calls for
    the windows that are not final yet (all of them with ``refetch``) and refuses a backfill that
    needs more than the quota or the pipeline's daily budget leaves, unless ``force`` (exit 3).
    A run stopped by the budget or the quota exits 4; the next backfill fetches only what is missing.
    """
    from amd_pipeline.settings import check_campaign_id
    from amd_pipeline.store import AmdStore, StoreLockedError

    settings = RunSettings.from_env()
    timezone = settings.definition.timezone
    explicit = list(dict.fromkeys(check_campaign_id(c) for c in campaigns))
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    if start > end:
        raise SettingsError(f"--start {start} is after --end {end}: swap them")
    if start < settings.definition.start_date or end > today:
        raise SettingsError(
            f"days must lie between AMD_START_DATE={settings.definition.start_date} and today ({today}, "
            f"{timezone}); got {start}..{end}"
        )
    stored = None
    with contextlib.suppress(StoreLockedError):  # a held file is checked again when the load writes
        stored = AmdStore(settings.working_path, lock_timeout=0).stored_timezone()
    if stored not in (None, timezone):
        raise SettingsError(
            f"{settings.working_path} holds days in {stored}, but WOLKVOX_TIMEZONE is {timezone}: set "
            f"WOLKVOX_TIMEZONE={stored}, or move the file with `amd-pipeline migrate-timezone --to {timezone}`"
        )

    import dagster as dg

    from amd_pipeline import progress
    from amd_pipeline.assets import MISSING_ONLY_TAG, SOURCE_TAG, observed_latency
    from amd_pipeline.definitions import AMD_DAILY_JOB, build_definitions
    from amd_pipeline.instance import cli_run_tags, get_instance, prepare_home, release_dead_cli_runs
    from amd_pipeline.loader import CampaignAll, Plan, WindowRequest, plan_calls
    from amd_pipeline.partitions import CAMPAIGN_DIMENSION, campaigns_partitions
    from amd_pipeline.runs import days_between, quota_refusal, ranged_runs
    from amd_pipeline.store import AMD_DAILY
    from amd_pipeline.windows import day_window

    defs = build_definitions(settings.definition)
    top_level = defs.get_repository_def().get_top_level_resources()
    with dg.build_resources(
        {"wolkvox": top_level["wolkvox"], "campaign_source": top_level["campaign_source"]}
    ) as built:
        wolkvox = built.wolkvox
        quota, selected = _preflight_calls(
            wolkvox, built.campaign_source, explicit, force, AmdStore(settings.working_path, timezone=timezone)
        )
        mode = wolkvox.campaign_all_mode()

        ledger = wolkvox.ledger()
        budget = wolkvox.budget(ledger)
        used = sum(ledger.usage().values())

    days = days_between(start, end)
    requests = [WindowRequest(c, day_window(d, timezone)) for d in days for c in selected]
    final = set()
    if not refetch:
        with contextlib.suppress(StoreLockedError):
            final = AmdStore(settings.working_path, lock_timeout=0).final_keys(
                AMD_DAILY, [(r.campaign_id, r.window.start) for r in requests]
            )
    missing = [r for r in requests if (r.campaign_id, r.window.start) not in final]
    home_path = prepare_home(home)
    instance = get_instance(home_path)
    daily = settings.numbers["WOLKVOX_DAILY_QUOTA"] or (quota["token_limit"] if quota else 0)
    plan = Plan(
        windows=len(missing),
        calls=len(plan_calls(missing, use_all=mode != CampaignAll.OFF)),
        daily_quota=daily or None,
        quota_remaining=(daily - quota["token_use_today"]) if quota and daily else None,
        median_latency=observed_latency(instance),
        budget_limit=budget.limit,
        budget_used=used,
    )
    existing = instance.get_dynamic_partitions(CAMPAIGN_DIMENSION)
    new_partitions = [c for c in selected if c not in existing]
    runs = ranged_runs([*existing, *new_partitions], selected, start, end)
    skipped = f", {len(final)} already final (--refetch to fetch them again)" if final else ""
    print(
        f"amd_daily: {len(selected)} campaign(s) x {len(days)} day(s) in {len(runs)} run(s), "
        f"campaign_id=all {mode}{skipped}: {plan.describe()}",
        file=sys.stderr,
    )
    if dry_run:
        return EXIT_OK
    if not missing:
        # No run, but the file still gets this version's schema and views.
        working = AmdStore(settings.working_path, timezone=timezone, start_date=settings.definition.start_date)
        working.prepare(AMD_DAILY)
        working.publish(settings.duckdb_path)
        print("nothing to fetch: every window is final", file=sys.stderr)
        return EXIT_OK
    refusal = quota_refusal(plan)
    if refusal and not force:
        raise CliExit(EXIT_QUOTA, refusal)
    if new_partitions:
        instance.add_dynamic_partitions(campaigns_partitions.name, new_partitions)
        print(f"added campaign partitions: {', '.join(new_partitions)}", file=sys.stderr)
    for run_id in release_dead_cli_runs(instance):
        print(f"run {run_id} of a dead amd-pipeline process: marked failed, its token slot freed", file=sys.stderr)

    job = defs.resolve_job_def(AMD_DAILY_JOB)
    # One "planned" event per run instead of one per partition: Dagster writes those before the run
    # starts, about 9 ms each (bench/scale.py: 2.8 minutes of a 50 x 365 backfill). They only drive the
    # UI's "in progress" and "failed" marks, which this command prints itself. Set it to false to keep them.
    os.environ.setdefault(SUBSET_PLANNED_EVENTS, "true")
    failures = []
    listener = ProgressPrinter() if show_progress else (lambda p: None)
    with progress.listening(listener):
        for run in runs:
            result = job.execute_in_process(
                instance=instance,
                tags={
                    **run.tags(),
                    SOURCE_TAG: "backfill",
                    MISSING_ONLY_TAG: "false" if refetch else "true",
                    **cli_run_tags(),
                },
                raise_on_error=False,
                # Dagster's console log repeats a failure with its stack trace: shown with --verbose only.
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING" if verbose else "CRITICAL"}}}},
            )
            if result.success:
                print(f"run {result.run_id}: ok ({', '.join(run.campaigns)})", file=sys.stderr)
            else:
                failures.append((result.run_id, *_failure_of(result)))
    for run_id, text, _ in failures:
        print(f"error: {text}", file=sys.stderr)
        print(
            f"run {run_id} failed; its logs: `amd-pipeline dev`, then http://localhost:3000/runs/{run_id}",
            file=sys.stderr,
        )
    if any(deferred for _, _, deferred in failures):
        return EXIT_BUDGET
    return EXIT_FAILED if failures else EXIT_OK


SUBSET_PLANNED_EVENTS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def _failure_of(result) -> tuple[str, bool]:
    """The sentence a failed run's step gave (its Failure description), and whether windows were deferred."""
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        if data is None:
            continue
        if data.user_failure_data and data.user_failure_data.description:
            deferred = "deferred_windows" in (data.user_failure_data.metadata or {})
            return data.user_failure_data.description.strip(), deferred
        if data.error:
            return data.error.message.strip().splitlines()[-1], False
    for event in result.all_events:
        if event.is_failure and event.message:
            return event.message.strip(), False
    return "the run failed before its step started", False


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
    """Campaigns that are not the simulator's, already in the DuckDB files (published, working) or the instance."""
    import dagster as dg

    from amd_pipeline.partitions import CAMPAIGN_DIMENSION
    from amd_pipeline.settings import working_path_for
    from amd_pipeline.store import AmdStore

    found: set[str] = set()
    for path in (duckdb_path, working_path_for(duckdb_path)):
        if not Path(path).exists():
            continue
        tables = AmdStore(path).query("SELECT table_name FROM information_schema.tables")
        if "amd_daily" in set(tables.table_name):
            found |= set(AmdStore(path).query("SELECT DISTINCT campaign_id FROM amd_daily").campaign_id)
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
        os.environ.pop("AMD_WORKING_DUCKDB_PATH", None)
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
        verbose=args.verbose,
        refetch=args.refetch,
    )


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb
    import pandas as pd

    from amd_pipeline.settings import DEFAULT_DUCKDB_PATH, DefinitionSettings
    from amd_pipeline.store import AmdStore

    timezone = DefinitionSettings.from_env().timezone
    path = args.duckdb or os.environ.get("AMD_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH
    if not Path(path).exists():
        raise SettingsError(f"{path} does not exist yet; run `amd-pipeline demo` or a backfill first")
    try:
        frame = AmdStore(path).query(args.sql, timezone=timezone)
    except duckdb.Error as exc:  # bad SQL, or a write on the read-only connection
        raise SettingsError(f"the query failed: {' '.join(str(exc).split())}") from None
    if args.csv:
        print(frame.to_csv(index=False), end="")
        return 0
    if args.json:
        print(frame.to_json(orient="records", date_format="iso", force_ascii=False))
        return 0
    shown = frame.head(args.max_rows)
    if sys.stdout.isatty():  # a table for people; plain text when piped
        from rich.console import Console
        from rich.table import Table

        table = Table(*[str(c) for c in shown.columns], show_lines=False)

        def cell(value) -> str:
            if pd.isna(value):
                return ""
            if isinstance(value, pd.Timestamp) and value.tz is None and value == value.normalize():
                return value.date().isoformat()  # a DATE column
            return str(value)

        for values in shown.itertuples(index=False):
            table.add_row(*[cell(v) for v in values])
        Console().print(table)
    else:
        with pd.option_context("display.width", 200):
            print(shown.to_string(index=False))
    if len(frame) > args.max_rows:
        print(f"({len(frame)} rows, first {args.max_rows} shown; --max-rows or --csv for more)", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from amd_pipeline.report import write_report
    from amd_pipeline.settings import DEFAULT_DUCKDB_PATH
    from amd_pipeline.store import AmdStore

    path = args.duckdb or os.environ.get("AMD_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH
    if not Path(path).exists():
        raise SettingsError(f"{path} does not exist yet; run `amd-pipeline demo` or a backfill first")
    images = write_report(
        AmdStore(path), Path(args.out), days=args.days, png_dir=Path(args.png_dir) if args.png_dir else None
    )
    print(f"wrote {args.out}: {len(images)} charts from {path}")
    return EXIT_OK


def cmd_budget(args: argparse.Namespace) -> int:
    """Today's calls per source against the daily budget, and what the schedules cost per day. No call."""
    import dagster as dg

    from amd_pipeline.definitions import build_definitions
    from amd_pipeline.runs import Cadence, calls_per_refresh, ticks_per_day
    from amd_pipeline.schedules import valid_campaigns

    settings = RunSettings.from_env()
    definition = settings.definition
    top_level = build_definitions(definition).get_repository_def().get_top_level_resources()
    with dg.build_resources({"wolkvox": top_level["wolkvox"]}) as built:
        wolkvox = built.wolkvox
        ledger = wolkvox.ledger()
        usage, budget = ledger.usage(), wolkvox.budget(ledger)
        mode = wolkvox.campaign_all_mode().value
        use_all = mode != "off"
    campaigns = list(settings.campaigns)
    home = Path(args.home or os.environ.get("DAGSTER_HOME") or ".dagster_home")
    if not campaigns and (home / "dagster.yaml").exists():
        with dg.DagsterInstance.from_config(str(home)) as instance:
            campaigns = valid_campaigns(instance)[1]
    used = sum(usage.values())
    quota = settings.numbers["WOLKVOX_DAILY_QUOTA"] or budget.daily_quota
    source = "WOLKVOX_DAILY_QUOTA" if settings.numbers["WOLKVOX_DAILY_QUOTA"] else "token_info"
    print(f"day: {ledger.today()} ({definition.timezone}); the count restarts at its midnight")
    if budget.limit is None:
        print("budget: unknown (set WOLKVOX_DAILY_QUOTA, or the next load reads it from token_info)")
    else:
        print(f"budget: {budget.limit} calls = {source} {quota} x AMD_QUOTA_SHARE {settings.quota_share:g}")
    per_source = ", ".join(f"{name} {count}" for name, count in sorted(usage.items())) or "none"
    left = f"; left: {max(budget.limit - used, 0)}" if budget.limit is not None else ""
    print(f"used today: {used} ({per_source}){left}")
    per_refresh = calls_per_refresh(len(campaigns), use_all)
    cadence = Cadence(per_refresh, ticks_per_day(definition.refresh_cron, definition.timezone), budget.limit)
    restate_runs = ticks_per_day(definition.restate_cron, definition.timezone)
    restate = restate_runs * definition.restate_days * per_refresh
    print(f"campaigns: {len(campaigns)}; WOLKVOX_CAMPAIGN_ALL {mode}")
    print(f"refresh ({definition.refresh_cron}): {cadence.describe()}")
    print(
        f"restate ({definition.restate_cron}): {restate_runs} run(s) x {definition.restate_days} day(s) x "
        f"{per_refresh} call(s) = {restate} calls/day"
    )
    return EXIT_OK


def cmd_migrate_timezone(args: argparse.Namespace) -> int:
    from amd_pipeline.settings import DEFAULT_DUCKDB_PATH, check_timezone, working_path_for
    from amd_pipeline.store import AMD_DAILY, AmdStore

    new = check_timezone(args.to, "--to")
    published = args.duckdb or os.environ.get("AMD_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH
    path = working_path_for(published, None if args.duckdb else os.environ.get("AMD_WORKING_DUCKDB_PATH"))
    if not Path(path).exists():
        raise SettingsError(f"{path} (the working file) does not exist: nothing to migrate")
    done = AmdStore(path).migrate_timezone(AMD_DAILY, new, dry_run=args.dry_run)
    if not args.dry_run:
        AmdStore(path).publish(published)
    verb = "would keep" if args.dry_run else "kept"
    print(
        f"{path}: days in {done.old or 'an unrecorded zone'} -> {done.new}: {verb} {done.kept_days} day(s) whose "
        f"windows are unchanged, {'would drop' if args.dry_run else 'dropped'} {len(done.dropped_days)} day(s) "
        f"({done.dropped_rows} rows) whose windows move"
    )
    if done.dropped_days:
        first, last = done.dropped_days[0], done.dropped_days[-1]
        print(
            f"refetch them with: WOLKVOX_TIMEZONE={new} amd-pipeline backfill --start {first} --end {last}"
            " (restart `amd-pipeline dev` too: the partitions follow WOLKVOX_TIMEZONE)"
        )
    return EXIT_OK


def cmd_simulator(args: argparse.Namespace) -> int:
    faults = tuple(f for f in args.faults.split(",") if f) if args.faults else ()
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise SettingsError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    config = SimConfig(
        token=args.token,
        latency_ms=args.latency_ms,
        daily_quota=args.daily_quota,
        max_in_flight=args.max_in_flight,
        supports_all=not args.no_all,
        fault_rate=args.fault_rate,
        faults=faults,
        seed=args.seed,
        campaigns=many_campaigns(args.campaigns) if args.campaigns else DEMO_CAMPAIGNS,
    )
    sim = Simulator(config, host=args.host, port=args.port, verbose=args.log_requests)
    print(f"Wolkvox simulator on {sim.url} (WOLKVOX_BASE_URL={sim.url}); stats at {sim.url}/_sim/stats", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from amd_pipeline.instance import prepare_home
    from amd_pipeline.settings import DefinitionSettings

    DefinitionSettings.from_env()  # a bad zone or start date would stop the code location from loading
    if not Path(args.workspace).exists():
        raise SettingsError(f"--workspace {args.workspace} does not exist; run this in the project folder")
    home = prepare_home(args.home)
    print(f"DAGSTER_HOME={home}", file=sys.stderr)
    # The venv's dagster, even when the venv is not activated.
    beside = Path(sys.executable).parent / "dagster"
    executable = str(beside) if beside.exists() else shutil.which("dagster")
    if executable is None:
        raise SettingsError("the dagster command is not installed in this environment: run `make install`")
    argv = [executable, "dev", "-w", args.workspace, "-p", str(args.port)]
    sys.stdout.flush()
    sys.stderr.flush()
    if not args.demo:
        # Become `dagster dev` (not its parent), so Ctrl-C and kill reach it directly.
        os.execv(executable, argv)
    return _dev_demo(args, home, argv)


def _dev_demo(args: argparse.Namespace, home: Path, argv: list[str]) -> int:
    """`dagster dev` on the built-in simulator: scheduled refreshes every minute, no Wolkvox account."""
    import signal
    import subprocess

    foreign = _foreign_campaigns(args.duckdb, home, {c.campaign_id for c in SimConfig().campaigns})
    if foreign:
        raise SettingsError(
            f"{args.duckdb} or DAGSTER_HOME={home} already holds campaigns that are not the demo's "
            f"({', '.join(foreign[:5])}); pass --duckdb and --home to run the demo elsewhere"
        )
    config = SimConfig(token=secrets.token_urlsafe(24), latency_ms=args.latency_ms, daily_quota=20000, seed=7)
    with Simulator(config) as sim:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("WOLKVOX_SERVER", "AMD_CAMPAIGNS", "AMD_WORKING_DUCKDB_PATH")
        }
        env.update(
            WOLKVOX_BASE_URL=sim.url,
            WOLKVOX_TOKEN=config.token,
            WOLKVOX_DAILY_QUOTA=str(config.daily_quota),
            AMD_REFRESH_CRON=os.environ.get("AMD_REFRESH_CRON", "* * * * *"),
            AMD_DUCKDB_PATH=str(Path(args.duckdb).resolve()),
            DAGSTER_HOME=str(home),
        )
        print(
            f"demo: Wolkvox simulator at {sim.url}; amd_daily_refresh every minute into {args.duckdb}; "
            f"UI on http://localhost:{args.port}; Ctrl-C stops both",
            file=sys.stderr,
            flush=True,
        )
        child = subprocess.Popen(argv, env=env)
        previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl-C (a terminal sends it to dagster dev too) or kill -INT of this process
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
            try:
                return child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show the Python traceback of an error")
    parser = _Parser(prog="amd-pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub_parser.set_defaults(func=func)
        return sub_parser

    demo = command("demo", "backfill a few weeks from the built-in simulator into DuckDB and summarise", cmd_demo)
    demo.add_argument("--days", type=_number(int, 1, 366), default=21)
    demo.add_argument("--latency-ms", type=_number(float, 0), default=5.0)
    demo.add_argument("--fault-rate", type=_number(float, 0, 1), default=0.1, help="share of calls that get a fault")
    demo.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    demo.add_argument("--duckdb", default="data/amd.duckdb", help="database file (default: data/amd.duckdb)")

    sim = command("simulator", "serve the Wolkvox simulator in the foreground", cmd_simulator)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_number(int, 0, 65535), default=8765)
    sim.add_argument("--token", default="demo-token", help="the token it accepts")
    sim.add_argument("--latency-ms", type=_number(float, 0), default=0.0)
    sim.add_argument("--daily-quota", type=_number(int, 0), default=1000)
    sim.add_argument("--max-in-flight", type=_number(int, 1), default=1, help="simultaneous requests before 403 busy")
    sim.add_argument("--fault-rate", type=_number(float, 0, 1), default=0.0)
    sim.add_argument("--faults", default="", help=f"comma list of: {', '.join(FAULTS)}")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--no-all", action="store_true", help="refuse campaign_id=all")
    sim.add_argument(
        "--campaigns",
        type=_number(int, 1),
        help="serve N predictive campaigns (ids 30001...) instead of the demo's four",
    )
    sim.add_argument("--log-requests", action="store_true", help="log every request")

    backfill = command("backfill", "materialise amd_daily for campaigns x days through Dagster", cmd_backfill)
    backfill.add_argument("--start", type=_day, required=True, help="first local day, inclusive")
    backfill.add_argument("--end", type=_day, required=True, help="last local day, inclusive")
    backfill.add_argument("--campaign", action="append", help="campaign id (repeatable); default: all campaigns")
    backfill.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    backfill.add_argument("--quiet", action="store_true", help="no progress output")
    backfill.add_argument("--dry-run", action="store_true", help="print calls, quota share and ETA; launch nothing")
    backfill.add_argument(
        "--force", action="store_true", help="launch even beyond today's quota left, or for a campaign id not found"
    )
    backfill.add_argument(
        "--refetch", action="store_true", help="fetch final windows again too (default: only what is not final)"
    )

    query = command("query", "run read-only SQL on the DuckDB file", cmd_query)
    query.add_argument("sql")
    query.add_argument("--duckdb", help="database file (default: $AMD_DUCKDB_PATH or data/amd.duckdb)")
    output = query.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV on stdout, every row")
    output.add_argument("--json", action="store_true", help="a JSON array of row objects on stdout, every row")
    query.add_argument("--max-rows", type=_number(int, 1), default=200)

    migrate = command(
        "migrate-timezone", "move the DuckDB file's days to another WOLKVOX_TIMEZONE", cmd_migrate_timezone
    )
    migrate.add_argument("--to", required=True, help="the new IANA zone, e.g. America/Lima")
    migrate.add_argument(
        "--duckdb", help="published file (default: $AMD_DUCKDB_PATH or data/amd.duckdb); its working file moves"
    )
    migrate.add_argument("--dry-run", action="store_true", help="say what would be kept and dropped; change nothing")

    report = command("report", "write a self-contained HTML page of charts from the published file", cmd_report)
    report.add_argument("--out", default="amd_report.html", help="the HTML file to write (default: amd_report.html)")
    report.add_argument("--days", type=_number(int, 7, 3660), default=60, help="days shown (default 60)")
    report.add_argument("--duckdb", help="database file (default: $AMD_DUCKDB_PATH or data/amd.duckdb)")
    report.add_argument("--png-dir", help="also write each chart as a PNG file into this folder")

    budget = command("budget", "today's calls per source, the daily budget, and what the schedules cost", cmd_budget)
    budget.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")

    dev = command("dev", "start the Dagster UI and daemon on the project's DAGSTER_HOME", cmd_dev)
    dev.add_argument("--port", type=_number(int, 1, 65535), default=3000)
    dev.add_argument("--workspace", default="workspace.yaml")
    dev.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    dev.add_argument("--demo", action="store_true", help="run on the built-in simulator, refreshing every minute")
    dev.add_argument("--duckdb", default="data/amd.duckdb", help="with --demo: the database file")
    dev.add_argument("--latency-ms", type=_number(float, 0), default=5.0, help="with --demo: simulator latency")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; every error ends as one ``error:`` line and a documented exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is superseded)")
    try:
        args = build_parser().parse_args(argv)
        status = args.func(args)
    except SettingsError as exc:
        status = _fail(EXIT_USAGE, str(exc), verbose)
    except CliExit as exc:
        status = _fail(exc.status, str(exc), verbose)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except Exception as exc:
        from amd_pipeline.messages import explain

        hint = "" if verbose else " (rerun with --verbose for the traceback)"
        status = _fail(EXIT_FAILED, explain(exc) + hint, verbose)
    sys.exit(status)


def _fail(status: int, message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return status
