"""The shipped SQLite instance: Dagster's own, whose default storage batches asset event writes.

Dagster's ``event_log_storage:`` setting needs an absolute folder, which would tie a ``dagster.yaml`` to one
path. So the shipped ``dagster.yaml`` names :class:`AmdSqliteInstance` (``instance_class:``): Dagster's
instance whose default storage is Dagster's SQLite storage in the instance's folder, with the batched event
log of :mod:`amd_pipeline.orchestration.dagster_private`. The files are Dagster's; a home written without it
opens with it, and the other way round. If an upgrade moves a private name that storage needs, the instance
opens with Dagster's stock storage and says so in one line.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from amd_pipeline.orchestration import dagster_private


class AmdSqliteInstance(dg.DagsterInstance):
    """Dagster's instance; only its default storage differs (batched event writes, in its folder).

    A ``storage:`` (or ``event_log_storage:``) section in ``dagster.yaml`` still wins, as it does for
    Dagster's own instance: the PostgreSQL profile does not use this class.
    """

    @classmethod
    def config_schema(cls) -> dict:
        """No settings of its own."""
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, object]:
        """Dagster's defaults for ``base_dir``, with the batched storage where this Dagster allows it."""
        return dagster_private.instance_config_defaults(base_dir)
