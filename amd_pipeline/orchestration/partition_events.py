"""A CLI run's per-partition materialisations, logged as each batch is written instead of after the step.

Dagster logs a ranged step's ``ASSET_MATERIALIZATION`` events (one per partition) after the step's
compute has ended: for a year of 50 campaigns, 18,250 events and 20-25 s while the token sits idle and
the step still holds the ``wolkvox_token`` pool slot (docs/performance.md). A run tagged
:data:`DURING_LOAD_TAG` (Dagster's own ``dagster/defer_asset_events``) makes Dagster leave a step's
asset events, and the run's planned events, to the code. The step then logs them itself, through the
functions Dagster would have used, so each event is the one Dagster would have made:

- the run's planned events first (:meth:`PartitionEvents.log_planned`), as Dagster writes them when it
  creates a run, so the UI marks the partitions in progress, and failed if the run fails;
- each DuckDB batch's partitions once the batch has committed, with their own metadata, in one
  event batch (``DAGSTER_EVENT_BATCH_SIZE``), by a thread of their own (:meth:`PartitionEvents.log_soon`):
  making and storing an event costs 1-1.5 ms, and the load's thread, which takes the fetcher's answers
  (at most 2 ahead), must not stop for 2,500 of them while the token waits;
- on success, the range's other partitions (those skipped as already final), as Dagster would.

Only ``amd-pipeline backfill`` tags its runs, and only when :func:`available` finds what this module
relies on; runs launched by the daemon (schedules, UI backfills) take Dagster's own path.
``test_event_log.py`` compares what the UI reads after both paths, on both instance profiles, and
fails if a Dagster upgrade moves the private functions used here.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Iterable, Mapping

import dagster as dg

try:  # Private to Dagster 1.13 (see the module's docstring): without them, runs are not tagged.
    from dagster._core.definitions.assets.definition.asset_spec import AssetExecutionType
    from dagster._core.definitions.partitions.context import partition_loading_context
    from dagster._core.events import DagsterEventBatchMetadata, generate_event_batch_id
    from dagster._core.execution.plan.execute_step import _dagster_event_for_asset_event, _get_output_asset_events
    from dagster._core.instance.runs.run_domain import RunDomain
    from dagster._core.storage.dagster_run import assets_are_externally_managed
    from dagster._core.storage.tags import EXTERNALLY_MANAGED_ASSETS_TAG
except ImportError:  # pragma: no cover - an upgrade moved one; test_event_log.py fails so it is noticed
    EXTERNALLY_MANAGED_ASSETS_TAG = None

from amd_pipeline.core.settings import SettingsError

DURING_LOAD_TAG = EXTERNALLY_MANAGED_ASSETS_TAG
SETTING = "AMD_PARTITION_EVENTS"  # during (the default) | after: Dagster's own path, as for daemon runs


def available() -> bool:
    """Whether this Dagster has what the events-during-the-load path relies on."""
    return DURING_LOAD_TAG is not None and hasattr(RunDomain, "_log_asset_planned_events")


def run_tags() -> dict[str, str]:
    """The tag that asks a run's amd_daily step to log its partitions' events during the load, unless
    ``AMD_PARTITION_EVENTS=after`` (or this Dagster lacks what the path relies on)."""
    value = os.environ.get(SETTING, "").strip().lower() or "during"
    if value not in ("during", "after"):
        raise SettingsError(f"{SETTING}={value!r} is not during or after (unset: during)")
    return {DURING_LOAD_TAG: "true"} if value == "during" and available() else {}


class PartitionEvents:
    """Logs one ranged step's planned and per-partition materialisation events during its compute."""

    def __init__(self, context: dg.AssetExecutionContext, keys: Iterable[dg.MultiPartitionKey]):
        self._context = context
        self._step = context.op_execution_context._step_execution_context
        self._keys = list(keys)
        self._position = {str(key): i for i, key in enumerate(self._keys)}
        self.logged: set[str] = set()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @staticmethod
    def wanted(context: dg.AssetExecutionContext) -> bool:
        """The run asked for them (:data:`DURING_LOAD_TAG`): Dagster will not log them after the step."""
        return available() and assets_are_externally_managed(context.run)

    def log_planned(self) -> None:
        """The run's planned events (its partitions', its checks'), as Dagster logs them when it creates a run."""
        run = self._context.run
        instance = self._context.instance
        snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        asset_graph = self._step.job_def.asset_layer.asset_graph
        with partition_loading_context(dynamic_partitions_store=instance):  # as create_run does
            RunDomain(instance)._log_asset_planned_events(run, snapshot, asset_graph)

    def log(self, by_partition: Mapping[dg.MultiPartitionKey, Mapping]) -> None:
        """One materialisation per partition, with its own metadata, written as one event batch, in the
        range's order (as Dagster's path logs them: a one-batch run's last event, the asset's latest, is the same)."""
        from amd_pipeline.orchestration.assets import add_partition_metadata

        keys = sorted(
            (key for key in by_partition if str(key) not in self.logged), key=lambda k: self._position[str(k)]
        )
        if not keys:
            return
        add_partition_metadata(self._context, {key: by_partition[key] for key in keys})
        had_version = self._step.has_data_version(self._context.asset_key)
        asset_events = list(
            _get_output_asset_events(
                self._context.asset_key,
                keys,
                dg.Output(None),
                self._step.op_def.output_def_named("result"),
                {},
                self._step,
                AssetExecutionType.MATERIALIZATION,
            )
        )
        if not had_version:
            # Dagster makes every partition's event in one call, which computes the data version. A second
            # call would find the first one's value cached and tag its events as a data version "provided
            # by the user" (dagster/data_version_is_user_provided): each batch computes it afresh instead.
            # (If an upgrade moves the cache, the events keep that tag and test_event_log.py fails.)
            getattr(getattr(self._step, "_data_version_cache", None), "values", {}).pop(self._context.asset_key, None)
        batch_id = generate_event_batch_id()
        for i, event in enumerate(asset_events):
            _dagster_event_for_asset_event(
                self._step, event, DagsterEventBatchMetadata(batch_id, i == len(asset_events) - 1)
            )
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
