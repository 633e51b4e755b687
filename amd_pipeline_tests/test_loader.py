import datetime as dt

import pytest

from amd_pipeline.loader import (
    ALL,
    CampaignAll,
    LoadFailedError,
    Plan,
    RejectedValuesError,
    WindowRequest,
    load,
    plan_calls,
)
from amd_pipeline.simulator import truth_for_day
from amd_pipeline.store import AMD_DAILY, AmdStore
from amd_pipeline.windows import day_window
from amd_pipeline.wolkvox import errors

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
