"""A `dagster dev` webserver driven over GraphQL: its load, UI backfills, schedules, runs in progress."""

from __future__ import annotations

import subprocess
import time

from loopback import http
from output import log

WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { name repositories { name
    schedules { name scheduleState { id status } } sensors { name sensorState { status } } } }
  ... on PythonError { message } } } } } }"""
LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs { id status startTime endTime } } } }"""
START_SCHEDULE = """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
STOP_SCHEDULE = """mutation($id: String!) { stopRunningSchedule(id: $id) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
ACTIVE_RUNS = """query($s: [RunStatus!]) { runsOrError(filter: {statuses: $s}) {
  ... on Runs { results { runId status tags { key value } } } } }"""
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """One GraphQL call to the webserver on ``port``."""
    return http(f"http://127.0.0.1:{port}/graphql", {"query": query, "variables": variables or {}})


def wait_loaded(port: int, dev: subprocess.Popen, timeout: float = 300) -> list[dict]:
    """The workspace's location entries once every code location loaded; RuntimeError if one failed or dev ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.returncode} before the code location loaded")
        try:
            entries = graphql(port, WORKSPACE)["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                for entry in entries:
                    location = entry["locationOrLoadError"]
                    if location["__typename"] != "RepositoryLocation":
                        raise RuntimeError(f"code location {entry['name']} failed to load: {location.get('message')}")
                return entries
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the code location did not load within {timeout:.0f} s")


def launch_backfill(port: int, names: list[str], asset_path: list[str]) -> str:
    """Launch a UI backfill (``launchPartitionBackfill``) of the partitions ``names`` of one asset; its id."""
    answer = graphql(port, LAUNCH, {"p": {"partitionNames": names, "assetSelection": [{"path": asset_path}]}})
    return answer["data"]["launchPartitionBackfill"]["backfillId"]


def wait_backfills(port: int, backfills: dict[str, str], launched: float, limit: float, too_long: str) -> dict:
    """Poll until every backfill (name -> id) has its runs and all ended; each one's runs, by name.

    RuntimeError(``too_long``) when ``limit`` seconds pass from ``launched`` (a Unix time) first.
    """
    while True:
        statuses = {
            name: graphql(port, STATUS, {"id": b})["data"]["partitionBackfillOrError"] for name, b in backfills.items()
        }
        if all(
            s["status"] != "REQUESTED" and s["runs"] and all(r["status"] in TERMINAL for r in s["runs"])
            for s in statuses.values()
        ):
            return {name: s["runs"] for name, s in statuses.items()}
        if time.time() - launched > limit:
            raise RuntimeError(too_long)
        time.sleep(0.5)


def schedules_of(entries: list[dict]) -> list[tuple[str, str, dict]]:
    """(location, repository, schedule) for every schedule of the workspace."""
    return [
        (entry["locationOrLoadError"]["name"], repo["name"], schedule)
        for entry in entries
        for repo in entry["locationOrLoadError"]["repositories"]
        for schedule in repo["schedules"]
    ]


def ensure_schedules_running(port: int, entries: list[dict]) -> list[str]:
    """Start every schedule that is not running (they default to RUNNING); returns a line per schedule."""
    lines = []
    for location, repo, schedule in schedules_of(entries):
        status = schedule["scheduleState"]["status"]
        if status != "RUNNING":
            selector = {"repositoryLocationName": location, "repositoryName": repo, "scheduleName": schedule["name"]}
            answer = graphql(port, START_SCHEDULE, {"s": selector})["data"]["startSchedule"]
            status = f"{status} -> started: {answer.get('scheduleState', answer)}"
        lines.append(f"{schedule['name']}: {status}")
    return lines


def stop_schedules(port: int) -> None:
    """Stop every running schedule (a line on stderr for one that will not stop)."""
    entries = graphql(port, WORKSPACE)["data"]["workspaceOrError"]["locationEntries"]
    for _, _, schedule in schedules_of(entries):
        if schedule["scheduleState"]["status"] == "RUNNING":
            answer = graphql(port, STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})["data"]
            if answer["stopRunningSchedule"]["__typename"] != "ScheduleStateResult":
                log(f"could not stop {schedule['name']}: {answer}")


def active_runs(port: int) -> list[dict]:
    """The runs not ended yet (queued, starting, started or canceling)."""
    answer = graphql(port, ACTIVE_RUNS, {"s": list(IN_PROGRESS)})
    return answer["data"]["runsOrError"]["results"]
