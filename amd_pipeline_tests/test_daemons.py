"""What `dagster dev`'s daemon does with the sensor, a UI backfill and the refresh schedule, in-process and
without waiting for the clock, as Dagster tests its own daemons.

The daemon's own iterations run here: ``execute_sensor_iteration`` (the sensor's tick and the campaign
partitions it adds), the GraphQL mutation the UI sends for a backfill (``launchPartitionBackfill``) and
``execute_backfill_iteration`` (how Dagster splits it into runs), ``launch_scheduled_runs`` under
``freeze_time`` (which ticks fall due). The runs they submit execute in this process
(``SyncInMemoryRunLauncher``) on an instance made from the shipped ``dagster.yaml``. Everything is
compared with the simulator's truth and its own count of calls. ``freeze_time`` moves Dagster's clock
only; the simulator and the pipeline keep real time, so the frozen times are recent past instants.

The one real `dagster dev` (a webserver, a daemon, code servers, Ctrl-C) is test_dev.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml

# Dagster's test harness for its daemons (private names, as in dagster's own daemon tests).
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._scheduler.scheduler import launch_scheduled_runs
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from amd_pipeline.orchestration.instance import shipped_instance_yaml
from amd_pipeline.orchestration.partitions import CAMPAIGN_DIMENSION
from amd_pipeline.wolkvox.simulator import DEMO_CAMPAIGNS, SimCampaign
from amd_pipeline_tests import forkserver

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BOGOTA = ZoneInfo("America/Bogota")
DISCOVERED = ["20717", "20718", "20731"]  # the simulator's predictive campaigns (20744 is a preview one)
# The runs the daemons submit start at once, in this process: no queue, no run worker.
IN_PROCESS_RUNS = {
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
    "run_launcher": {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    },
}


class Daemon:
    """The daemon's iterations against one instance and the code location, loaded in this process."""

    def __init__(self, instance: dg.DagsterInstance, context):
        self.instance, self.context = instance, context
        self.logger = logging.getLogger("amd_pipeline_tests.daemon")

    def sensors(self, at: dt.datetime | None = None) -> None:
        with freeze_time(at) if at else contextlib.nullcontext():
            list(execute_sensor_iteration(self.context, self.logger, None, None))

    def schedules(self, at: dt.datetime) -> None:
        with freeze_time(at):
            list(launch_scheduled_runs(self.context, self.logger, at, {}))

    def launch_backfill(self, partitions: list[str]) -> str:
        """What the UI sends when a person selects ``partitions`` of amd_daily and launches a backfill."""
        result = execute_dagster_graphql(
            self.context.create_request_context(),
            LAUNCH_PARTITION_BACKFILL_MUTATION,
            {"backfillParams": {"partitionNames": partitions, "assetSelection": [{"path": ["amd_daily"]}]}},
        )
        assert result.errors is None, result.errors
        launched = result.data["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        return launched["backfillId"]

    def run_backfill(self, backfill_id: str, iterations: int = 10) -> PartitionBackfill:
        """Backfill iterations until the backfill is no longer requested (each submits and runs what is due)."""
        for _ in range(iterations):
            list(execute_backfill_iteration(self.context, self.logger))
            backfill = self.instance.get_backfill(backfill_id)
            if backfill.status != BulkActionStatus.REQUESTED:
                return backfill
        raise AssertionError(f"backfill {backfill_id} still {backfill.status} after {iterations} iterations")


@pytest.fixture
def daemon(pipeline_env, monkeypatch, tmp_path):
    """The daemon on an instance made from the shipped dagster.yaml, runs executed in this process.

    No AMD_CAMPAIGNS: the sensor discovers the campaigns from the simulator, as in the quick start."""
    monkeypatch.setenv("AMD_START_DATE", "2026-01-01")
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(shipped_instance_yaml())
    del config["run_queue"]  # the queued coordinator's setting: that coordinator is replaced here
    (home / "dagster.yaml").write_text(yaml.safe_dump({**config, **IN_PROCESS_RUNS}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="amd_pipeline.definitions", working_directory=str(ROOT)),
        location_name="amd_pipeline",
    )
    try:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as context:
            yield Daemon(instance, context)
    finally:
        instance.dispose()


def calls_by_run(store) -> dict[str, list[dt.date]]:
    """Each run's campaign_6 calls, as the days they asked for."""
    rows = store.query("SELECT run_id, date_ini FROM api_requests WHERE api = 'campaign_6' ORDER BY date_ini")
    found: dict[str, list[dt.date]] = {}
    for r in rows.itertuples():
        found.setdefault(r.run_id, []).append(dt.datetime.strptime(r.date_ini[:8], "%Y%m%d").date())
    return found


def test_the_sensor_adds_the_campaigns_it_discovers_and_later_a_new_one(daemon, sim):
    daemon.sensors()
    assert daemon.instance.get_dynamic_partitions(CAMPAIGN_DIMENSION) == DISCOVERED
    assert sim.stats()["calls"]["information:campaigns"] == 1
    # The operation starts a new automatic campaign; the sensor's next tick (an hour on) adds it, and only it.
    sim.state.config = dataclasses.replace(
        sim.state.config, campaigns=(*DEMO_CAMPAIGNS, SimCampaign("20790", "Retención"))
    )
    daemon.sensors(at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1, minutes=1))
    assert daemon.instance.get_dynamic_partitions(CAMPAIGN_DIMENSION) == [*DISCOVERED, "20790"]
    assert sim.stats()["calls"]["information:campaigns"] == 2


def test_a_ui_backfill_runs_per_campaign_and_the_later_runs_take_the_first_runs_answers(daemon, sim, pipeline_env):
    daemon.sensors()
    days = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(4)]
    backfill = daemon.run_backfill(daemon.launch_backfill([f"{c}|{d}" for c in DISCOVERED for d in days]))
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    runs = daemon.instance.get_runs()
    # Dagster splits 3 campaigns x 4 days by the dimension with fewer keys: one run per campaign.
    assert sorted(r.tags["dagster/asset_partition_range_start"] for r in runs) == [f"{c}|{days[0]}" for c in DISCOVERED]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # The first run asks campaign_id=all once a day; the other two take those answers (same backfill).
    calls = sim.stats()["calls"]
    assert calls.get("campaign_6:all") == 4 and "campaign_6:one" not in calls, calls
    ui = pipeline_env.query("SELECT campaign, count(*) AS n FROM api_requests WHERE source = 'ui' GROUP BY ALL")
    assert dict(zip(ui.campaign, ui.n, strict=True)) == {"all": 4}
    rows = pipeline_env.query("SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL")
    assert len(rows) == 12
    assert all(r.total_amd == sim.day_total(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    # The budget says so too, as the person reading `amd-pipeline budget` sees it.
    budget = forkserver.run(["budget"], env=dict(os.environ), cwd=pipeline_env.path.parent)
    assert budget.returncode == 0, budget.stderr
    assert "windows served from answers already in hand today: 8 (no call)" in budget.stdout, budget.stdout


def recent_ticks(minutes: int = 5) -> list[dt.datetime]:
    """Three instants ``minutes`` apart in the recent past, on one local day in Bogota."""
    last = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ticks = [last - dt.timedelta(minutes=minutes * k) for k in (2, 1, 0)]
    if ticks[0].astimezone(BOGOTA).date() != ticks[-1].astimezone(BOGOTA).date():  # just after midnight
        ticks = [t - dt.timedelta(hours=1) for t in ticks]
    return ticks


def test_the_refresh_reads_yesterday_on_its_first_tick_of_the_day_then_only_today(daemon, sim, pipeline_env):
    daemon.sensors()
    first, second, third = recent_ticks()
    daemon.schedules(first)  # the schedule's first sight: no tick has fallen due since
    assert daemon.instance.get_runs() == []
    daemon.schedules(second)
    daemon.schedules(third)
    refreshes = daemon.instance.get_runs()[::-1]  # oldest first
    assert [(r.tags["amd_pipeline/source"], r.status) for r in refreshes] == [
        ("refresh", dg.DagsterRunStatus.SUCCESS)
    ] * 2
    today = second.astimezone(BOGOTA).date()  # the ticks' day
    calls = calls_by_run(pipeline_env)
    # One campaign_id=all call per day for the three campaigns: the first refresh of the day also
    # closes yesterday; the next one writes only today.
    assert calls[refreshes[0].run_id] == [today - dt.timedelta(days=1), today]
    assert calls[refreshes[1].run_id] == [today]
    assert sim.stats()["calls"]["campaign_6:all"] == 3
    rows = pipeline_env.query("SELECT campaign_id, local_date, total_amd, is_final FROM amd_daily ORDER BY ALL")
    assert sorted({(r.campaign_id, r.local_date.date()) for r in rows.itertuples()}) == [
        (c, d) for c in DISCOVERED for d in (today - dt.timedelta(days=1), today)
    ]
    # A day is final once it has ended on the real clock (the ticks' day too, just after midnight); until
    # then partial. This simulator counts a day's detections in advance: a partial day equals its truth.
    ended = dt.datetime.now(BOGOTA).date()
    assert rows.is_final.tolist() == [d < ended for d in rows.local_date.dt.date]
    assert all(r.total_amd == sim.day_total(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
