"""What the instance recorded during the soak: its runs and why one failed, its ticks, the token's pool."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def run_report(home: Path, since: float) -> tuple[list[dict], dict]:
    """What the instance recorded since ``since`` (a Unix time): its runs, and its ticks and pool.

    Each run comes with its source and, for a failed or canceled one, its reason; then the schedules' and
    sensors' ticks since then and the pool's state. (A --pg-url database may hold the runs of earlier
    soaks: they are left out.)
    """
    import dagster as dg

    from amd_pipeline.orchestration.tags import SOURCE_TAG

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = []
        created_after = dt.datetime.fromtimestamp(since, dt.UTC)
        for run in instance.get_runs(filters=dg.RunsFilter(created_after=created_after)):
            source = run.tags.get(SOURCE_TAG) or ("ui" if not run.tags.get("dagster/schedule_name") else "schedule")
            record = {
                "run_id": run.run_id,
                "status": run.status.value,
                "source": source,
                "schedule": run.tags.get("dagster/schedule_name", ""),
                "reason": "",
            }
            if run.status != dg.DagsterRunStatus.SUCCESS:
                record["reason"] = failure_reason(instance, run.run_id)
            runs.append(record)
        ticks = {}
        for state in instance.all_instigator_state():
            counts: dict[str, int] = {}
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=float(since)):
                status = tick.status.value
                if status == "FAILURE" and tick.error is not None:
                    status += f" ({tick.error.message.strip().splitlines()[-1][:120]})"
                counts[status] = counts.get(status, 0) + 1
            ticks[state.name] = counts
        info = instance.event_log_storage.get_concurrency_info("wolkvox_token")
        pool = {
            "limit": info.limit,
            "slot_count": info.slot_count,
            "claimed": [(s.run_id, s.step_key) for s in info.claimed_slots],
            "pending": [(s.run_id, s.step_key) for s in info.pending_steps],
            "ticks": ticks,
        }
    finally:
        instance.dispose()
    return runs, pool


def failure_reason(instance, run_id: str) -> str:
    """The step's Failure description (what the CLI prints), else the error, else the run's own message."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELED,
        dg.DagsterEventType.ENGINE_EVENT,
    }
    records = instance.all_logs(run_id, of_type=kinds)
    for entry in records:
        event = entry.dagster_event
        if event is not None and event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return f"{event.step_key}: {data.user_failure_data.description.strip()}"
            if data.error:
                return f"{event.step_key}: {data.error.message.strip().splitlines()[-1]}"
    for entry in records:
        event = entry.dagster_event
        if event is not None and event.event_type in (
            dg.DagsterEventType.RUN_FAILURE,
            dg.DagsterEventType.RUN_CANCELED,
        ):
            return (entry.message or event.message or "").strip()
    return ""
