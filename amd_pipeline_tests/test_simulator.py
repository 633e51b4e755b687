import datetime as dt
import threading

import requests

from amd_pipeline.simulator import truth, truth_for_day


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
