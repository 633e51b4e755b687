"""Every use of Dagster's private API, in one guarded room.

Each feature (the keys of ``FALLBACK``, which says what it falls back to) imports the private names it needs in a
``try`` of its own. When a Dagster upgrade moves one, that feature falls back to Dagster's public path and
:func:`notice` says so once, in one line on stderr; the instance still opens and loads still give exact rows.
``test_dagster_private.py`` fails on such an upgrade (every feature must be available) and runs a backfill with
every name made to fail.
"""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg
import yaml
from filelock import FileLock

MISSING: dict[str, str] = {}  # feature -> the import that failed
# Feature -> its fallback when an upgrade moves a name; the comment above each says what it buys (docs/performance.md).
FALLBACK = {
    # A batch of asset events in one transaction per SQLite file, and pool claims serialised. Without it, the
    # token lock still keeps calls apart.
    "batched_event_log": "the instance uses Dagster's stock SQLite storage (event writes one at a time)",
    # A CLI run logs its partitions' events while it loads, not after the step. Without it, runs are not tagged.
    "partition_events": "a CLI run's partition events are logged after its step, as for daemon runs",
    # Per-partition metadata added in one step.
    "metadata": "per-partition metadata goes through add_asset_metadata, one partition at a time",
    # Retention removes a pruned run's SQLite file.
    "run_files": "retention leaves pruned runs' emptied SQLite files in place",
}
_noticed: set[str] = set()


def notice(feature: str) -> None:
    """Say once per process, in one line on stderr, that ``feature`` fell back to Dagster's public path."""
    if feature in _noticed:
        return
    _noticed.add(feature)
    print(
        f"amd_pipeline: Dagster {dg.__version__} moved a private name ({MISSING[feature]}): "
        f"{FALLBACK[feature]}; upgrade amd_pipeline",
        file=sys.stderr,
    )


def available(feature: str) -> bool:
    """Whether ``feature``'s private names were found (else it falls back and says so once).

    A feature's names are imported on its first use, not when this module is: the SQLite storage's modules
    alone take about 0.4 s to import, and a run on the PostgreSQL profile never needs them.
    """
    if feature not in _tried:
        _tried.add(feature)
        _LOADERS[feature]()
    if feature in MISSING:
        notice(feature)
        return False
    return True


_tried: set[str] = set()


def __getattr__(name: str) -> object:
    """The batched storage's classes, made on first use (Dagster finds them by name in an instance's config)."""
    if name in ("BatchedSqliteEventLogStorage", "AmdSqliteStorage") and available("batched_event_log"):
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- batched_event_log ------------------------------------------------------------------------------------
try:
    from dagster._core.instance.ref import InstanceRef
except ImportError:  # the class DagsterInstance.get_ref returns is the same one, found through public names
    InstanceRef = typing.get_type_hints(dg.DagsterInstance.get_ref)["return"]


def _load_batched_event_log() -> None:
    global SqlEventLogStorageTable, SqliteEventLogStorage, SqliteRunStorage, SqliteScheduleStorage
    global DagsterSqliteStorage, _event_logs_directory, _runs_directory, _schedule_directory, ConfigurableClassData
    global BATCHED_EVENT_TYPES, BatchedSqliteEventLogStorage, AmdSqliteStorage, _batchable
    try:
        from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
        from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
        from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
        from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
        from dagster._core.storage.sqlite_storage import (
            DagsterSqliteStorage,
            _event_logs_directory,
            _runs_directory,
            _schedule_directory,
        )
        from dagster._serdes import ConfigurableClassData

        for _method in ("_event_to_row", "_store_asset_event_tags", "_store_asset_event", "index_transaction"):
            if not hasattr(SqliteEventLogStorage, _method):
                raise ImportError(f"SqliteEventLogStorage.{_method}")
    except ImportError as exc:
        MISSING["batched_event_log"] = str(exc)
        return

    # The asset events store_event mirrors into index.db with their tags and the asset's row, and nothing else:
    # check events and run status events take other paths, so batches holding them use the base loop.
    BATCHED_EVENT_TYPES = frozenset(
        {
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_OBSERVATION,
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        }
    )

    class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
        """Dagster's SQLite event log, with a batch of asset events in one transaction per file.

        Dagster's SQLite event log stores a batch an event at a time: the run's own file and ``index.db``
        each opened, written and committed per event. This writes the same rows through the same helpers
        in one transaction per file; ``test_event_log.py`` compares every table with the per-event path.
        """

        def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
            super().__init__(base_dir, inst_data)
            self._pool_lock = FileLock(os.path.join(base_dir, ".pool_claims.lock"))

        @classmethod
        def from_config_value(cls, inst_data, config_value):  # the parent builds its own class, not cls
            """This class from its config (the parent's would make a plain SqliteEventLogStorage)."""
            return cls(inst_data=inst_data, **config_value)

        def claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None):
            """Dagster's pool claim, one process at a time.

            Dagster claims a slot by reading a free row, then writing its run into it. PostgreSQL locks the
            row in between; SQLite has no row lock, so steps claiming at the same moment could all get the
            token pool's one slot. Under a file lock beside the event log, the second finds it taken.
            """
            with self._pool_lock:
                return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

        def store_event_batch(self, events: Sequence[dg.EventLogEntry]) -> None:
            """Store ``events`` in order: each run of consecutive asset events of one run at once."""
            start = 0
            while start < len(events):
                end = start
                while end < len(events) and _batchable(events[end]) and events[end].run_id == events[start].run_id:
                    end += 1
                if end == start:  # anything else (a planned check, a run status) on its own
                    self.store_event(events[start])
                    start += 1
                else:
                    self._store_asset_events(events[start:end])
                    start = end

        def _store_asset_events(self, events: Sequence[dg.EventLogEntry]) -> None:
            """What store_event does per event, for all at once: the rows, their index copy, tags, the asset row."""
            rows = [self._event_to_row(event) for event in events]
            with self.run_connection(events[0].run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), rows)
            with self.index_transaction() as conn:
                inserted = conn.execute(
                    SqlEventLogStorageTable.insert().returning(
                        SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                    ),
                    rows,
                )
                event_ids = [row[0] for row in inserted]
                if len(event_ids) != len(events) or any(event_id is None for event_id in event_ids):
                    raise dg.DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
                self._store_asset_event_tags(conn, events, event_ids)
                # The asset's row keeps, per column, the last event's value, and every event of one type sets
                # the same columns: the last event of each type, in order, leaves it as all would.
                last = {(e.dagster_event.asset_key, e.dagster_event.event_type): i for i, e in enumerate(events)}
                for i in sorted(last.values()):
                    self._store_asset_event(conn, events[i], event_ids[i])

    def _batchable(event: dg.EventLogEntry) -> bool:
        dagster_event = event.dagster_event
        return bool(
            dagster_event is not None
            and dagster_event.event_type in BATCHED_EVENT_TYPES
            and dagster_event.asset_key is not None
        )

    class AmdSqliteStorage(DagsterSqliteStorage):
        """Dagster's SQLite storage (runs, events, schedules in the instance's folder), with the batched event log."""

        def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
            self.base_dir = base_dir
            self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
            self._event_log_storage = BatchedSqliteEventLogStorage(_event_logs_directory(base_dir))
            self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
            self._inst_data = inst_data
            super(DagsterSqliteStorage, self).__init__()

        @classmethod
        def from_config_value(cls, inst_data, config_value):  # the parent builds its own class, not cls
            """This class from its config (the parent's would make a plain DagsterSqliteStorage)."""
            return cls.from_local(inst_data=inst_data, **config_value)


def instance_config_defaults(base_dir: str) -> Mapping[str, object]:
    """Dagster's defaults for an instance in ``base_dir``, with the batched SQLite storage where available."""
    defaults = InstanceRef.config_defaults(base_dir)
    if not available("batched_event_log"):
        return defaults
    storage = ConfigurableClassData(
        AmdSqliteStorage.__module__,
        AmdSqliteStorage.__name__,
        yaml.dump({"base_dir": base_dir}, default_flow_style=False),
    )
    return {**defaults, "storage": storage}


# --- partition_events ---------------------------------------------------------------------------------------
EXTERNALLY_MANAGED_ASSETS_TAG = "dagster/defer_asset_events"  # Dagster's own name, replaced by its value on load


def _load_partition_events() -> None:
    global AssetExecutionType, partition_loading_context, DagsterEventBatchMetadata, generate_event_batch_id
    global _dagster_event_for_asset_event, _get_output_asset_events, RunDomain, EXTERNALLY_MANAGED_ASSETS_TAG
    try:
        from dagster._core.definitions.assets.definition.asset_spec import AssetExecutionType
        from dagster._core.definitions.partitions.context import partition_loading_context
        from dagster._core.events import DagsterEventBatchMetadata, generate_event_batch_id
        from dagster._core.execution.plan.execute_step import _dagster_event_for_asset_event, _get_output_asset_events
        from dagster._core.instance.runs.run_domain import RunDomain
        from dagster._core.storage.tags import EXTERNALLY_MANAGED_ASSETS_TAG

        if not hasattr(RunDomain, "_log_asset_planned_events"):
            raise ImportError("RunDomain._log_asset_planned_events")
    except ImportError as exc:
        MISSING["partition_events"] = str(exc)


def defer_asset_events_tags() -> dict[str, str]:
    """The run tag that makes Dagster leave a step's asset events to the code, if the code can log them."""
    return {EXTERNALLY_MANAGED_ASSETS_TAG: "true"} if available("partition_events") else {}


def asset_events_deferred(context: dg.AssetExecutionContext) -> bool:
    """Whether Dagster leaves this run's asset events to the code (the run has the tag and we can log them)."""
    return context.run.tags.get(EXTERNALLY_MANAGED_ASSETS_TAG) == "true" and available("partition_events")


def _step(context: dg.AssetExecutionContext):
    """The step's execution context (None if an upgrade moved it: the metadata feature then falls back)."""
    return getattr(context.op_execution_context, "_step_execution_context", None)


def log_planned_events(context: dg.AssetExecutionContext) -> None:
    """The run's planned events (its partitions', its checks'), as Dagster logs them when it creates a run."""
    run, instance = context.run, context.instance
    snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    asset_graph = _step(context).job_def.asset_layer.asset_graph
    with partition_loading_context(dynamic_partitions_store=instance):  # as create_run does
        RunDomain(instance)._log_asset_planned_events(run, snapshot, asset_graph)


def log_materializations(context: dg.AssetExecutionContext, keys: Iterable[dg.MultiPartitionKey]) -> None:
    """One materialisation per partition of ``keys``, with the metadata added so far, as one event batch."""
    step = _step(context)
    had_version = step.has_data_version(context.asset_key)
    asset_events = list(
        _get_output_asset_events(
            context.asset_key,
            list(keys),
            dg.Output(None),
            step.op_def.output_def_named("result"),
            {},
            step,
            AssetExecutionType.MATERIALIZATION,
        )
    )
    if not had_version:
        # Dagster makes every partition's event in one call, which computes the data version. A second call
        # would find it cached and tag its events "provided by the user": each batch computes it afresh.
        getattr(getattr(step, "_data_version_cache", None), "values", {}).pop(context.asset_key, None)
    batch_id = generate_event_batch_id()
    for i, event in enumerate(asset_events):
        _dagster_event_for_asset_event(step, event, DagsterEventBatchMetadata(batch_id, i == len(asset_events) - 1))


# --- metadata -------------------------------------------------------------------------------------------------
def _load_metadata() -> None:
    global AssetMetadataHandle, OutputMetadataAccumulator
    try:
        from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
    except ImportError as exc:
        MISSING["metadata"] = str(exc)


def add_metadata_at_once(context: dg.AssetExecutionContext, by_partition: Mapping[object, Mapping]) -> bool:
    """Add each partition's metadata to the step's accumulator in one step; False if this Dagster has none.

    Dagster's public ``add_asset_metadata(partition_key=...)`` lists the run's whole range on each call,
    so a run of n partitions costs O(n^2) (docs/performance.md).
    """
    if not available("metadata"):
        return False
    step = _step(context)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if not isinstance(accumulator, OutputMetadataAccumulator):
        MISSING["metadata"] = "StepExecutionContext._metadata_accumulator"
        notice("metadata")
        return False
    added = {
        AssetMetadataHandle(asset_key=context.asset_key, partition_key=str(key)): metadata
        for key, metadata in by_partition.items()
    }
    step._metadata_accumulator = OutputMetadataAccumulator(
        per_output_metadata={**accumulator.per_output_metadata, **added}
    )
    return True


# --- run_files ------------------------------------------------------------------------------------------------
def _load_run_files() -> None:
    global _SqliteEventLog
    try:
        from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage as _SqliteEventLog
    except ImportError as exc:
        MISSING["run_files"] = str(exc)


def run_file(storage: object, run_id: str) -> str | None:
    """The SQLite file that holds ``run_id``'s events (Dagster's SQLite event log), else None."""
    if isinstance(storage, dg.DagsterInstance):
        storage = storage.event_log_storage
    if not available("run_files") or not isinstance(storage, _SqliteEventLog):
        return None
    return storage.path_for_shard(run_id)


_LOADERS = {
    "batched_event_log": _load_batched_event_log,
    "partition_events": _load_partition_events,
    "metadata": _load_metadata,
    "run_files": _load_run_files,
}
