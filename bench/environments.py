"""The environment a benchmark gives the `amd-pipeline` processes it starts."""

from __future__ import annotations

import os
from pathlib import Path

from simulators import CAMPAIGNS, TOKEN, SimProcess

# Settings of the machine a benchmark runs on that would change what it measures.
OURS = ("WOLKVOX_", "AMD_", "DAGSTER_")
# A cron that never fires during a measurement: a scheduled call would share the token.
NEVER = "0 0 1 1 *"


def clean_env() -> dict[str, str]:
    """This process's environment without the project's and Dagster's settings: each benchmark sets its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OURS)}


def bench_env(sim: SimProcess, workdir: Path, home: Path, duckdb_path: Path, campaign_all: str) -> dict[str, str]:
    """The CLI's environment for a measured backfill: the simulator, CAMPAIGNS, no scheduled calls."""
    env = clean_env()
    env.update(
        WOLKVOX_BASE_URL=sim.url,
        WOLKVOX_TOKEN=TOKEN,
        AMD_CAMPAIGNS=",".join(CAMPAIGNS),
        AMD_DUCKDB_PATH=str(duckdb_path),
        AMD_START_DATE="2024-01-01",
        AMD_LOCK_DIR=str(workdir / "locks"),
        DAGSTER_HOME=str(home),
        WOLKVOX_CAMPAIGN_ALL=campaign_all,
        # No scheduled refresh or restatement during a measurement (they would share the token).
        AMD_REFRESH_CRON=NEVER,
        AMD_RESTATE_CRON=NEVER,
    )
    return env
