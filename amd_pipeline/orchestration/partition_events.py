"""A CLI run's per-partition materialisations, logged as each batch is written instead of after the step.

Dagster logs a ranged step's materialisations after its compute ends, while the step still holds the token's pool
slot. A run tagged by :func:`run_tags` (``dagster/defer_asset_events``) leaves them to the step, which logs them with
Dagster's own functions (:mod:`~amd_pipeline.orchestration.dagster_private`): the planned events first (the UI marks
the partitions in progress, failed if the run fails); each DuckDB batch's partitions once committed, from a thread of
their own so the load never waits; on success, the range's partitions skipped as already final. Only
``amd-pipeline backfill`` tags its runs; runs launched by the daemon take Dagster's own path.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterable, Mapping

import dagster as dg

from amd_pipeline.core.settings import partition_events_setting
from amd_pipeline.orchestration import dagster_private
from amd_pipeline.orchestration.metadata import add_partition_metadata


def run_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tag that asks a run's step to log its partitions' events during the load.

    Empty with ``AMD_PARTITION_EVENTS=after``, or when this Dagster lacks what the path relies on.
    """
    if partition_events_setting(environ) != "during":
        return {}
    return dagster_private.defer_asset_events_tags()


class PartitionEvents:
    """Logs one ranged step's planned and per-partition materialisation events during its compute."""

    def __init__(self, context: dg.AssetExecutionContext, keys: Iterable[dg.MultiPartitionKey]):
        self._context = context
        self._keys = list(keys)
        self._position = {str(key): i for i, key in enumerate(self._keys)}
        self.logged: set[str] = set()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @staticmethod
    def wanted(context: dg.AssetExecutionContext) -> bool:
        """Whether the run asked for them: Dagster will then not log them after the step."""
        return dagster_private.asset_events_deferred(context)

    def log_planned(self) -> None:
        """The run's planned events, as Dagster logs them when it creates a run."""
        dagster_private.log_planned_events(self._context)

    def log(self, by_partition: Mapping[dg.MultiPartitionKey, Mapping]) -> None:
        """One materialisation per partition, with its own metadata, as one event batch in the range's order."""
        keys = sorted(
            (key for key in by_partition if str(key) not in self.logged), key=lambda k: self._position[str(k)]
        )
        if not keys:
            return
        add_partition_metadata(self._context, {key: by_partition[key] for key in keys})
        dagster_private.log_materializations(self._context, keys)
        self.logged.update(str(key) for key in keys)

    def log_soon(self, by_partition: Mapping[dg.MultiPartitionKey, Mapping]) -> None:
        """Hand a committed batch's partitions to the logging thread (:meth:`log`), and return at once."""
        if self._thread is None:
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._work,), name="amd-partition-events", daemon=True
            )
            self._thread.start()
        self._queue.put(dict(by_partition))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after a failure, the rest is logged by report_partitions (or not at all)
                try:
                    self.log(item)
                except BaseException as exc:  # handed to finish(), on the step's thread
                    self._error = exc

    def finish(self) -> None:
        """Wait until every batch handed over is logged; raise what the logging thread met, if anything."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def log_rest(self) -> None:
        """The range's partitions not logged yet (skipped as already final), as Dagster's own path would."""
        self.log({key: {} for key in self._keys if str(key) not in self.logged})
