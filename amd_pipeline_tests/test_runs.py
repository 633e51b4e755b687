import datetime as dt

from amd_pipeline.core.plan import Plan
from amd_pipeline.orchestration.cadence import Cadence, calls_per_refresh, refresh_days, ticks_per_day
from amd_pipeline.orchestration.runs import quota_refusal

BOGOTA = "America/Bogota"


def test_ticks_per_day_follow_the_cron():
    assert ticks_per_day("*/5 * * * *", BOGOTA) == 288
    assert ticks_per_day("* * * * *", BOGOTA) == 1440
    assert ticks_per_day("30 4 * * *", BOGOTA) == 1
    assert ticks_per_day("0 8-18 * * 1-5", BOGOTA, dt.date(2026, 11, 27)) == 11


def test_a_refresh_is_one_all_call_or_one_call_per_campaign():
    assert calls_per_refresh(20, use_all=True) == 1
    assert calls_per_refresh(20, use_all=False) == 20
    assert calls_per_refresh(1, use_all=True) == 1
    assert calls_per_refresh(0, use_all=True) == 0


def test_the_issues_example_is_spaced_to_fit_half_the_budget():
    # 20 campaigns, one call each, every 5 minutes = 5,760 calls a day; a 5-license operation has
    # 5,000 calls and this pipeline half of them: 1,250 per day for refreshes, every 24 minutes.
    cadence = Cadence(calls_per_refresh(20, use_all=False), 288, limit=2500)
    assert cadence.calls_per_day == 5760
    assert cadence.min_interval_minutes == 24
    assert "every 24 min to stay within the budget" in cadence.describe()
    assert Cadence(calls_per_refresh(20, use_all=True), 288, limit=2500).min_interval_minutes is None
    assert Cadence(1, 288, limit=None).min_interval_minutes is None


def test_the_first_refresh_after_local_midnight_also_covers_yesterday():
    today = dt.date(2026, 11, 27)
    midnight = dt.datetime(2026, 11, 27, 5, tzinfo=dt.UTC)  # 00:00 in Bogota
    start = dt.date(2026, 1, 1)
    assert refresh_days(today, start, None, BOGOTA) == today - dt.timedelta(days=1)
    assert refresh_days(today, start, midnight - dt.timedelta(minutes=3), BOGOTA) == today - dt.timedelta(days=1)
    assert refresh_days(today, start, midnight + dt.timedelta(minutes=2), BOGOTA) == today
    assert refresh_days(today, today, None, BOGOTA) == today  # no day before AMD_START_DATE


def test_a_quota_other_integrations_overspent_is_refused_without_a_negative_count():
    # token_info said 1205 of 1000 used today: the other integrations overspent the shared quota.
    plan = Plan(windows=180, calls=60, daily_quota=1000, quota_remaining=1000 - 1205)
    refusal = quota_refusal(plan)
    assert refusal.startswith(
        "this load needs 60 calls but the token has already made 1205 of today's 1000 calls (other integrations "
        "share its quota), so none remain today"
    )
    assert "0 calls left today" in plan.describe() and "-205" not in plan.describe()
