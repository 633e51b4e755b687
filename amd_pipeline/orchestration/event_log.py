"""The shipped SQLite instance, with a batch of asset events written in one transaction per database.

Dagster hands a ranged step's ``ASSET_MATERIALIZATION`` events to the event log's
``store_event_batch`` when ``DAGSTER_EVENT_BATCH_SIZE`` is above 0 (``execute_step.py`` gives them
batch metadata; the CLI sets the variable). Dagster's SQLite event log inherits the base loop, which
stores each event on its own: the run's own file and ``index.db`` (which mirrors asset events for
the partition matrix and cross-run queries) each opened, written and committed per event, about 10 ms
a partition. :class:`BatchedSqliteEventLogStorage` writes the same rows through the same helpers in
one transaction per file. ``test_event_log.py`` compares every table it writes with the
one-event-at-a-time path, so a Dagster upgrade that changes what ``store_event`` writes fails it.

Dagster's ``event_log_storage:`` setting needs an absolute folder, which would tie a ``dagster.yaml``
to one path (or to ``$DAGSTER_HOME``, wrong for an instance opened by its path). So the shipped
``dagster.yaml`` names :class:`AmdSqliteInstance` instead (``instance_class:``): Dagster's own
instance whose default storage is Dagster's SQLite storage in the instance's folder, with this event
log. The files and their layout are Dagster's (``history/runs/*.db``, ``history/runs.db``,
``schedules/``); a home written without it opens with it, and the other way round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef
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
from filelock import FileLock

# The asset events store_event mirrors into index.db with their tags and the asset's row, and nothing
# else: check events and run status events take other paths, so batches holding them use the base loop.
BATCHED_EVENT_TYPES = frozenset(
    {
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_OBSERVATION,
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, with ``store_event_batch`` in one transaction per database file, and
    pool slots claimed one process at a time."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._pool_lock = FileLock(os.path.join(base_dir, ".pool_claims.lock"))

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # the parent builds its own class, not cls
        return cls(inst_data=inst_data, **config_value)

    def claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None):
        """Dagster's claim, one process at a time.

        Dagster claims a pool slot by reading a free slot row, then writing its run into it. PostgreSQL
        locks the row in between (``SELECT ... FOR UPDATE SKIP LOCKED``); SQLite has no row lock, so steps
        claiming at the same moment all got the token pool's one slot (6 processes at once: 2-4 claims in
        7-8 of 10 tries). Under a file lock beside the event log, the second finds the slot taken.
        """
        with self._pool_lock:
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

    def store_event_batch(self, events: Sequence[dg.EventLogEntry]) -> None:
        # In order: each run of consecutive asset events of one run in one transaction per file, anything
        # else (a planned check, say: a daemon run's planned events come as one batch) on its own.
        start = 0
        while start < len(events):
            end = start
            while end < len(events) and _batchable(events[end]) and events[end].run_id == events[start].run_id:
                end += 1
            if end == start:
                self.store_event(events[start])
                start += 1
            else:
                self._store_asset_events(events[start:end])
                start = end

    def _store_asset_events(self, events: Sequence[dg.EventLogEntry]) -> None:
        """What store_event does per event (sqlite_event_log.py), for all at once: the row in the run's
        file; the same row in index.db, its indexed tags, and the asset's row."""
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True),
                rows,
            )
            event_ids = [row[0] for row in inserted]
            if len(event_ids) != len(events) or any(event_id is None for event_id in event_ids):
                raise dg.DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
            self._store_asset_event_tags(conn, events, event_ids)
            # The asset's row keeps, per column, the value of the last event that sets it, and every event
            # of one type sets the same columns: the last event of each type, in order, leaves it as all would.
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
    """Dagster's SQLite storage (runs, events, schedules in the instance's folder) with the batched event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = BatchedSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # the parent builds its own class, not cls
        return cls.from_local(inst_data=inst_data, **config_value)


class AmdSqliteInstance(dg.DagsterInstance):
    """Dagster's instance; only its default storage differs (:class:`AmdSqliteStorage` in its folder).

    A ``storage:`` (or ``event_log_storage:``) section in ``dagster.yaml`` still wins, as it does for
    Dagster's own instance: the PostgreSQL profile does not use this class.
    """

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return {
            **InstanceRef.config_defaults(base_dir),
            "storage": ConfigurableClassData(
                AmdSqliteStorage.__module__,
                AmdSqliteStorage.__name__,
                yaml.dump({"base_dir": base_dir}, default_flow_style=False),
            ),
        }
