"""The run tags the pipeline writes and reads: who launched a run, for which operation, in which backfill."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

SOURCE_TAG = "amd_pipeline/source"  # who launched the run: backfill (CLI), refresh, restate; ui when absent
MISSING_ONLY_TAG = "amd_pipeline/missing_only"  # "true": windows already final are not fetched again
CLI_BACKFILL_TAG = "amd_pipeline/backfill"  # one id over the runs of one CLI backfill
DAGSTER_BACKFILL_TAG = "dagster/backfill"  # what Dagster puts on the runs of a UI backfill
OPERATION_TAG = "amd_pipeline/operation"  # the operation a run of its job loads (the schedules tell theirs apart)
CLI_HOST_TAG = "amd_pipeline/host"  # with CLI_PID_TAG: a later CLI call recognises a dead process's runs
CLI_PID_TAG = "amd_pipeline/pid"
RUN_ID_TAG = "amd_pipeline/run_id"  # on an event a failing step records on the instance: the run it came from


def backfill_id(tags: Mapping[str, str]) -> str | None:
    """The backfill a run belongs to (UI or CLI), whose runs share the answers they fetched; else None."""
    return tags.get(CLI_BACKFILL_TAG) or tags.get(DAGSTER_BACKFILL_TAG) or None


def cli_run_tags() -> dict[str, str]:
    """Tags that let a later CLI call recognise this process's runs if it dies."""
    return {CLI_HOST_TAG: socket.gethostname(), CLI_PID_TAG: str(os.getpid())}
