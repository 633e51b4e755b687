"""A backfill of a campaign x day rectangle, as `amd-pipeline backfill` (and the demo) runs it.

Every argument and setting is checked first (nothing called or written), then come the pre-flight
calls (``token_info``, the campaign list), the plan (only the windows not final yet), the quota guard,
and one in-process Dagster run per rectangle (``runs.ranged_runs``) on the project's instance. The
functions return the command's exit status (``messages.EXIT_*``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import uuid
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from amd_pipeline.core.errors import CALL_ERRORS, SettingsError, SharedStateError
from amd_pipeline.core.messages import EXIT_BUDGET, EXIT_FAILED, EXIT_OK, EXIT_QUOTA, CliExit
from amd_pipeline.core.progress import ProgressPrinter
from amd_pipeline.core.settings import parquet_dir_for


def _preflight_calls(wolkvox, campaign_source, explicit: Sequence[str], force: bool, store=None):
    """The API calls made before a backfill starts: the quota left, and which campaigns to load.

    Returns ``(quota, selected)``. Raises :class:`SettingsError` for an unknown campaign (exit 2),
    :class:`CliExit` when the server cannot be used (exit 1) or the quota is spent (exit 3). The calls
    go to ``api_requests`` (source ``cli``) once the campaigns are accepted: a refusal writes no file.
    """
    from amd_pipeline.core.messages import exit_status, explain
    from amd_pipeline.core.schema import attempts_frame
    from amd_pipeline.wolkvox import errors

    def refused(exc: Exception) -> CliExit | None:
        """The exit for an error no backfill can go on after; None for one it warns about and goes on."""
        ending = (
            errors.BudgetExhaustedError
            | errors.QuotaExhaustedError
            | errors.FatalError
            | errors.TransportError
            | SharedStateError
        )
        if not isinstance(exc, ending):
            return None
        if isinstance(exc, errors.BudgetExhaustedError):
            return CliExit(exit_status(exc), f"{explain(exc, timezone=wolkvox.timezone)}; nothing was called")
        return CliExit(exit_status(exc), explain(exc))

    def ask(client) -> tuple[dict | None, list[str], list[dict] | None]:
        """The quota left, the campaigns to load, and the operation's campaign list if it was asked."""
        quota = rows = None
        try:
            quota = client.token_info_today or client.token_info()
        except CALL_ERRORS as exc:
            if (exit_ := refused(exc)) is not None:
                raise exit_ from None
            print(f"warning: daily quota unknown ({explain(exc)})", file=sys.stderr)
        selected = list(explicit) or campaign_source.configured()
        if not selected:
            try:
                rows = campaign_source.listing(wolkvox, client=client)
            except CALL_ERRORS as exc:
                raise CliExit(EXIT_FAILED, f"cannot list the operation's campaigns: {explain(exc)}") from None
            return quota, campaign_source.kept(rows), rows
        if explicit and not force:
            try:
                rows = campaign_source.listing(wolkvox, client=client)
            except CALL_ERRORS as exc:
                print(f"warning: could not check the campaign ids ({explain(exc)})", file=sys.stderr)
                return quota, selected, None
            known = campaign_source.kept(rows)
            unknown = [c for c in explicit if c not in known]
            if unknown:  # refused before anything is kept: a mistyped id writes no file
                client.attempts.clear()
                raise SettingsError(
                    f"campaign {', '.join(unknown)} is not one of the operation's predictive campaigns "
                    f"({', '.join(known) or 'none found'}); check the id, or pass --force to load it anyway"
                )
        return quota, selected, rows

    try:
        with wolkvox.client("cli") as client:  # asks token_info itself when the quota is not known today
            try:
                quota, selected, rows = ask(client)
            finally:
                if store is not None and client.attempts:  # every call in api_requests, as in the budget
                    store.record_requests(attempts_frame(client.attempts, {"source": "cli", "run_id": None}))
    except CALL_ERRORS as exc:  # only from making the client: ask() turns its own errors into exits
        raise (refused(exc) or CliExit(exit_status(exc), explain(exc))) from None
    if rows is not None and store is not None:
        store.record_campaigns(rows, dt.datetime.now(dt.UTC))
    if not selected:
        raise SettingsError("no campaigns: set AMD_CAMPAIGNS or pass --campaign ID")
    return quota, selected


def run_backfill(
    start: dt.date,
    end: dt.date,
    campaigns: Sequence[str] = (),
    *,
    home: str | None = None,
    show_progress: bool = True,
    dry_run: bool = False,
    force: bool = False,
    verbose: bool = False,
    refetch: bool = False,
    operation: str | None = None,
) -> int:
    """Materialise ``amd_daily`` for campaigns x [start, end] through Dagster. Returns an exit status.

    Every argument and setting is checked first (exit 2, nothing called or written). Then it asks
    the server how much of the daily quota is left (``token_info``, one call), plans the calls for
    the windows that are not final yet (all of them with ``refetch``) and refuses a backfill that
    needs more than the quota or the pipeline's daily budget leaves, unless ``force`` (exit 3).
    A run stopped by the budget or the quota exits 4; the next backfill fetches only what is missing.
    With several operations, ``operation`` names the one to load (``--operation``).
    """
    from amd_pipeline.core.errors import PublishHeldError, StoreLockedError
    from amd_pipeline.core.messages import explain
    from amd_pipeline.core.settings import check_campaign_id
    from amd_pipeline.core.store import AmdStore
    from amd_pipeline.core.timezones import timezone_refusal
    from amd_pipeline.orchestration.operations import load_operations

    found = load_operations()
    op = found.get(operation)
    settings = op.run_settings()
    timezone = settings.definition.timezone
    start_setting = "AMD_START_DATE" if op.from_environment else f"{op.id}'s start_date"
    explicit = list(dict.fromkeys(check_campaign_id(c) for c in campaigns))
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    if start > end:
        raise SettingsError(f"--start {start} is after --end {end}: swap them")
    if start < settings.definition.start_date or end > today:
        raise SettingsError(
            f"days must lie between {start_setting}={settings.definition.start_date} and today ({today}, "
            f"{timezone}); got {start}..{end}"
        )
    stored = None
    with contextlib.suppress(StoreLockedError):  # a held file is checked again when the load writes
        stored = AmdStore(settings.working_path, operation=op.id, lock_timeout=0).stored_timezone()
    if stored not in (None, timezone):
        raise SettingsError(timezone_refusal(settings.working_path, op.id, stored, timezone))

    import dagster as dg

    from amd_pipeline.core import progress
    from amd_pipeline.core.plan import CampaignAll, Plan, WindowRequest, plan_calls
    from amd_pipeline.core.schema import AMD_DAILY
    from amd_pipeline.orchestration import partition_events
    from amd_pipeline.orchestration.build import AMD_DAILY_JOB
    from amd_pipeline.orchestration.instance import (
        batch_event_writes,
        existing_instance,
        get_instance,
        prepare_home,
        release_dead_cli_runs,
    )
    from amd_pipeline.orchestration.location import build_location
    from amd_pipeline.orchestration.publishing import observed_latency
    from amd_pipeline.orchestration.runs import days_between, quota_refusal, ranged_runs
    from amd_pipeline.orchestration.tags import CLI_BACKFILL_TAG, MISSING_ONLY_TAG, SOURCE_TAG, cli_run_tags
    from amd_pipeline.wolkvox.windows import day_window

    # Each partition's event is logged as its batch is written, not after the step (AMD_PARTITION_EVENTS):
    # read before any call, so a bad value costs none.
    event_tags = partition_events.run_tags()
    defs = build_location(found)
    top_level = defs.get_repository_def().get_top_level_resources()
    # An instance that already exists shares the token's budget and lock (in PostgreSQL on the production
    # profile) from the first pre-flight call on; a fresh one is created only once the checks passed.
    with (
        existing_instance(home) as shared,
        dg.build_resources(
            {"wolkvox": top_level[op.wolkvox_key], "campaign_source": top_level[op.campaign_source_key]},
            instance=shared,
        ) as built,
    ):
        wolkvox = built.wolkvox
        quota, selected = _preflight_calls(
            wolkvox,
            built.campaign_source,
            explicit,
            force,
            AmdStore(settings.working_path, operation=op.id, timezone=timezone),
        )
        mode = wolkvox.campaign_all_mode()

        ledger = wolkvox.ledger()
        budget = wolkvox.budget(ledger)
        used = sum(ledger.usage().values())

    days = days_between(start, end)
    requests = [WindowRequest(c, day_window(d, timezone)) for d in days for c in selected]
    final = set()
    if not refetch:
        with contextlib.suppress(StoreLockedError):
            final = AmdStore(settings.working_path, operation=op.id, lock_timeout=0).final_keys(
                AMD_DAILY, [(r.campaign_id, r.window.start) for r in requests]
            )
    missing = [r for r in requests if (r.campaign_id, r.window.start) not in final]
    home_path = prepare_home(home)
    instance = get_instance(home_path, op.pool)
    daily = settings.numbers["WOLKVOX_DAILY_QUOTA"] or (quota["token_limit"] if quota else 0)
    plan = Plan(
        windows=len(missing),
        calls=len(plan_calls(missing, use_all=mode != CampaignAll.OFF)),
        daily_quota=daily or None,
        quota_remaining=(daily - quota["token_use_today"]) if quota and daily else None,
        median_latency=observed_latency(instance, op.id),
        budget_limit=budget.limit,
        budget_used=used,
    )
    existing = instance.get_dynamic_partitions(op.campaigns_name)
    new_partitions = [c for c in selected if c not in existing]
    runs = ranged_runs([*existing, *new_partitions], selected, start, end)
    skipped = f", {len(final)} already final (--refetch to fetch them again)" if final else ""
    asset = op.asset_key("amd_daily").to_user_string()
    print(
        f"{asset}: {len(selected)} campaign(s) x {len(days)} day(s) in {len(runs)} run(s), "
        f"campaign_id=all {mode}{skipped}: {plan.describe()}",
        file=sys.stderr,
    )
    if dry_run:
        return EXIT_OK
    if not missing:
        # No run, but the file still gets this version's schema and views.
        working = AmdStore(
            settings.working_path, operation=op.id, timezone=timezone, start_date=settings.definition.start_date
        )
        working.prepare(AMD_DAILY)
        print("nothing to fetch: every window is final", file=sys.stderr)
        try:
            for target, alone in ((settings.duckdb_path, None), (op.published_path, op.id)):
                if target:
                    working.publish(
                        target,
                        storage_version=settings.publish.storage_version,
                        parquet_dir=parquet_dir_for(target) if settings.publish.parquet else None,
                        operation=alone,
                    )
        except PublishHeldError as exc:  # nothing is lost: the rows are in the working file
            print(f"warning: {explain(exc)}", file=sys.stderr)
        return EXIT_OK
    refusal = quota_refusal(plan)
    if refusal and not force:
        raise CliExit(EXIT_QUOTA, refusal)
    if new_partitions:
        instance.add_dynamic_partitions(op.campaigns_name, new_partitions)
        print(f"added campaign partitions: {', '.join(new_partitions)}", file=sys.stderr)
    for run_id in release_dead_cli_runs(instance):
        print(f"run {run_id} of a dead amd-pipeline process: marked failed, its token slot freed", file=sys.stderr)

    job = defs.resolve_job_def(op.name(AMD_DAILY_JOB))
    # One "planned" event per run instead of one per partition: Dagster writes those before the run
    # starts, about 9 ms each (bench/scale.py: 2.8 minutes of a 50 x 365 backfill). They only drive the
    # UI's "in progress" and "failed" marks, which this command prints itself. Set it to false to keep them.
    os.environ.setdefault(SUBSET_PLANNED_EVENTS, "true")
    batch_event_writes()  # the run's per-partition materialisations in batches (docs/performance.md, "Speed")
    failures = []
    # One id over this backfill's runs when it has several (a subset of campaigns that are not neighbours):
    # the first asks campaign_id=all for each day and the later ones take their closed windows from those
    # answers. A single run asks as before (all only for several campaigns): nothing would reuse its answers.
    backfill = {CLI_BACKFILL_TAG: f"cli-{uuid.uuid4().hex[:12]}"} if len(runs) > 1 else {}
    listener = ProgressPrinter() if show_progress else (lambda p: None)
    with progress.listening(listener):
        for run in runs:
            result = job.execute_in_process(
                instance=instance,
                tags={
                    **run.tags(),
                    SOURCE_TAG: "backfill",
                    **backfill,
                    MISSING_ONLY_TAG: "false" if refetch else "true",
                    **cli_run_tags(),
                    **event_tags,
                },
                raise_on_error=False,
                # Dagster's console log repeats a failure with its stack trace: shown with --verbose only.
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING" if verbose else "CRITICAL"}}}},
            )
            if result.success:
                print(f"run {result.run_id}: ok ({', '.join(run.campaigns)})", file=sys.stderr)
                for held in _publish_held_of(result):  # the load succeeded; the analysts' copy is the previous one
                    print(f"warning: {held}", file=sys.stderr)
            else:
                failures.append((result.run_id, *_failure_of(result)))
    for run_id, text, _ in failures:
        print(f"error: {text}", file=sys.stderr)
        print(
            f"run {run_id} failed; its logs: `amd-pipeline dev`, then http://localhost:3000/runs/{run_id}",
            file=sys.stderr,
        )
    if any(deferred for _, _, deferred in failures):
        return EXIT_BUDGET
    return EXIT_FAILED if failures else EXIT_OK


SUBSET_PLANNED_EVENTS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def _publish_held_of(result) -> list[str]:
    """The sentence of each publish of a run that found the published file held open (Windows)."""
    from amd_pipeline.orchestration.metadata import PUBLISH_HELD
    from amd_pipeline.orchestration.publishing import AMD_PUBLISHED_KEY

    held = []
    for event in result.all_events:
        observation = event.asset_observation_data.asset_observation if event.is_asset_observation else None
        if (
            observation is not None
            and observation.asset_key == AMD_PUBLISHED_KEY
            and PUBLISH_HELD in observation.metadata
        ):
            held.append(observation.metadata[PUBLISH_HELD].value)
    return held


def _failure_of(result) -> tuple[str, bool]:
    """The sentence a failed run's step gave (its Failure description), and whether windows were deferred."""
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        if data is None:
            continue
        if data.user_failure_data and data.user_failure_data.description:
            deferred = "deferred_windows" in (data.user_failure_data.metadata or {})
            return data.user_failure_data.description.strip(), deferred
        if data.error:
            return data.error.message.strip().splitlines()[-1], False
    for event in result.all_events:
        if event.is_failure and event.message:
            # A run that failed outside its step ("An exception was thrown during execution"): its error's
            # own last line says what it was.
            error = getattr(event.event_specific_data, "error", None)
            cause = error.message.strip().splitlines()[-1] if error and error.message.strip() else ""
            return (f"{event.message.strip()} ({cause})" if cause else event.message.strip()), False
    return "the run failed before its step started", False
