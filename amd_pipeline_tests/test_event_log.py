"""Batched event writes (DAGSTER_EVENT_BATCH_SIZE) leave the UI's view of amd_daily as it was.

On both instance profiles: the shipped SQLite one (amd_pipeline/orchestration/event_log.py writes a batch in one
transaction per file) and PostgreSQL (dagster_postgres inserts a batch of materialisations in one
statement). The same loads run on two instances, one writing events one at a time and one in
batches, and what the UI reads is compared: each partition's status in the matrix, each
partition's own metadata (its latest materialisation), the asset's latest materialisation and the
checks' latest results.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.settings import PARTITION_EVENTS, DefinitionSettings
from amd_pipeline.orchestration import assets, partition_events
from amd_pipeline.orchestration.build import AMD_DAILY_JOB
from amd_pipeline.orchestration.dagster_private import BatchedSqliteEventLogStorage
from amd_pipeline.orchestration.event_log import AmdSqliteInstance
from amd_pipeline.orchestration.instance import EVENT_BATCH_SIZE, prepare_home, shipped_instance_yaml
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline.orchestration.partitions import day_key
from amd_pipeline.orchestration.tags import MISSING_ONLY_TAG
from amd_pipeline.wolkvox.client import WolkvoxClient
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.conftest import CAMPAIGNS, CONTENTION, PRODUCTION_PROFILE

AMD_DAILY = dg.AssetKey("amd_daily")
DAY0 = dt.date(2026, 11, 1)
DAYS = [DAY0 + dt.timedelta(days=i) for i in range(6)]  # loads cover the first 5; the 6th stays missing
# A partition's fetched_at says when it was fetched: it differs between two loads and is compared apart.
WHEN = "fetched_at"


def load(
    instance: dg.DagsterInstance, first: dt.date, last: dt.date, tags: dict | None = None
) -> dg.ExecuteInProcessResult:
    job = build_definitions(DefinitionSettings()).resolve_job_def(AMD_DAILY_JOB)
    tags = {
        "dagster/asset_partition_range_start": str(day_key(CAMPAIGNS[0], first)),
        "dagster/asset_partition_range_end": str(day_key(CAMPAIGNS[-1], last)),
        **(tags or {}),
    }
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def loads(instance: dg.DagsterInstance, monkeypatch, tags: dict | None = None) -> list[bool]:
    """Days 1-3 load; days 4-5 fail before calling (no token): materialized, failed and missing partitions."""
    done = [load(instance, DAYS[0], DAYS[2], tags).success]
    with monkeypatch.context() as m:
        m.delenv("WOLKVOX_TOKEN")
        done.append(load(instance, DAYS[3], DAYS[4], tags).success)
    done.append(load(instance, DAYS[1], DAYS[1], tags).success)  # a partition loaded twice: the latest one counts
    return done


def ui_view(instance: dg.DagsterInstance) -> dict:
    """What the UI shows for amd_daily: statuses, each partition's latest materialisation, the checks."""
    asset = build_definitions(DefinitionSettings()).get_assets_def(AMD_DAILY)
    keys = [day_key(c, d) for c in CAMPAIGNS for d in DAYS]
    statuses = instance.get_status_by_partition(AMD_DAILY, [str(k) for k in keys], asset.partitions_def)
    own = {}
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=AMD_DAILY, asset_partitions=[str(key)]), limit=1
        ).records
        if records:
            own[str(key)] = _metadata(records[0].asset_materialization)
    latest = instance.get_latest_materialization_event(AMD_DAILY).asset_materialization
    checks = {}
    for name in ("amd_daily_totals_non_negative", "amd_daily_one_row_per_key", "amd_daily_complete"):
        [record] = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(AMD_DAILY, name), limit=1
        )
        checks[name] = (record.status.value, record.event.dagster_event.event_specific_data.passed)
    return {
        "status": {k: (s.value if s else "MISSING") for k, s in statuses.items()},
        "counts": dict(Counter(s.value if s else "MISSING" for s in statuses.values())),
        "partition_metadata": own,
        "latest": (latest.partition, _metadata(latest)),
        "checks": checks,
    }


def _metadata(materialization: dg.AssetMaterialization) -> dict:
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def differences(one: dict, other: dict) -> list[str]:
    """Where two views differ; ``fetched_at`` must be there in both (its value is the load's time)."""
    found = [
        f"{part}: {one[part]} != {other[part]}" for part in ("status", "counts", "checks") if one[part] != other[part]
    ]

    def timeless(metadata: dict) -> dict:
        return {k: ("present" if k == WHEN else v) for k, v in metadata.items()}

    for view in (one, other):
        found += [f"{k} has no {WHEN}" for k, m in view["partition_metadata"].items() if WHEN not in m]
    if {k: timeless(m) for k, m in one["partition_metadata"].items()} != {
        k: timeless(m) for k, m in other["partition_metadata"].items()
    }:
        found.append(f"partition metadata: {one['partition_metadata']} != {other['partition_metadata']}")
    if (one["latest"][0], timeless(one["latest"][1])) != (other["latest"][0], timeless(other["latest"][1])):
        found.append(f"latest materialisation: {one['latest']} != {other['latest']}")
    return found


class BatchSpy:
    """Counts the events the instance's event log received through ``store_event_batch``."""

    def __init__(self, monkeypatch, storage_class: type, alter=None):
        self.events = 0
        original = storage_class.store_event_batch

        def store_event_batch(storage, events):
            self.events += len(events)
            original(storage, [alter(e) for e in events] if alter else events)

        monkeypatch.setattr(storage_class, "store_event_batch", store_event_batch)


def without_metadata(event: dg.EventLogEntry) -> dg.EventLogEntry:
    """The control's broken batch path: a materialisation stored without its metadata."""
    dagster_event = event.dagster_event
    if dagster_event is None or not dagster_event.is_step_materialization:
        return event
    data = dagster_event.event_specific_data
    emptied = data._replace(materialization=data.materialization.with_metadata({}))
    return event._replace(dagster_event=dagster_event._replace(event_specific_data=emptied))


def sqlite_instance(tmp_path: Path, name: str) -> dg.DagsterInstance:
    home = prepare_home(tmp_path / name)  # the shipped dagster.yaml
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("campaign", CAMPAIGNS)
    return instance


def postgres_instance(postgres, tmp_path: Path, name: str, monkeypatch) -> dg.DagsterInstance:
    home = tmp_path / name
    home.mkdir()
    shutil.copy(PRODUCTION_PROFILE, home / "dagster.yaml")
    # Each instance resolves DAGSTER_PG_URL when it is made: one database each.
    monkeypatch.setenv("DAGSTER_PG_URL", postgres.create_database())
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("campaign", CAMPAIGNS)
    return instance


PROFILES = [
    pytest.param("sqlite", marks=pytest.mark.slow),
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow]),
]


@pytest.fixture
def make_instance(request, tmp_path, monkeypatch):
    """``make(name)``: a new instance of the test's profile; also returns its event log class."""
    made = []

    def make(name: str):
        if request.param == "sqlite":
            instance, storage_class = sqlite_instance(tmp_path, name), BatchedSqliteEventLogStorage
        else:
            from dagster_postgres import PostgresEventLogStorage

            postgres = request.getfixturevalue("postgres")
            instance, storage_class = postgres_instance(postgres, tmp_path, name, monkeypatch), PostgresEventLogStorage
        assert type(instance.event_log_storage) is storage_class
        made.append(instance)
        return instance, storage_class

    yield make
    for instance in made:
        instance.dispose()


def one_then_batched(make_instance, monkeypatch, alter=None) -> tuple[dict, dict, int]:
    """The same loads on an instance writing events one at a time and on one writing them in batches."""
    monkeypatch.delenv(EVENT_BATCH_SIZE, raising=False)
    plain, storage_class = make_instance("one_at_a_time")
    spy = BatchSpy(monkeypatch, storage_class, alter)
    assert loads(plain, monkeypatch) == [True, False, True]
    assert spy.events == 0  # Dagster's default: no batch
    monkeypatch.setenv(EVENT_BATCH_SIZE, "1000")
    batched, _ = make_instance("batched")
    assert loads(batched, monkeypatch) == [True, False, True]
    return ui_view(plain), ui_view(batched), spy.events


@pytest.mark.parametrize("make_instance", PROFILES, indirect=True)
def test_the_ui_reads_the_same_with_and_without_batched_event_writes(env, make_instance, monkeypatch):
    plain, batched, batched_events = one_then_batched(make_instance, monkeypatch)
    # The batch path was taken: at least the 9 + 3 partitions' materialisations of the successful loads.
    assert batched_events >= 12
    assert plain["counts"] == {"MATERIALIZED": 9, "FAILED": 6, "MISSING": 3}
    assert set(plain["partition_metadata"]) == {str(day_key(c, d)) for c in CAMPAIGNS for d in DAYS[:3]}
    assert differences(plain, batched) == []


@pytest.mark.parametrize("make_instance", PROFILES, indirect=True)
def test_the_comparison_sees_a_batch_path_that_drops_metadata(env, make_instance, monkeypatch):
    # Control: a store_event_batch that stores each materialisation without its metadata must be seen.
    plain, batched, batched_events = one_then_batched(make_instance, monkeypatch, alter=without_metadata)
    assert batched_events >= 12
    found = differences(plain, batched)
    assert any("has no fetched_at" in f for f in found), found


# --- A CLI run's events logged during the load (partition_events.py) against Dagster's own path --------


def after_then_during(make_instance, monkeypatch) -> tuple[dict, dict]:
    """The same loads (batched event writes, as the CLI runs them) with Dagster logging the partitions'
    events after the step, and with the step logging them during the load (the CLI's tag)."""
    monkeypatch.setenv(EVENT_BATCH_SIZE, "1000")
    after, _ = make_instance("after_the_step")
    assert loads(after, monkeypatch) == [True, False, True]
    during, _ = make_instance("during_the_load")
    assert partition_events.run_tags() == {"dagster/defer_asset_events": "true"}
    assert loads(during, monkeypatch, partition_events.run_tags()) == [True, False, True]
    return ui_view(after), ui_view(during)


@pytest.mark.parametrize("make_instance", PROFILES, indirect=True)
def test_the_ui_reads_the_same_when_the_step_logs_its_partitions_during_the_load(env, make_instance, monkeypatch):
    after, during = after_then_during(make_instance, monkeypatch)
    assert after["counts"] == {"MATERIALIZED": 9, "FAILED": 6, "MISSING": 3}
    # The asset's latest materialisation is one of the last run's partitions, with that partition's own
    # metadata; which one is not the same: Dagster logs a range in the order of a set of keys.
    last_run = {str(day_key(c, DAYS[1])) for c in CAMPAIGNS}
    for view in (after, during):
        partition, metadata = view["latest"]
        assert partition in last_run and metadata == view["partition_metadata"][partition]
        view["latest"] = ("compared above", {})
    assert differences(after, during) == []


def test_the_comparison_sees_a_step_that_leaves_out_the_planned_events(env, make_instance_sqlite, monkeypatch):
    # Control: without the planned events the failed run's partitions read as missing, not failed.
    monkeypatch.setattr(partition_events.PartitionEvents, "log_planned", lambda self: None)
    after, during = after_then_during(make_instance_sqlite, monkeypatch)
    assert during["counts"] == {"MATERIALIZED": 9, "MISSING": 9}
    assert any(f.startswith("status") for f in differences(after, during))


def progress_stalls(count, goal: int, quiet: float = 2.0, limit: float = 60.0) -> bool:
    """Wait until ``count()`` reaches ``goal`` (False) or stops moving for ``quiet`` seconds short of it (True).

    No figure is asserted: a healthy path gets there however slow the machine is; a blocked one stalls.
    """
    last, moved, deadline = count(), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        now = count()
        if now >= goal:
            return False
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > quiet:
            return True
        time.sleep(0.02)
    raise AssertionError(f"neither {goal} nor a stall after {limit} s: {count()}")


@pytest.mark.parametrize("during", [True, False], ids=["during_the_load", "control_after_the_step"])
def test_a_batchs_partitions_are_logged_while_the_next_calls_are_made(env, sim, instance, monkeypatch, during):
    # 3 campaigns x 3 days, one call per window, batches of 3 windows. Before the last call goes out,
    # the first batches' partitions are in the event log, logged by their own thread while the calls
    # went on. Dagster's own path logs all 9 after the step's compute, after the last call: the last
    # call, held until materialisations show up, sees none.
    monkeypatch.setenv("AMD_BATCH_SIZE", "3")
    monkeypatch.setenv(EVENT_BATCH_SIZE, "1000")
    seen = []
    call = WolkvoxClient.amd_accumulated

    def last_call_waits_for_events(client, campaign, window):
        if client.stats.calls == 8:  # the 9th and last call
            logged = lambda: len(instance.fetch_materializations(AMD_DAILY, limit=100).records)  # noqa: E731
            progress_stalls(logged, 3)
            seen.append(logged())
        return call(client, campaign, window)

    monkeypatch.setattr(WolkvoxClient, "amd_accumulated", last_call_waits_for_events)
    result = load(instance, DAYS[0], DAYS[2], partition_events.run_tags() if during else None)
    assert result.success
    assert sim.stats()["requests"] == 9
    assert seen[0] >= 3 if during else seen == [0], seen
    records = instance.fetch_materializations(AMD_DAILY, limit=100).records
    assert len(records) == 9 and len({r.partition_key for r in records}) == 9  # each once, not twice
    # Every batch's events carry the tags Dagster's one call gives all of them: the same data version,
    # computed (not "provided by the user", as a second call would find it cached), the same tag names.
    tags = [r.asset_materialization.tags for r in records]
    assert len({frozenset(t) - {"dagster/partition/campaign", "dagster/partition/day"} for t in tags}) == 1, tags
    assert len({t["dagster/data_version"] for t in tags}) == 1
    assert not any("dagster/data_version_is_user_provided" in t for t in tags), tags


@pytest.mark.parametrize("own_thread", [True, False], ids=["own_thread", "control_on_the_load_thread"])
def test_slow_event_writes_do_not_hold_up_the_calls(env, sim, instance, monkeypatch, own_thread):
    # Logging the first batch's events is made to take as long as the calls: it returns only once every
    # call is answered, or once the calls have stopped coming. On a thread of its own the calls go on
    # to the end meanwhile; on the load's thread the fetcher, at most 2 answers ahead, stops and waits.
    monkeypatch.setenv("AMD_BATCH_SIZE", "3")
    monkeypatch.setenv(EVENT_BATCH_SIZE, "1000")
    log, stalled = partition_events.PartitionEvents.log, []

    def slow_log(self, by_partition):
        log(self, by_partition)
        if not stalled:
            stalled.append(progress_stalls(lambda: sim.stats()["requests"], 9))

    monkeypatch.setattr(partition_events.PartitionEvents, "log", slow_log)
    if not own_thread:
        monkeypatch.setattr(partition_events.PartitionEvents, "log_soon", slow_log)
    result = load(instance, DAYS[0], DAYS[2], partition_events.run_tags())
    assert result.success
    assert sim.stats()["requests"] == 9
    assert stalled == [not own_thread]  # own thread: all 9 calls made while the first batch was logged
    assert len(instance.fetch_materializations(AMD_DAILY, limit=100).records) == 9


@pytest.mark.parametrize("retry", [True, False], ids=["retried", "control_not_retried"])
def test_a_batch_the_events_thread_fails_to_log_is_logged_once_more_by_the_step(env, instance, monkeypatch, retry):
    # The first batch's events fail in the logging thread (a storage error, say): the step logs them once
    # more after the load, so every written partition still has exactly one materialisation.
    monkeypatch.setenv("AMD_BATCH_SIZE", "3")
    monkeypatch.setenv(EVENT_BATCH_SIZE, "1000")
    log, failed = partition_events.PartitionEvents.log, []

    def failing_once(self, by_partition):
        if threading.current_thread().name == "amd-partition-events" and not failed:
            failed.append(len(by_partition))
            raise OSError("event storage unavailable")
        log(self, by_partition)

    monkeypatch.setattr(partition_events.PartitionEvents, "log", failing_once)
    if not retry:
        monkeypatch.setattr(assets, "settle", lambda context, events: events and events.finish())
    result = load(instance, DAYS[0], DAYS[2], partition_events.run_tags())
    assert failed == [3]
    assert result.success is retry
    records = instance.fetch_materializations(AMD_DAILY, limit=100).records
    assert sorted(Counter(r.partition_key for r in records).values()) == ([1] * 9 if retry else [])


def test_amd_partition_events_after_leaves_the_events_to_dagster_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(PARTITION_EVENTS, "after")
    assert partition_events.run_tags() == {}
    monkeypatch.setenv(PARTITION_EVENTS, " During ")
    assert partition_events.run_tags() == {"dagster/defer_asset_events": "true"}
    monkeypatch.setenv(PARTITION_EVENTS, "later")
    with pytest.raises(SettingsError, match="AMD_PARTITION_EVENTS='later' is not during or after"):
        partition_events.run_tags()


def test_partitions_skipped_as_final_get_their_event_as_on_dagsters_path(env, tmp_path, monkeypatch):
    # A range whose first days are already final (skipped, not fetched): Dagster's path records every
    # partition of the range; so does the step logging during the load (log_rest).
    monkeypatch.setenv(EVENT_BATCH_SIZE, "1000")
    counts = {}
    for name, tags in (("after", {}), ("during", partition_events.run_tags())):
        made = sqlite_instance(tmp_path, name)
        try:
            assert load(made, DAYS[0], DAYS[1], tags).success
            assert load(made, DAYS[0], DAYS[2], {MISSING_ONLY_TAG: "true", **tags}).success
            records = made.fetch_materializations(AMD_DAILY, limit=1000).records
            counts[name] = Counter(r.partition_key for r in records)
        finally:
            made.dispose()
    assert counts["after"] == counts["during"]
    assert sorted(set(counts["during"].values())) == [1, 2]  # days 1-2 twice, day 3 once


@pytest.fixture
def make_instance_sqlite(tmp_path):
    made = []

    def make(name: str):
        made.append(sqlite_instance(tmp_path, name))
        return made[-1], BatchedSqliteEventLogStorage

    yield make
    for instance in made:
        instance.dispose()


@pytest.fixture
def env(pipeline_env, monkeypatch):
    monkeypatch.setenv("WOLKVOX_CAMPAIGN_ALL", "off")
    return pipeline_env


# --- The SQLite event log against the one-event-at-a-time path it replaces -------------------------------


# Columns SQLite fills with the wall clock when a row is made (when the file was created, say), not
# from the event: they differ between any two stores.
WALL_CLOCK_COLUMNS = {"create_timestamp", "migration_completed"}


def table_rows(folder: Path) -> dict[str, list[tuple]]:
    """Every row of every table of every SQLite file in ``folder`` (file/table -> rows, sorted)."""
    found = {}
    for path in sorted(folder.glob("*.db")):
        with sqlite3.connect(path) as conn:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for name in names:
                cursor = conn.execute(f'SELECT * FROM "{name}"')
                columns = [c[0] for c in cursor.description]
                rows = [
                    tuple("(now)" if c in WALL_CLOCK_COLUMNS else v for c, v in zip(columns, row, strict=True))
                    for row in cursor.fetchall()
                ]
                found[f"{path.stem}/{name}"] = sorted(rows, key=repr)
    return found


def test_a_batch_writes_every_table_as_one_event_at_a_time_would(env, instance, tmp_path, monkeypatch):
    # Real events of a ranged load (planned events per partition, the partitions' materialisations with
    # their metadata and tags, the published asset, checks, run events), replayed into Dagster's SQLite
    # event log one at a time and into the batched one in batches of 7 (batches that cut through every
    # kind of event). Every row of every table must be the same. If a Dagster upgrade changes what
    # store_event writes (another table, another column, another order), this fails.
    monkeypatch.delenv(EVENT_BATCH_SIZE, raising=False)
    result = load(instance, DAYS[0], DAYS[3])
    assert result.success
    events = instance.all_logs(result.run_id)
    assert sum(1 for e in events if e.dagster_event and e.dagster_event.is_step_materialization) >= 12

    one, batched = tmp_path / "one", tmp_path / "batched"
    plain_storage = SqliteEventLogStorage(str(one))
    for event in events:
        plain_storage.store_event(event)
    batched_storage = BatchedSqliteEventLogStorage(str(batched))
    for i in range(0, len(events), 7):
        batched_storage.store_event_batch(events[i : i + 7])
    plain_rows, batched_rows = table_rows(one), table_rows(batched)
    assert set(plain_rows) == set(batched_rows)
    assert sum(len(rows) for rows in plain_rows.values()) > 2 * len(events)
    for table in plain_rows:
        assert plain_rows[table] == batched_rows[table], table


def test_the_batched_replay_comparison_sees_a_batch_that_loses_a_tag(env, instance, tmp_path, monkeypatch):
    # Control for the test above: a batch path that skips the indexed tags must show in the comparison.
    monkeypatch.delenv(EVENT_BATCH_SIZE, raising=False)
    result = load(instance, DAYS[0], DAYS[1])
    events = instance.all_logs(result.run_id)
    one, batched = tmp_path / "one", tmp_path / "batched"
    plain_storage = SqliteEventLogStorage(str(one))
    for event in events:
        plain_storage.store_event(event)
    monkeypatch.setattr(BatchedSqliteEventLogStorage, "_store_asset_event_tags", lambda *args: None)
    BatchedSqliteEventLogStorage(str(batched)).store_event_batch(events)
    assert table_rows(one)["index/asset_event_tags"] != table_rows(batched)["index/asset_event_tags"]


def test_the_shipped_instance_keeps_dagsters_files_with_the_batched_event_log(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = prepare_home(tmp_path / "home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance) is AmdSqliteInstance
        assert type(instance.event_log_storage) is BatchedSqliteEventLogStorage
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    # Dagster's own layout, so a home written before (or by Dagster's default instance) opens as it was.
    assert (home / "history" / "runs" / "index.db").exists() and (home / "history" / "runs.db").exists()


def test_an_instance_opened_by_its_path_uses_its_own_folder(tmp_path, monkeypatch):
    # DAGSTER_HOME pointing elsewhere must not move the events: they belong to the folder opened.
    first, second = prepare_home(tmp_path / "first"), prepare_home(tmp_path / "second")
    monkeypatch.setenv("DAGSTER_HOME", str(second))
    with dg.DagsterInstance.from_config(str(first)) as instance:
        assert Path(instance.event_log_storage._base_dir).resolve() == (first / "history" / "runs").resolve()
    assert os.environ["DAGSTER_HOME"] == str(second)


def test_a_home_written_before_the_package_split_keeps_its_config_and_still_opens(tmp_path, monkeypatch):
    """prepare_home never rewrites a home's dagster.yaml, so old homes keep naming amd_pipeline.event_log."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    old = shipped_instance_yaml().replace(
        "module: amd_pipeline.orchestration.event_log", "module: amd_pipeline.event_log"
    )
    assert old != shipped_instance_yaml()
    (home / "dagster.yaml").write_text(old)
    prepare_home(home)
    assert (home / "dagster.yaml").read_text() == old
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance) is AmdSqliteInstance
        assert type(instance.event_log_storage) is BatchedSqliteEventLogStorage


# --- The token pool's slot on the shipped SQLite instance ------------------------------------------------

CLAIM_AT_ONCE = """
import sys, uuid, dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from amd_pipeline_tests.barrier import wait_at_barrier
home, gate, parties, stock = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "stock"
instance = dg.DagsterInstance.from_config(home)
storage = instance.event_log_storage
if stock:  # the control: Dagster's own SQLite event log, as a home without the shipped instance class has
    storage.__class__ = SqliteEventLogStorage
wait_at_barrier(gate, parties)
print(int(storage.claim_concurrency_slot("wolkvox_token", uuid.uuid4().hex, "amd_daily").is_claimed))
"""


def claims_at_once(tmp_path: Path, attempt: int, storage: str, parties: int = 6) -> int:
    """How many of ``parties`` processes, claiming the token pool's one slot at the same moment, got it."""
    home = prepare_home(tmp_path / f"home{attempt}")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the pool has its slot, as after a first run
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("wolkvox_token")
    gate = tmp_path / f"gate{attempt}"
    gate.mkdir()
    args = [str(home), str(gate), str(parties), storage]
    started = [forkserver.start(args, env=dict(os.environ), cwd=tmp_path, script=CLAIM_AT_ONCE) for _ in range(parties)]
    done = [p.wait() for p in started]
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    return sum(int(d.stdout) for d in done)


@pytest.mark.slow
@CONTENTION
@pytest.mark.parametrize("storage", ["shipped", "stock"], ids=["shipped", "control_dagsters_sqlite_event_log"])
def test_steps_claiming_the_token_pool_at_once_get_one_slot_between_them(tmp_path, monkeypatch, storage):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    if storage == "shipped":
        assert [claims_at_once(tmp_path, i, storage) for i in range(5)] == [1] * 5
    else:  # measured: 2-4 claims in 8 of 10 tries; one is enough to show the comparison can fail
        assert any(claims_at_once(tmp_path, i, storage) > 1 for i in range(10))
