"""The built-in demo: a backfill from the simulator (`amd-pipeline demo`) and `dagster dev` beside it (`dev --demo`).

Both run on the project's instance and DuckDB file, with a throwaway token, and never call a real host;
both refuse a file or instance that already holds campaigns that are not the simulator's.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from amd_pipeline.cli.backfill import run_backfill
from amd_pipeline.core.errors import SettingsError
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator


def _summary(duckdb_path: str, start: dt.date, end: dt.date):
    from amd_pipeline.core.store import AmdStore

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


def _refuse_foreign(duckdb_path: str, home: Path) -> None:
    """Raise :class:`SettingsError` (exit 2) when the DuckDB files or the instance hold non-simulator campaigns.

    The files are the published and the working one; the demo never mixes its rows with an operation's.
    """
    import dagster as dg

    from amd_pipeline.core.settings import working_path_for
    from amd_pipeline.core.store import AmdStore
    from amd_pipeline.orchestration.partitions import CAMPAIGN_DIMENSION

    found: set[str] = set()
    for path in (duckdb_path, working_path_for(duckdb_path)):
        if not Path(path).exists():
            continue
        tables = AmdStore(path).query("SELECT table_name FROM information_schema.tables")
        if "amd_daily" in set(tables.table_name):
            found |= set(AmdStore(path).query("SELECT DISTINCT campaign_id FROM amd_daily").campaign_id)
    if (home / "dagster.yaml").exists():
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for partitions in (CAMPAIGN_DIMENSION, *(f"{op_id}__{CAMPAIGN_DIMENSION}" for op_id, _ in DEMO_OPERATIONS)):
                found |= set(instance.get_dynamic_partitions(partitions))
    foreign = sorted(found - {c.campaign_id for c in SimConfig().campaigns})
    if foreign:
        raise SettingsError(
            f"{duckdb_path} or DAGSTER_HOME={home} already holds campaigns that are not the demo's "
            f"({', '.join(foreign[:5])}); the demo will not mix its data with yours: pass --duckdb and --home "
            "to run it elsewhere"
        )


def run_demo(*, days: int, latency_ms: float, fault_rate: float, home: str | None, duckdb_path: str) -> int:
    """Backfill the last ``days`` days from the simulator with faults on, summarise, compare with its truth."""
    from amd_pipeline.core.settings import DefinitionSettings
    from amd_pipeline.orchestration.instance import prepare_home

    settings = DefinitionSettings.from_env()
    home = prepare_home(home)
    _refuse_foreign(duckdb_path, home)
    today = dt.datetime.now(ZoneInfo(settings.timezone)).date()
    end = today - dt.timedelta(days=1)
    start = max(end - dt.timedelta(days=days - 1), settings.start_date)
    config = SimConfig(
        token=secrets.token_urlsafe(24),
        latency_ms=latency_ms,
        fault_rate=fault_rate,
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
        # The demo is the single operation these variables describe, whatever operation folders exist.
        no_folders = home / "demo_no_operations"
        no_folders.mkdir(exist_ok=True)
        os.environ["AMD_OPERATIONS_DIR"] = str(no_folders)
        print(
            f"demo: Wolkvox simulator at {sim.url} ({latency_ms:g} ms per answer, faults on {fault_rate:.0%} of calls)"
        )
        code = run_backfill(start, end, home=str(home))
        stats = sim.stats()
    if code:
        return code
    from amd_pipeline.core.store import AmdStore
    from amd_pipeline.wolkvox.simulator import truth_for_day

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


# `dev --demo`'s two operations: two simulated servers in two zones, with the same campaign ids.
DEMO_OPERATIONS = (("demo_bog", "America/Bogota"), ("demo_mex", "America/Mexico_City"))


def demo_operation_yaml(op_id: str, timezone: str, base_url: str, refresh_cron: str, daily_quota: int) -> str:
    """A ``defs.yaml`` as `dg scaffold defs amd_pipeline.WolkvoxOperation` writes it, for a simulated server."""
    import yaml

    attributes = {
        "id": op_id,
        "base_url": base_url,
        "token_env": f"WOLKVOX_TOKEN_{op_id.upper()}",
        "timezone": timezone,
        "daily_quota": daily_quota,
        "refresh_cron": refresh_cron,
    }
    return yaml.safe_dump({"type": "amd_pipeline.WolkvoxOperation", "attributes": attributes}, sort_keys=False)


def run_dev_demo(*, home: Path, argv: list[str], duckdb_path: str, latency_ms: float, port: int) -> int:
    """Run `dagster dev` on two simulated operations (Bogota and Mexico City, the same campaign ids).

    Refreshes are scheduled every minute and no Wolkvox account is needed; the operations' folders are written
    under DAGSTER_HOME.
    """
    import contextlib

    from amd_pipeline.cli.dev import run_dagster_dev

    _refuse_foreign(duckdb_path, home)
    folder = home / "demo_operations"
    refresh_cron = os.environ.get("AMD_REFRESH_CRON", "* * * * *")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WOLKVOX_SERVER", "AMD_CAMPAIGNS", "AMD_WORKING_DUCKDB_PATH", "WOLKVOX_BASE_URL")
    }
    with contextlib.ExitStack() as stack:
        urls = []
        for op_id, timezone in DEMO_OPERATIONS:
            config = SimConfig(
                token=secrets.token_urlsafe(24),
                latency_ms=latency_ms,
                daily_quota=20000,
                seed=7,
                up_to_now=True,
                timezone=timezone,
                operation=op_id,
            )
            sim = stack.enter_context(Simulator(config))
            (folder / op_id).mkdir(parents=True, exist_ok=True)
            (folder / op_id / "defs.yaml").write_text(
                demo_operation_yaml(op_id, timezone, sim.url, refresh_cron, config.daily_quota), encoding="utf-8"
            )
            env[f"WOLKVOX_TOKEN_{op_id.upper()}"] = config.token
            urls.append(f"{op_id} ({timezone}) at {sim.url}")
        env.update(
            AMD_OPERATIONS_DIR=str(folder),
            AMD_DUCKDB_PATH=str(Path(duckdb_path).resolve()),
            DAGSTER_HOME=str(home),
        )
        # AMD_REFRESH_CRON (a benchmark turns the refresh off with it) is what the defs.yaml files say.
        every = "every minute" if refresh_cron == "* * * * *" else f"at '{refresh_cron}'"
        print(
            f"demo: two Wolkvox simulators, {'; '.join(urls)} (operations in {folder}); refresh {every} "
            f"into {duckdb_path}; UI on http://localhost:{port}; Ctrl-C (or SIGTERM) stops it all",
            file=sys.stderr,
            flush=True,
        )
        return run_dagster_dev(argv, env)
