"""The ``amd-pipeline`` command: argument parsing and printing; the work is in the modules it calls.

demo (demo.py), simulator (simulator.py), backfill (backfill.py), query, report and export (store.py,
report.py, export.py), budget and operations (budget.py, runs.py, orchestration/operations.py),
migrate-timezone (store.py), dev [--demo] (dev.py, demo.py). With several operations
(docs/operating.md, "Several operations"), ``--operation ID`` picks one.
Exit statuses (messages.py): 0 ok, 1 a run or a call failed, 2 bad input (nothing was called or
written), 3 refused by the quota guard, 4 stopped by the daily call budget or quota (the rest is
deferred), 130 interrupted. Errors are one line on stderr; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import os
import shutil
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.messages import EXIT_FAILED, EXIT_OK, CliExit, exit_status
from amd_pipeline.core.settings import DEFAULT_DUCKDB_PATH, published_path
from amd_pipeline.wolkvox.simulator import DEMO_CAMPAIGNS, FAULTS, SimConfig, Simulator, many_campaigns

# Dagster and pandas are imported inside the commands that need them: `amd-pipeline simulator`
# starts in a fraction of a second.


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


def cmd_demo(args: argparse.Namespace) -> int:
    """Backfill a few weeks from the built-in simulator and summarise them; return the exit status."""
    from amd_pipeline.cli.demo import run_demo

    return run_demo(
        days=args.days, latency_ms=args.latency_ms, fault_rate=args.fault_rate, home=args.home, duckdb_path=args.duckdb
    )


def cmd_backfill(args: argparse.Namespace) -> int:
    """Backfill the days and campaigns asked for through Dagster; return the exit status."""
    from amd_pipeline.cli.backfill import run_backfill

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
        operation=args.operation,
    )


def cmd_query(args: argparse.Namespace) -> int:
    """Print what the ``sql`` argument selects from the published file (table, CSV or JSON); return the exit status."""
    import duckdb
    import pandas as pd

    from amd_pipeline.core.settings import DefinitionSettings
    from amd_pipeline.core.store import AmdStore

    path = _published_path(args)
    operation = _file_operation(path, args.operation)
    # "today" in the operation's zone: the one asked for, else the environment's (WOLKVOX_TIMEZONE)
    timezone = (operation and AmdStore(path, operation=operation).stored_timezone()) or (
        DefinitionSettings.from_env().timezone
    )
    try:
        frame = AmdStore(path).query(args.sql, timezone=timezone, operation=operation)
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
    """Write the HTML report (and its PNG charts) from the published file; return the exit status."""
    from amd_pipeline.core.report import write_report
    from amd_pipeline.core.store import AmdStore

    path = _published_path(args)
    operation = _file_operation(path, args.operation)
    images = write_report(
        AmdStore(path),
        Path(args.out),
        days=args.days,
        png_dir=Path(args.png_dir) if args.png_dir else None,
        operation=operation,
    )
    print(f"wrote {args.out}: {len(images)} charts from {path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Export the published tables to files in ``--out`` and print the row counts; return the exit status."""
    from amd_pipeline.core.export import export_published
    from amd_pipeline.core.store import AmdStore

    path = _published_path(args)
    operation = _file_operation(path, args.operation)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SettingsError(f"--out {out} is a file: give a folder (it is created if missing)")
    done = export_published(
        path, out, args.format, connect=lambda: AmdStore(path).connect(read_only=True), operation=operation
    )
    counts = ", ".join(f"{name} {rows}" for name, rows in done.rows.items())
    print(f"wrote {done.files} {args.format} file(s) to {out} in {done.seconds:.2f} s from {path}: {counts} rows")
    return EXIT_OK


def _published_path(args: argparse.Namespace) -> str:
    """The analysts' file a reading command opens: ``--duckdb``, ``AMD_DUCKDB_PATH`` or the default."""
    path = published_path(args.duckdb)
    if not Path(path).exists():
        raise SettingsError(f"{path} does not exist yet; run `amd-pipeline demo` or a backfill first")
    return path


def _file_operation(path: str, operation: str | None) -> str | None:
    """``--operation`` checked against the operations the file holds (None: every operation, side by side)."""
    if operation is None:
        return None
    from amd_pipeline.core.store import AmdStore

    held = AmdStore(path).operations()
    if operation not in held:
        raise SettingsError(f"--operation {operation!r} is not in {path}, which holds {', '.join(held) or 'none'}")
    return operation


def cmd_budget(args: argparse.Namespace) -> int:
    """Today's calls per source against the daily budget, and what the schedules cost per day. No call."""
    import dagster as dg

    from amd_pipeline.orchestration.cadence import Cadence, calls_per_refresh, ticks_per_day
    from amd_pipeline.orchestration.instance import existing_instance
    from amd_pipeline.orchestration.location import build_location
    from amd_pipeline.orchestration.operations import load_operations
    from amd_pipeline.orchestration.schedules import valid_campaigns

    found = load_operations()
    op = found.get(args.operation)
    settings = op.run_settings()
    definition = settings.definition
    top_level = build_location(found).get_repository_def().get_top_level_resources()
    campaigns = list(settings.campaigns)
    with (
        existing_instance(args.home) as instance,
        dg.build_resources({"wolkvox": top_level[op.wolkvox_key]}, instance=instance) as built,
    ):
        wolkvox = built.wolkvox
        ledger = wolkvox.ledger()
        usage, budget, from_answers = ledger.usage(), wolkvox.budget(ledger), ledger.from_answers()
        mode = wolkvox.campaign_all_mode().value
        use_all = mode != "off"
        if not campaigns and instance is not None:
            campaigns = valid_campaigns(instance, op.campaigns_name)[1]
    used = sum(usage.values())
    quota = settings.numbers["WOLKVOX_DAILY_QUOTA"] or budget.daily_quota
    quota_setting, share_setting = (
        ("WOLKVOX_DAILY_QUOTA", "AMD_QUOTA_SHARE") if op.from_environment else ("daily_quota", "quota_share")
    )
    source = quota_setting if settings.numbers["WOLKVOX_DAILY_QUOTA"] else "token_info"
    if not op.from_environment:
        print(f"operation: {op.id} (token from {op.token_env})")
    print(f"day: {ledger.today()} ({definition.timezone}); the count restarts at its midnight")
    if budget.limit is None:
        print(f"budget: unknown (set {quota_setting}, or the next load reads it from token_info)")
    else:
        print(f"budget: {budget.limit} calls = {source} {quota} x {share_setting} {settings.quota_share:g}")
    per_source = ", ".join(f"{name} {count}" for name, count in sorted(usage.items())) or "none"
    left = f"; left: {max(budget.limit - used, 0)}" if budget.limit is not None else ""
    print(f"used today: {used} ({per_source}){left}; counted in {ledger.where}")
    if from_answers:
        print(f"windows served from answers already in hand today: {from_answers} (no call)")
    per_refresh = calls_per_refresh(len(campaigns), use_all)
    cadence = Cadence(per_refresh, ticks_per_day(definition.refresh_cron, definition.timezone), budget.limit)
    restate_runs = ticks_per_day(definition.restate_cron, definition.timezone)
    restate = restate_runs * definition.restate_days * per_refresh
    print(f"campaigns: {len(campaigns)}; campaign_id=all {mode}")
    print(f"refresh ({definition.refresh_cron}): {cadence.describe()}")
    print(
        f"restate ({definition.restate_cron}): {restate_runs} run(s) x {definition.restate_days} day(s) x "
        f"{per_refresh} call(s) = {restate} calls/day"
    )
    return EXIT_OK


def cmd_operations(args: argparse.Namespace) -> int:
    """Print every operation of the code location and today's budget of each token. No call.

    Operations that share a token share one lane and one budget.
    """
    import dagster as dg

    from amd_pipeline.orchestration.instance import existing_instance
    from amd_pipeline.orchestration.location import build_location
    from amd_pipeline.orchestration.operations import load_operations

    found = load_operations()
    top_level = build_location(found).get_repository_def().get_top_level_resources()
    lanes: dict[str, list[str]] = {}
    with existing_instance(args.home) as instance:
        for op in found.operations:
            keys = {"wolkvox": top_level[op.wolkvox_key], "campaign_source": top_level[op.campaign_source_key]}
            with dg.build_resources(keys, instance=instance) as built:
                wolkvox = built.wolkvox
                campaigns = ", ".join(built.campaign_source.configured()) or "discovered"
                try:
                    host = wolkvox.url()
                except SettingsError as exc:
                    host = f"no server ({exc})"
                if not wolkvox.token:
                    budget_text = f"token {op.token_env} NOT SET"
                else:
                    try:
                        ledger = wolkvox.ledger()
                        limit = wolkvox.budget(ledger).limit
                        key = wolkvox.guard().key
                    except SettingsError as exc:
                        budget_text = f"token {op.token_env} set; {exc}"
                    else:
                        lanes.setdefault(key, []).append(op.id)
                        budget_text = (
                            f"token {op.token_env} set; token lane {key[:8]}: {sum(ledger.usage().values())} of "
                            f"{'unknown' if limit is None else limit} calls used today ({ledger.today()})"
                        )
            origin = found.files.get(op.id, "environment variables (WOLKVOX_*, AMD_*)")
            print(f"{op.id}: {host}, {op.timezone}, from {op.start_date}; campaigns: {campaigns}")
            print(f"  defined in {origin}; {budget_text}")
    for ids in lanes.values():
        if len(ids) > 1:
            print(f"{', '.join(ids)} share one token: one lane, one daily budget")
    return EXIT_OK


def cmd_migrate_timezone(args: argparse.Namespace) -> int:
    """Move the working file's days to the ``--to`` zone, dropping days whose windows move, and republish."""
    from amd_pipeline.core.errors import PublishHeldError
    from amd_pipeline.core.messages import explain
    from amd_pipeline.core.schema import AMD_DAILY
    from amd_pipeline.core.settings import (
        DEFAULT_OPERATION,
        PublishSettings,
        check_timezone,
        parquet_dir_for,
        working_path_for,
    )
    from amd_pipeline.core.store import AmdStore

    new = check_timezone(args.to, "--to")
    options = PublishSettings.from_env()
    published = published_path(args.duckdb)
    path = working_path_for(published, None if args.duckdb else os.environ.get("AMD_WORKING_DUCKDB_PATH"))
    if not Path(path).exists():
        raise SettingsError(f"{path} (the working file) does not exist: nothing to migrate")
    operation = _file_operation(path, args.operation) or DEFAULT_OPERATION  # a mistyped id would claim a zone
    done = AmdStore(path, operation=operation).migrate_timezone(AMD_DAILY, new, dry_run=args.dry_run)
    if not args.dry_run:
        try:
            AmdStore(path).publish(
                published,
                storage_version=options.storage_version,
                parquet_dir=parquet_dir_for(published) if options.parquet else None,
            )
        except PublishHeldError as exc:  # the working file is migrated; the analysts' copy follows at the next publish
            print(f"warning: {explain(exc)}", file=sys.stderr)
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
    """Serve the Wolkvox simulator until interrupted; return 0."""
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
    """Run ``dagster dev`` (with the demo's simulator under ``--demo``) and return its exit status."""
    from amd_pipeline.cli.dev import refuse_busy_port, run_dagster_dev
    from amd_pipeline.core.settings import DefinitionSettings
    from amd_pipeline.orchestration.instance import batch_event_writes, prepare_home

    DefinitionSettings.from_env()  # a bad zone or start date would stop the code location from loading
    if not args.demo:  # so would a bad defs.yaml: one line now, not a failed code location in the UI
        from amd_pipeline.orchestration.operations import load_operations

        load_operations()
    if not Path(args.workspace).exists():
        raise SettingsError(f"--workspace {args.workspace} does not exist; run this in the project folder")
    refuse_busy_port(args.port)  # else dagster dev starts its daemon anyway and serves no UI
    home = prepare_home(args.home)
    # Inherited by dagster dev's daemon, webserver and code server, and so by every run worker they start.
    batch_event_writes()
    print(f"DAGSTER_HOME={home}", file=sys.stderr)
    # The venv's dagster (dagster.exe on Windows), even when the venv is not activated.
    executable = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if executable is None:
        raise SettingsError(
            "the dagster command is not installed in this environment: run `make install` (`py tasks.py install`)"
        )
    argv = [executable, "dev", "-w", args.workspace, "-p", str(args.port)]
    sys.stdout.flush()
    sys.stderr.flush()
    if not args.demo:
        # Its parent, not `os.execv` into it: a SIGTERM or SIGHUP to this process then stops the whole tree
        # however it was launched (dev.py), and Windows has no exec that keeps the process.
        return run_dagster_dev(argv, dict(os.environ))
    from amd_pipeline.cli.demo import run_dev_demo

    return run_dev_demo(home=home, argv=argv, duckdb_path=args.duckdb, latency_ms=args.latency_ms, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``amd-pipeline`` argument parser with every subcommand and its options."""
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
    demo.add_argument("--duckdb", default=DEFAULT_DUCKDB_PATH, help=f"database file (default: {DEFAULT_DUCKDB_PATH})")

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
    backfill.add_argument("--operation", help="the operation to load (required when there are several)")

    query = command("query", "run read-only SQL on the DuckDB file", cmd_query)
    query.add_argument("sql")
    query.add_argument("--duckdb", help="database file (default: $AMD_DUCKDB_PATH or data/amd.duckdb)")
    output = query.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV on stdout, every row")
    output.add_argument("--json", action="store_true", help="a JSON array of row objects on stdout, every row")
    query.add_argument("--max-rows", type=_number(int, 1), default=200)
    query.add_argument("--operation", help="only this operation's rows in every table and view (default: all)")

    migrate = command(
        "migrate-timezone", "move the DuckDB file's days to another WOLKVOX_TIMEZONE", cmd_migrate_timezone
    )
    migrate.add_argument("--to", required=True, help="the new IANA zone, e.g. America/Lima")
    migrate.add_argument(
        "--duckdb", help="published file (default: $AMD_DUCKDB_PATH or data/amd.duckdb); its working file moves"
    )
    migrate.add_argument("--dry-run", action="store_true", help="say what would be kept and dropped; change nothing")
    migrate.add_argument("--operation", help="the operation whose days move (default: the default operation)")

    report = command("report", "write a self-contained HTML page of charts from the published file", cmd_report)
    report.add_argument("--out", default="amd_report.html", help="the HTML file to write (default: amd_report.html)")
    report.add_argument("--days", type=_number(int, 7, 3660), default=60, help="days shown (default 60)")
    report.add_argument("--duckdb", help="database file (default: $AMD_DUCKDB_PATH or data/amd.duckdb)")
    report.add_argument("--png-dir", help="also write each chart as a PNG file into this folder")
    report.add_argument("--operation", help="only this operation (default: every operation, side by side)")

    export = command(
        "export", "write amd_daily, the campaigns, the snapshots and the views as Parquet or CSV files", cmd_export
    )
    export.add_argument("--format", choices=("parquet", "csv"), required=True)
    export.add_argument("--out", required=True, help="the folder to write into (created if missing)")
    export.add_argument("--duckdb", help="database file (default: $AMD_DUCKDB_PATH or data/amd.duckdb)")
    export.add_argument("--operation", help="only this operation's rows in every file (default: all)")

    budget = command("budget", "today's calls per source, the daily budget, and what the schedules cost", cmd_budget)
    budget.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    budget.add_argument("--operation", help="the operation (required when there are several)")

    operations = command("operations", "list the operations, and today's budget of each token", cmd_operations)
    operations.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")

    dev = command("dev", "start the Dagster UI and daemon on the project's DAGSTER_HOME", cmd_dev)
    dev.add_argument("--port", type=_number(int, 1, 65535), default=3000)
    dev.add_argument("--workspace", default="workspace.yaml")
    dev.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME or ./.dagster_home)")
    dev.add_argument("--demo", action="store_true", help="run on the built-in simulator, refreshing every minute")
    dev.add_argument("--duckdb", default=DEFAULT_DUCKDB_PATH, help="with --demo: the database file")
    dev.add_argument("--latency-ms", type=_number(float, 0), default=5.0, help="with --demo: simulator latency")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; every error ends as one ``error:`` line and a documented exit status."""
    as_command = argv is None  # the `amd-pipeline` script (or python -m amd_pipeline), not a caller
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    if as_command:
        _print_what_the_console_can_show()
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is superseded)")
    try:
        args = build_parser().parse_args(argv)
        status = args.func(args)
    except (SettingsError, CliExit) as exc:
        status = _fail(exit_status(exc), str(exc), verbose)
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        status = exit_status(exc)
    except Exception as exc:
        from amd_pipeline.core.messages import explain

        hint = "" if verbose else " (rerun with --verbose for the traceback)"
        # 1 for anything a command lets escape, a spent budget or quota too (not exit_status): the backfill's
        # pre-flight turns those into a CliExit with exit_status's status, and a run they stop exits 4 itself.
        status = _fail(EXIT_FAILED, explain(exc) + hint, verbose)
    # Not under a profiler or coverage tracer: they write their results at the normal exit.
    if as_command and threading.active_count() == 1 and sys.getprofile() is None and sys.gettrace() is None:
        _exit_without_teardown(status)
    sys.exit(status)


def _print_what_the_console_can_show() -> None:
    """A character the output's encoding lacks becomes ``?`` instead of an error that loses the output.

    On Windows, output sent to a file or a pipe is encoded in the ANSI code page (cp1252 in Latin America),
    which has no ``→`` or emoji: a campaign name holding one would end ``query`` with UnicodeEncodeError.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # not a text stream we may change
            stream.reconfigure(errors="replace")


def _exit_without_teardown(status: int) -> None:
    """End the process as ``sys.exit`` would, minus Python freeing every loaded module one by one.

    With Dagster, pandas, DuckDB and matplotlib loaded that teardown took 1.7-2.7 s after every
    backfill (docs/performance.md, "Speed"). Nothing is lost by skipping it: the commands close their files and
    DuckDB connections before they return, no other thread is running and no profiler or tracer is
    attached (checked by the caller), and the exit handlers (logging's flush, temporary folders) still run here.
    """
    atexit._run_exitfuncs()  # noqa: SLF001 - the exit handlers still run, only the module teardown is skipped
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away (`| head`), a closed stream
            stream.flush()
    os._exit(status)


def _fail(status: int, message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return status
