"""The project's Dagster instance: one DAGSTER_HOME shared by the CLI, the UI and the daemon."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import dagster as dg
import yaml
from filelock import FileLock

from amd_pipeline.core.messages import EXIT_FAILED, CliExit
from amd_pipeline.core.portable import pid_alive
from amd_pipeline.orchestration.tags import CLI_HOST_TAG, CLI_PID_TAG

DEFAULT_HOME = ".dagster_home"


def shipped_instance_yaml() -> str:
    """The text of the ``dagster.yaml`` shipped in the package."""
    return resources.files("amd_pipeline").joinpath("dagster.yaml").read_text()


def pool_limit_configured(home: Path) -> bool:
    """True when ``home/dagster.yaml`` sets a pool limit (so the token pool holds one step at a time)."""
    path = home / "dagster.yaml"
    if not path.exists():
        return False
    config = yaml.safe_load(path.read_text()) or {}
    return bool(((config.get("concurrency") or {}).get("pools") or {}).get("default_limit"))


def prepare_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Use DAGSTER_HOME (or ./.dagster_home), writing the shipped dagster.yaml if it has none.

    Sets ``DAGSTER_HOME`` for this process and its children and returns the absolute path.
    """
    path = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).resolve()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text(shipped_instance_yaml())
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def open_instance(home: Path) -> dg.DagsterInstance:
    """The instance in ``home``, or :class:`CliExit` with one sentence saying why it cannot be opened.

    Opening is serialised with a file lock: several processes creating a fresh sqlite home at once
    race in its migrations ("Version table 'alembic_version' has more than one head", "table ...
    already exists").
    """
    with init_lock(home):
        logging.disable(logging.WARNING)  # the storage's retry warnings: the error below says it in one line
        try:
            return dg.DagsterInstance.from_config(str(home))
        except Exception as exc:
            raise CliExit(EXIT_FAILED, cannot_open(home, exc)) from exc
        finally:
            logging.disable(logging.NOTSET)


def init_lock(home: Path) -> FileLock:
    """The lock that serialises opening the instance in ``home`` (freed by the OS if its holder dies)."""
    return FileLock(home / ".amd_pipeline-init.lock")


def cannot_open(home: Path, exc: Exception) -> str:
    """Why the instance in ``home`` cannot be opened, without the URL (it may hold a password)."""
    missing = re.search(r'environment variable "(\w+)" which is not set', str(exc))
    if missing:
        return (
            f"{home / 'dagster.yaml'} reads the environment variable {missing[1]}, which is not set: set it "
            "(DAGSTER_PG_URL is the production profile's PostgreSQL URL)"
        )
    return (
        f"cannot open the Dagster instance in {home} ({type(exc).__name__}): check its dagster.yaml and, on the "
        "production profile, that the PostgreSQL in DAGSTER_PG_URL is up and reachable"
    )


def get_instance(home: Path, pool: str = "wolkvox_token") -> dg.DagsterInstance:
    """The instance in ``home`` (:func:`open_instance`), with the token's pool limited to 1.

    The pool is an operation's own (``WolkvoxOperation.pool``); its limit is set even if dagster.yaml forgot it.
    """
    instance = open_instance(home)
    if not pool_limit_configured(home):
        instance.event_log_storage.set_concurrency_slots(pool, 1)
    return instance


@contextlib.contextmanager
def existing_instance(home: str | os.PathLike[str] | None = None) -> Iterator[dg.DagsterInstance | None]:
    """The instance in ``home`` (or DAGSTER_HOME, or ./.dagster_home) if it has a dagster.yaml, else None.

    Commands that only read, or that have not passed their checks yet, create no home.
    """
    path = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).resolve()
    if not (path / "dagster.yaml").exists():
        yield None
        return
    instance = open_instance(path)
    try:
        yield instance
    finally:
        instance.dispose()


EVENT_BATCH_SIZE = "DAGSTER_EVENT_BATCH_SIZE"
DEFAULT_EVENT_BATCH_SIZE = "1000"


def batch_event_writes() -> None:
    """Let Dagster hand event writes to the storage in batches, in this process and its children.

    Sets Dagster's ``DAGSTER_EVENT_BATCH_SIZE`` (read by the process that writes the events: the
    CLI, a run worker, the daemon creating a run) unless it is set already (``0`` turns it off). A
    ranged step's per-partition materialisations then reach the storage ``store_event_batch`` at a time:
    one multi-row insert on PostgreSQL, one transaction per file with the shipped SQLite instance
    (:mod:`amd_pipeline.orchestration.event_log`), instead of a committed write per partition.
    """
    os.environ.setdefault(EVENT_BATCH_SIZE, DEFAULT_EVENT_BATCH_SIZE)


def release_dead_cli_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark runs of CLI processes on this host that died (kill -9, OOM) as failed, and free their pool slots.

    Without this, a killed CLI run keeps its ``wolkvox_token`` slot and every later run waits for
    it forever: run monitoring only watches runs the daemon launched.
    """
    released = []
    running = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=running, tags={CLI_HOST_TAG: socket.gethostname()})
    )
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(CLI_PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not pid_alive(pid):
            instance.report_run_failed(run, f"the amd-pipeline process (pid {pid}) that ran it is gone")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(run.run_id)
    return released
