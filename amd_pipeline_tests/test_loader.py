import datetime as dt
import threading
import time

import pytest

from amd_pipeline.core.errors import LoadFailedError, RejectedValuesError
from amd_pipeline.core.loader import _Fetcher, load
from amd_pipeline.core.plan import ALL, CampaignAll, Plan, WindowRequest, plan_calls
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox import errors
from amd_pipeline.wolkvox.simulator import truth_for_day
from amd_pipeline.wolkvox.windows import day_window

DAYS = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(10)]


def requests_for(campaigns, days=DAYS):
    return [WindowRequest(c, day_window(d, "America/Bogota")) for d in days for c in campaigns]


def stored(store):
    return store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL")


def assert_matches_truth(frame):
    assert frame.duplicated(["campaign_id", "local_date"]).sum() == 0
    for r in frame.itertuples():
        assert r.total_amd == truth_for_day(r.campaign_id, r.local_date.date())


def test_calls_are_planned_per_window_and_merged_into_all_when_asked():
    reqs = requests_for(["1", "2", "3"], DAYS[:2])
    per_campaign = plan_calls(reqs)
    assert [(c.campaign, c.window.local_date) for c in per_campaign][:3] == [
        ("1", DAYS[0]),
        ("2", DAYS[0]),
        ("3", DAYS[0]),
    ]
    merged = plan_calls(reqs, use_all=True)
    assert [(c.campaign, c.covers) for c in merged] == [(ALL, ("1", "2", "3"))] * 2
    assert [c.campaign for c in plan_calls(requests_for(["1"], DAYS[:2]), use_all=True)] == ["1", "1"]


def test_the_plan_reports_quota_share_days_of_quota_and_eta():
    plan = Plan(windows=1800, calls=1800, daily_quota=1000, quota_remaining=400, median_latency=0.25)
    assert plan.quota_share == 1.8
    assert plan.quota_days == 2
    assert plan.exceeds_remaining
    assert plan.eta_seconds == 450
    assert "1800 calls" in plan.describe() and "180.0% of the daily quota of 1000" in plan.describe()
    assert not Plan(windows=3, calls=1).exceeds_remaining


def test_a_ranged_load_over_many_keys_writes_exactly_the_expected_rows_in_batches(make_client, tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    report = load(make_client(), store, AMD_DAILY, requests_for(["20717", "20718", "20731"]), batch_size=7)
    assert report.rows_written == 30 and report.batches == 5 and report.calls == 30
    rows = stored(store)
    assert len(rows) == 30
    assert_matches_truth(rows)


def test_a_load_interrupted_halfway_leaves_the_table_consistent_and_a_rerun_completes_it(make_client, sim, tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    requests = requests_for(["20717", "20718", "20731"])
    client = make_client()
    real_call = client.amd_accumulated

    def failing_after_13_calls(campaign, window):
        if client.stats.calls >= 13:
            sim.queue_faults("500", "500", "500", "500")  # every retry fails: the client gives up
        return real_call(campaign, window)

    client.amd_accumulated = failing_after_13_calls
    with pytest.raises(LoadFailedError) as caught:
        load(client, store, AMD_DAILY, requests, batch_size=5)
    assert isinstance(caught.value.cause, errors.ServerError)
    partial = stored(store)
    assert len(partial) == 13  # two full batches, plus the 3 windows of the third batch fetched before the failure
    assert_matches_truth(partial)
    assert caught.value.report.rows_written == 13

    load(make_client(), store, AMD_DAILY, requests, batch_size=5)
    rows = stored(store)
    assert len(rows) == 30
    assert_matches_truth(rows)


def test_a_bad_value_in_an_all_answer_rejects_only_that_campaign(make_client, sim, tmp_path):
    sim.state.config.bad_values = {"20718": "12.5"}
    store = AmdStore(tmp_path / "amd.duckdb")
    with pytest.raises(LoadFailedError) as caught:
        load(make_client(), store, AMD_DAILY, requests_for(["20717", "20718"], DAYS[:3]), campaign_all=CampaignAll.ON)
    assert isinstance(caught.value.cause, RejectedValuesError)
    assert len(caught.value.cause.rejects) == 3
    assert "'12.5'" in str(caught.value.cause)
    rows = stored(store)
    assert rows.campaign_id.tolist() == ["20717"] * 3
    assert_matches_truth(rows)


def test_a_spent_quota_stops_the_load_and_keeps_what_was_fetched(make_client, sim, tmp_path):
    sim.state.config.daily_quota = 4
    store = AmdStore(tmp_path / "amd.duckdb")
    with pytest.raises(LoadFailedError) as caught:
        load(make_client(), store, AMD_DAILY, requests_for(["20717"]))
    assert isinstance(caught.value.cause, errors.QuotaExhaustedError)
    assert len(stored(store)) == 4
    assert sim.stats()["requests"] == 5  # the refused one; nothing after it


def test_a_campaign_named_all_never_reaches_the_api(make_client, sim, tmp_path):
    from amd_pipeline.core.errors import SettingsError

    with pytest.raises(LoadFailedError) as caught:
        load(make_client(), AmdStore(tmp_path / "amd.duckdb"), AMD_DAILY, requests_for(["20717", "all"]))
    assert isinstance(caught.value.cause, SettingsError)
    assert sim.stats()["requests"] == 0


def test_the_loader_cannot_loop_even_if_the_fallback_makes_no_progress(make_client, sim, tmp_path, monkeypatch):
    """The old bug: a fallback that rebuilt the very call the server refused, until the quota was gone."""
    import amd_pipeline.core.loader as loader
    from amd_pipeline.core.plan import call_allowance

    monkeypatch.setattr(loader, "per_campaign", lambda calls: list(calls))  # the fallback now repeats itself
    sim.state.config.supports_all = False
    requests = requests_for(["20717", "20718", "20731"], DAYS[:2])
    with pytest.raises(LoadFailedError) as caught:
        load(make_client(), AmdStore(tmp_path / "amd.duckdb"), AMD_DAILY, requests, campaign_all=CampaignAll.AUTO)
    assert isinstance(caught.value.cause, errors.CallLimitError)
    allowed = call_allowance(requests, CampaignAll.AUTO, max_attempts=4)
    assert allowed == (1 + 6) * 4
    assert sim.stats()["requests"] == allowed


@pytest.mark.parametrize("refusal", ["400", "500", "html404"])
def test_a_server_that_refuses_everything_costs_at_most_the_plan(make_client, sim, tmp_path, refusal):
    from amd_pipeline.core.plan import call_allowance

    sim.state.config.refuse_everything = refusal
    requests = requests_for(["20717", "20718", "20731"], DAYS[:5])
    with pytest.raises(LoadFailedError):
        load(make_client(), AmdStore(tmp_path / "amd.duckdb"), AMD_DAILY, requests, campaign_all=CampaignAll.AUTO)
    assert 0 < sim.stats()["requests"] <= call_allowance(requests, CampaignAll.AUTO, max_attempts=4)


def test_the_fallback_also_follows_a_404_that_is_not_wolkvoxs(make_client, sim, tmp_path):
    sim.queue_faults("html404")  # a proxy's 404 page for the `all` call
    store = AmdStore(tmp_path / "amd.duckdb")
    refused = []
    report = load(
        make_client(),
        store,
        AMD_DAILY,
        requests_for(["20717", "20718"], DAYS[:3]),
        campaign_all=CampaignAll.AUTO,
        on_all_refused=lambda: refused.append(1),
    )
    assert refused == [1] and report.all_calls == 0 and report.calls == 1 + 6
    assert_matches_truth(stored(store))


def test_a_locked_file_is_waited_for_once_not_once_per_flush(make_client, sim, tmp_path):
    import subprocess
    import sys

    from amd_pipeline.core.errors import StoreLockedError

    path = tmp_path / "amd.duckdb"
    waits: list[float] = []
    store = AmdStore(path, lock_timeout=2.0, sleep=waits.append)
    client = make_client()
    real_call, holder = client.amd_accumulated, []

    def call_then_lock(campaign, window):
        answer = real_call(campaign, window)
        if not holder:  # after the first call, another process takes the file and keeps it
            script = (
                f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('locked', flush=True); "
                "sys.stdin.readline()"
            )
            holder.append(
                subprocess.Popen(
                    [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
            )
            assert holder[0].stdout.readline().strip() == "locked"
        return answer

    client.amd_accumulated = call_then_lock
    try:
        with pytest.raises(LoadFailedError) as caught:
            load(client, store, AMD_DAILY, requests_for(["20717"], DAYS), batch_size=2)
    finally:
        for process in holder:
            process.communicate("\n", timeout=10)
    assert isinstance(caught.value.cause, StoreLockedError)
    assert 2.0 <= sum(waits) < 4.0  # one wait of the lock timeout; the old code waited again in `finally`
    # The load stopped at the batch it could not write: the calls fetched ahead meanwhile are bounded
    # (the batch's 2, the 2 answers waiting, the one in flight when the queue filled), not the 10 planned.
    assert _Fetcher.AHEAD == 2 and 2 <= sim.stats()["requests"] <= 5


def test_the_budget_stops_the_load_writes_what_was_fetched_and_defers_the_rest(make_client, sim, tmp_path):
    from amd_pipeline.core.budget import CallLedger

    ledger = CallLedger(tmp_path / "k.calls.json", "America/Bogota")
    client = make_client(before_call=lambda: ledger.charge("backfill", 4))
    store = AmdStore(tmp_path / "amd.duckdb")
    requests = requests_for(["20717", "20718"], DAYS[:5])
    with pytest.raises(LoadFailedError) as caught:
        load(client, store, AMD_DAILY, requests, campaign_all=CampaignAll.ON, request_tags={"source": "backfill"})
    assert isinstance(caught.value.cause, errors.BudgetExhaustedError)
    assert sim.stats()["requests"] == 4
    assert len(stored(store)) == 8 and len(caught.value.report.deferred) == 2
    assert {r.window.local_date for r in caught.value.report.deferred} == {DAYS[4]}
    assert_matches_truth(stored(store))
    attempts = store.query("SELECT source, api, campaign, attempt, http_status, outcome FROM api_requests")
    assert attempts.values.tolist() == [["backfill", "campaign_6", "all", 1, 200, "ok"]] * 4


def test_every_http_attempt_is_in_the_request_ledger_and_the_token_is_not(make_client, sim, tmp_path, token):
    sim.queue_faults("500", "busy")
    store = AmdStore(tmp_path / "amd.duckdb")
    load(make_client(), store, AMD_DAILY, requests_for(["20717"], DAYS[:3]), request_tags={"run_id": "r1"})
    ledger = store.query("SELECT run_id, date_ini, attempt, http_status, outcome, bytes FROM api_requests ORDER BY ALL")
    assert len(ledger) == sim.stats()["requests"] == 5
    assert ledger.outcome.tolist().count("ServerError") == 1 and ledger.outcome.tolist().count("TokenBusyError") == 1
    assert set(ledger.run_id) == {"r1"} and ledger.attempt.max() == 3 and (ledger.bytes > 0).all()
    assert token.encode() not in (tmp_path / "amd.duckdb").read_bytes()


def test_todays_row_is_partial_and_a_closed_days_is_final(make_client, tmp_path):
    today = dt.datetime.now(dt.UTC).astimezone(day_window(DAYS[0], "America/Bogota").tz).date()
    store = AmdStore(tmp_path / "amd.duckdb")
    load(make_client(), store, AMD_DAILY, requests_for(["20717"], [today - dt.timedelta(days=1), today]))
    rows = store.query("SELECT local_date, is_final FROM amd_daily ORDER BY local_date")
    assert rows.is_final.tolist() == [True, False]


def test_skip_final_fetches_only_what_is_not_final(make_client, sim, tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    load(make_client(), store, AMD_DAILY, requests_for(["20717"], DAYS[:3]))
    sim.reset()
    report = load(make_client(), store, AMD_DAILY, requests_for(["20717"], DAYS[:5]), skip_final=True)
    assert report.skipped == 3 and sim.stats()["requests"] == 2
    assert len(stored(store)) == 5


def backfill_run(make_client, store, campaign, backfill, run_id, days=DAYS):
    """One run of a backfill as Dagster splits a UI backfill: one campaign, every day."""
    reqs = requests_for([campaign], days)
    return load(
        make_client(),
        store,
        AMD_DAILY,
        reqs,
        campaign_all=CampaignAll.AUTO,
        prefer_all=True,
        in_hand=store.answers_in_hand(backfill, [r.window for r in reqs]),
        request_tags={"source": "ui", "run_id": run_id, "backfill_id": backfill},
    )


def test_later_runs_of_a_backfill_take_closed_windows_from_the_all_answers_it_already_has(make_client, sim, tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    first = backfill_run(make_client, store, "20717", "b1", "r1")
    # One campaign in the run, yet one campaign_id=all call a day: its answer covers the other runs too.
    assert sim.stats()["calls"] == {"campaign_6:all": 10} and first.from_answers == 0
    kept = store.query("SELECT campaign_id, total_amd, backfill_id, run_id, api_campaign FROM api_answers")
    assert set(kept.campaign_id.dropna()) >= {"20717", "20718", "20731"}  # the whole answer, not just 20717
    assert set(kept.backfill_id) == {"b1"} and set(kept.api_campaign) == {"all"}
    for run, campaign in enumerate(["20718", "20731"], start=2):
        report = backfill_run(make_client, store, campaign, "b1", f"r{run}")
        assert (report.from_answers, report.calls, report.rows_written) == (10, 0, 10)
    assert sim.stats()["requests"] == 10  # 30 windows, 10 calls
    rows = stored(store)
    assert len(rows) == 30
    assert_matches_truth(rows)
    # A window that was open when its answer came is never served from it, and a new backfill asks again.
    today = dt.datetime.now(dt.UTC).astimezone(day_window(DAYS[0], "America/Bogota").tz).date()
    backfill_run(make_client, store, "20717", "b1", "r4", days=[today])
    assert store.answers_in_hand("b1", [day_window(today, "America/Bogota")]) == {}
    assert store.answers_in_hand("b2", [r.window for r in requests_for(["20718"])]) == {}
    assert len(store.answers_in_hand("b1", [r.window for r in requests_for(["20718"])])) == 10


def test_a_bad_value_in_an_answer_in_hand_is_rejected_as_if_it_had_just_arrived(make_client, sim, tmp_path):
    sim.state.config.bad_values = {"20718": "12.5"}
    store = AmdStore(tmp_path / "amd.duckdb")
    backfill_run(make_client, store, "20717", "b1", "r1", DAYS[:3])
    with pytest.raises(LoadFailedError) as caught:
        backfill_run(make_client, store, "20718", "b1", "r2", DAYS[:3])
    assert isinstance(caught.value.cause, RejectedValuesError) and len(caught.value.cause.rejects) == 3
    assert "campaign 20718" in str(caught.value.cause) and "'12.5'" in str(caught.value.cause)
    assert sim.stats()["requests"] == 3 and set(stored(store).campaign_id) == {"20717"}  # never a silent 0


def test_the_next_call_is_made_while_a_batch_is_written(make_client, sim, tmp_path):
    # The calls run in a thread of their own: a write (here made to take 0.3 s) no longer holds them up.
    # Each call takes 0.15 s at the simulator, so a call started between two writes is still in flight
    # when the next write starts: with the old loop (every call, then its write) none overlaps a write.
    sim.state.config.latency_ms = 150
    store = AmdStore(tmp_path / "amd.duckdb")
    client = make_client()
    real_call, real_replace = client.amd_accumulated, store.replace
    calls, writes = [], []

    def call(campaign, window):
        began = time.monotonic()
        answer = real_call(campaign, window)
        calls.append((began, time.monotonic()))
        return answer

    def slow_replace(*args, **kwargs):
        began = time.monotonic()
        time.sleep(0.3)
        written = real_replace(*args, **kwargs)
        writes.append((began, time.monotonic()))
        return written

    client.amd_accumulated, store.replace = call, slow_replace
    report = load(client, store, AMD_DAILY, requests_for(["20717"], DAYS[:6]), batch_size=1)
    assert report.rows_written == 6 and len(calls) == 6
    assert_matches_truth(stored(store))
    overlapping = [c for c in calls if any(c[0] < w[1] and w[0] < c[1] for w in writes)]
    assert overlapping, f"no call was in flight while a batch was written: calls {calls}, writes {writes}"


def test_a_batch_is_also_written_after_batch_seconds(make_client, tmp_path):
    # Few windows a call (one campaign) would make a batch of 2,500 wait long: time bounds it too.
    ticks = iter(range(0, 10_000, 6))  # each look at the clock is 6 s later: every second take writes
    store = AmdStore(tmp_path / "amd.duckdb")
    report = load(
        make_client(), store, AMD_DAILY, requests_for(["20717"], DAYS), batch_size=2500, clock=lambda: next(ticks)
    )
    assert report.rows_written == 10 and 4 <= report.batches <= 6
    assert_matches_truth(stored(store))


def test_a_load_that_stops_does_not_wait_for_the_fetchers_retries(make_client, sim, tmp_path):
    # The write fails while the fetcher waits to retry a 500 (minutes, with the real sleep): the load
    # ends anyway, and the fetcher makes no further attempt (a run interrupted while the server is gone).
    from amd_pipeline.wolkvox.client import RetryPolicy

    store = AmdStore(tmp_path / "amd.duckdb")
    client = make_client(sleep=time.sleep, retry=RetryPolicy(max_attempts=6, base_delay=600.0, max_delay=600.0))
    real_call = client.amd_accumulated

    def call(campaign, window):
        if client.stats.calls == 1:
            sim.queue_faults(*["500"] * 6)  # every later attempt fails: the fetcher backs off 5-10 min, ...
        return real_call(campaign, window)

    def failing_replace(*args, **kwargs):
        deadline = time.monotonic() + 60
        while sim.stats()["requests"] < 2 and time.monotonic() < deadline:  # the failed attempt was made
            time.sleep(0.01)
        raise RuntimeError("disk full")

    client.amd_accumulated, store.replace = call, failing_replace
    failed = []

    def run():
        with pytest.raises(LoadFailedError):
            load(client, store, AMD_DAILY, requests_for(["20717"], DAYS), batch_size=1)
        failed.append(True)

    loading = threading.Thread(target=run, daemon=True)
    loading.start()
    loading.join(120)  # without the wait cut short, the load would sit out 5-10 min of retry wait
    assert not loading.is_alive() and failed == [True]
    # The load joined its fetcher, so nothing calls after it returned: the first answer and the failed
    # attempt, no retry.
    assert sim.stats()["requests"] == 2
