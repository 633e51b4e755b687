import datetime as dt
import threading
import time
from zoneinfo import ZoneInfo

import pytest
import requests

from amd_pipeline.wolkvox.simulator import truth, truth_for_day


def get(sim, token, path="/api/v2/reports_manager.php", **params):
    headers = {"wolkvox-token": token} if token else {}
    return requests.get(sim.url + path, params=params, headers=headers, timeout=10)


def c6(sim, token, campaign="20717", ini="20261125000000", end="20261125235959"):
    return get(sim, token, api="campaign_6", campaign_id=campaign, date_ini=ini, date_end=end)


def test_hourly_totals_add_up_to_the_day():
    day = dt.date(2026, 11, 25)
    hours = sum(truth("20718", f"20261125{h:02d}0000", f"20261125{h:02d}5959") for h in range(24))
    assert hours == truth_for_day("20718", day) > 0


def test_a_month_window_equals_the_sum_of_its_days():
    days = sum(truth_for_day("20731", dt.date(2026, 10, d)) for d in range(1, 32))
    assert truth("20731", "20261001000000", "20261031235959") == days


def test_answers_look_like_wolkvox(sim, token):
    body = c6(sim, token).json()
    assert body["code"] == 200
    assert body["data"] == [{"campaign_id": "20717", "total_amd": str(truth_for_day("20717", dt.date(2026, 11, 25)))}]


def test_empty_windows_are_404_envelopes(sim, token):
    response = c6(sim, token, ini="20261122000000", end="20261122235959")  # a Sunday
    assert response.status_code == 404 and response.json()["data"] == []


def test_token_and_parameter_errors(sim, token):
    assert c6(sim, None).status_code == 401
    wrong = c6(sim, "nope")
    assert (wrong.status_code, wrong.json()["msg"]) == (403, "PLEASE VALIDATE TOKEN")
    assert get(sim, token, api="campaign_6").json()["msg"] == "SOME PARAMETERS ARE REQUIRED"
    assert get(sim, token, api="nope").json()["msg"] == "THE API YOU WANT TO CONSULT DOES NOT EXIST"
    assert c6(sim, token, ini="20261001000000", end="20261105000000").status_code == 400


def test_the_daily_quota_is_enforced(sim, token):
    sim.state.config.daily_quota = 2
    assert [c6(sim, token).status_code for _ in range(3)] == [200, 200, 403]
    assert c6(sim, token).json()["msg"] == "TOKEN LIMIT EXCEEDED"


def test_every_hour_of_the_day_has_detections_on_a_working_day():
    hours = [truth("20718", f"20261125{h:02d}0000", f"20261125{h:02d}5959") for h in range(24)]
    assert all(count > 0 for count in hours), hours


def test_most_working_days_have_a_detection_on_their_first_and_last_second():
    days = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(60)]
    first = [d for d in days if truth("20717", *[d.strftime("%Y%m%d000000")] * 2) > 0]
    last = [d for d in days if truth("20717", *[d.strftime("%Y%m%d235959")] * 2) > 0]
    assert len(first) >= 25 and len(last) >= 25


def test_windows_one_second_off_or_in_utc_get_other_totals_than_the_local_days(sim, token):
    """The instrument: the end-to-end comparisons can see a boundary second or a time zone mistake."""
    from zoneinfo import ZoneInfo

    from amd_pipeline.wolkvox.windows import ONE_SECOND, VENDOR_FORMAT, day_window

    bogota = ZoneInfo("America/Bogota")
    days = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(30)]

    def local(instant):
        return instant.astimezone(bogota).strftime(VENDOR_FORMAT)

    wrong = {  # name -> (date_ini, date_end) sent for a window
        "end one second late": lambda w: (w.date_ini, local(w.end)),
        "end one second early": lambda w: (w.date_ini, local(w.end - 2 * ONE_SECOND)),
        "start one second late": lambda w: (local(w.start + ONE_SECOND), w.date_end),
        "UTC instead of local": lambda w: (
            w.start.strftime(VENDOR_FORMAT),
            (w.end - ONE_SECOND).strftime(VENDOR_FORMAT),
        ),
    }
    for name, send in wrong.items():
        differ = 0
        for day in days:
            ini, end = send(day_window(day, bogota))
            body = c6(sim, token, campaign="20731", ini=ini, end=end).json()
            got = int(body["data"][0]["total_amd"]) if body.get("data") else 0
            differ += got != truth_for_day("20731", day)
        assert differ >= 10, f"{name}: only {differ} of 30 days differ"


def test_a_campaign_the_operation_does_not_have_has_no_data(sim, token):
    response = c6(sim, token, campaign="99999")
    assert response.status_code == 404 and response.json()["data"] == []
    assert sim.day_total("99999", dt.date(2026, 11, 25)) == 0


@pytest.mark.parametrize(("fault", "status"), [("busy", 403), ("429", 429)])
def test_busy_answers_carry_retry_after(sim, token, fault, status):
    sim.state.config.retry_after = 4
    sim.queue_faults(fault)
    response = c6(sim, token)
    assert response.status_code == status and response.headers["Retry-After"] == "4"


def test_the_quota_resets_at_the_operations_local_midnight(sim, token):
    now = dt.datetime.now(ZoneInfo("America/Bogota"))
    to_midnight = (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), now.tzinfo) - now).total_seconds()
    sim.state.config.daily_quota = 2
    sim.state.config.clock_offset_seconds = to_midnight - 30  # 23:59:30 local
    assert [c6(sim, token).status_code for _ in range(3)] == [200, 200, 403]
    sim.state.config.clock_offset_seconds = to_midnight - 1  # 23:59:59: still the same day
    assert c6(sim, token).status_code == 403
    sim.state.config.clock_offset_seconds = to_midnight + 1  # 00:00:01 the next day
    assert c6(sim, token).status_code == 200
    info = get(sim, token, path="/api/v2/information.php", api="token_info").json()["data"][0]
    assert info["token_use_today"] == "2"


def test_the_request_log_shows_whether_clients_took_turns(sim, token):
    for agent in ["a", "a", "b", "a", "b"]:
        requests.get(
            sim.url + "/api/v2/information.php",
            params={"api": "campaigns"},
            headers={"wolkvox-token": token, "User-Agent": agent},
            timeout=10,
        )
    stats = sim.stats()
    assert stats["clients"] == {"a": 3, "b": 2} and stats["client_switches"] == 3


def test_the_requests_endpoint_lists_each_call_with_its_window_client_and_wall_clock_span(sim, token):
    before = time.time()
    c6(sim, token, campaign="all", ini="20261125000000", end="20261125235959")
    get(sim, None, path="/api/v2/information.php", api="campaigns")
    listed = requests.get(sim.url + "/_sim/requests", timeout=10).json()["requests"]
    first, second = listed
    assert (first["api"], first["campaign_id"], first["date_ini"], first["date_end"], first["status"]) == (
        "campaign_6",
        "all",
        "20261125000000",
        "20261125235959",
        200,
    )
    assert before <= first["start"] <= first["end"] <= second["start"] <= time.time()
    assert (second["api"], second["status"], second["overlapping"]) == ("campaigns", 401, False)


def test_campaign_all_answers_every_campaign_with_detections(sim, token):
    data = c6(sim, token, campaign="all").json()["data"]
    assert {row["campaign_id"] for row in data} == {"20717", "20718", "20731", "20744"}


def test_overlapping_requests_are_refused_and_counted(sim, token):
    sim.state.config.latency_ms = 300
    statuses = []
    threads = [threading.Thread(target=lambda: statuses.append(c6(sim, token).status_code)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 403]
    assert sim.stats()["overlaps"] == 1


def test_campaign_listing_has_the_documented_fields(sim, token):
    body = get(sim, token, path="/api/v2/information.php", api="campaigns").json()
    assert body["code"] == ""
    assert {"campaign_id", "campaign_name", "type_campaign", "status"} <= set(body["data"][0])


def test_up_to_now_counts_only_what_already_happened_today(token):
    from amd_pipeline.wolkvox.simulator import SimConfig, Simulator

    zone = ZoneInfo("America/Bogota")
    with Simulator(SimConfig(token=token, up_to_now=True)) as sim:
        before = dt.datetime.now(zone).replace(tzinfo=None, microsecond=0)
        today = before.date()
        # a day with detections, so that "so far" and "the whole day" can differ
        answer = c6(sim, token, ini=f"{today:%Y%m%d}000000", end=f"{today:%Y%m%d}235959")
        after = dt.datetime.now(zone).replace(tzinfo=None, microsecond=0)
        tomorrow = today + dt.timedelta(days=1)
        later = c6(sim, token, ini=f"{tomorrow:%Y%m%d}000000", end=f"{tomorrow:%Y%m%d}235959")
    midnight = dt.datetime.combine(today, dt.time())
    got = int(answer.json()["data"][0]["total_amd"]) if answer.status_code == 200 else 0
    assert truth("20717", midnight, before) <= got <= truth("20717", midnight, after)
    assert later.status_code == 404  # nothing has happened tomorrow yet
