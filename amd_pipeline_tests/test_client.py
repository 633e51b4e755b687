import datetime as dt
import json
import random
import time

import pytest

from amd_pipeline.wolkvox import errors
from amd_pipeline.wolkvox.client import RetryPolicy, Timeouts, WolkvoxClient, map_response
from amd_pipeline.wolkvox.simulator import truth
from amd_pipeline.wolkvox.windows import day_window

WINDOW = day_window(dt.date(2026, 11, 25), "America/Bogota")  # a Wednesday with detections
REQ = "campaign 20717, window 2026-11-25"


def envelope(code, msg, data=None, error=None) -> bytes:
    body = {"code": code, "error": error, "msg": msg}
    if data is not None:
        body["data"] = data
    return json.dumps(body).encode()


# --- the error table, row by row (pure) -------------------------------------------------------

ERROR_TABLE = [
    (400, envelope(400, "THE API YOU WANT TO CONSULT DOES NOT EXIST"), errors.BadRequestError),
    (400, envelope(400, "SOME PARAMETERS ARE REQUIRED"), errors.BadRequestError),
    (401, envelope(401, "PLEASE ENTER THE WOLKVOX-TOKEN"), errors.MissingTokenError),
    (403, envelope(403, "PLEASE VALIDATE TOKEN"), errors.InvalidTokenError),
    (403, envelope(403, "TOKEN LIMIT EXCEEDED"), errors.QuotaExhaustedError),
    (403, envelope(403, "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)"), errors.TokenBusyError),
    (403, envelope(403, "THE SERVICE IS UNDER MAINTENANCE"), errors.MaintenanceError),
    (500, envelope(500, "INTERNAL ERROR"), errors.ServerError),
    (502, b"<html><body>502 Bad Gateway</body></html>", errors.ServerError),
    (503, b"", errors.ServerError),
    (200, b"<!DOCTYPE html><html>proxy login</html>", errors.BadBodyError),
    (200, b'{"code": 200, "msg": "1 records", "data": [{"campaign_id": "1"', errors.BadBodyError),
    (200, b"not json at all", errors.BadBodyError),
    (200, envelope(200, "ok", data="oops"), errors.BadBodyError),
    (404, b"<html>Not Found</html>", errors.UnexpectedResponseError),
    (418, envelope(418, "I AM A TEAPOT"), errors.UnexpectedResponseError),
    (200, envelope("403", "PLEASE VALIDATE TOKEN"), errors.InvalidTokenError),  # status inside a 200
]


@pytest.mark.parametrize(("status", "body", "error"), ERROR_TABLE)
def test_each_answer_maps_to_its_error_class(status, body, error):
    with pytest.raises(error) as caught:
        map_response(status, body, request=REQ)
    assert REQ in str(caught.value)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (errors.BadRequestError, False),
        (errors.MissingTokenError, False),
        (errors.InvalidTokenError, False),
        (errors.UnexpectedResponseError, False),
        (errors.QuotaExhaustedError, False),
        (errors.TokenBusyError, True),
        (errors.MaintenanceError, True),
        (errors.ServerError, True),
        (errors.BadBodyError, True),
        (errors.TransportError, True),
    ],
)
def test_only_transient_errors_are_retryable(error, retryable):
    assert issubclass(error, errors.RetryableError) is retryable
    assert error.retryable is retryable


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (
            envelope(200, "1 records were found", [{"campaign_id": "1", "total_amd": "5"}]),
            ({"campaign_id": "1", "total_amd": "5"},),
        ),
        (
            envelope("200", "1 records were are found", {"campaign_id": "1", "total_amd": "5"}),
            ({"campaign_id": "1", "total_amd": "5"},),
        ),
        (envelope("", "0 records", []), ()),
        (envelope(200, "no data key"), ()),
    ],
)
def test_success_answers_give_rows_whatever_the_code_type_or_data_shape(body, rows):
    assert map_response(200, body, request=REQ) == rows


def test_a_404_wolkvox_envelope_means_no_rows():
    assert map_response(404, envelope(404, "0 records were found", []), request=REQ) is None


def test_backoff_grows_exponentially_with_bounded_jitter():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, maintenance_delay=30.0)
    rng = random.Random(3)
    busy = errors.TokenBusyError("busy")
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        wait = policy.delay(retry, busy, rng)
        assert ceiling / 2 <= wait <= ceiling
    assert policy.delay(1, errors.MaintenanceError("m"), rng) >= 30.0
    assert policy.delay(1, errors.TokenBusyError("b", retry_after=5.0), rng) >= 5.0


# --- against the simulator (a real socket) ----------------------------------------------------


def test_a_day_total_equals_the_simulators_ground_truth(make_client):
    answer = make_client().amd_accumulated("20717", WINDOW)
    expected = truth("20717", WINDOW.date_ini, WINDOW.date_end)
    assert expected > 0
    assert answer.rows == ({"campaign_id": "20717", "total_amd": str(expected)},)
    assert not answer.empty
    assert answer.attempts == 1


def test_a_window_without_detections_is_an_empty_answer(make_client):
    sunday = day_window(dt.date(2026, 11, 22), "America/Bogota")
    answer = make_client().amd_accumulated("20717", sunday)
    assert answer.empty and answer.rows == ()


@pytest.mark.parametrize("fault", ["500", "html502", "maintenance", "busy", "429", "drop", "truncated"])
def test_each_transient_fault_is_retried_then_succeeds(make_client, sim, fake_sleep, fault):
    sim.queue_faults(fault)
    client = make_client()
    answer = client.amd_accumulated("20717", WINDOW)
    assert answer.rows[0]["total_amd"] == str(truth("20717", WINDOW.date_ini, WINDOW.date_end))
    assert answer.attempts == 2
    assert client.stats.retries == 1
    assert len(fake_sleep.waits) == 1


@pytest.mark.parametrize("fault", ["code_string", "data_object"])
def test_vendor_quirks_are_not_errors(make_client, sim, fault):
    sim.queue_faults(fault)
    answer = make_client().amd_accumulated("20717", WINDOW)
    assert answer.rows[0]["campaign_id"] == "20717"
    assert answer.attempts == 1


def test_a_slow_answer_times_out_and_is_retried_once_the_server_is_free(make_client, sim):
    # The server keeps working on a request the client gave up on, so the first retries may find
    # the token busy; backoff (really sleeping here) waits it out.
    sim.state.config.slow_seconds = 1.0
    sim.queue_faults("slow")
    client = make_client(
        timeouts=Timeouts(connect=2.0, read=0.4), retry=RetryPolicy(max_attempts=8, base_delay=0.2), sleep=time.sleep
    )
    answer = client.amd_accumulated("20717", WINDOW)
    assert answer.rows[0]["total_amd"] == str(truth("20717", WINDOW.date_ini, WINDOW.date_end))
    assert answer.attempts >= 2


def test_retries_give_up_after_max_attempts_with_a_message_naming_the_request(make_client, sim, fake_sleep):
    sim.queue_faults("500", "500", "500", "500")
    with pytest.raises(errors.ServerError, match=r"campaign 20717, window 2026-11-25.*gave up after 4 attempts"):
        make_client().amd_accumulated("20717", WINDOW)
    assert len(fake_sleep.waits) == 3


def test_a_wrong_token_fails_fast_without_retry_and_without_the_token_in_the_message(make_client, sim):
    wrong = "SECRET-wrong-token-value"
    with pytest.raises(errors.InvalidTokenError) as caught:
        make_client(token_value=wrong).amd_accumulated("20717", WINDOW)
    assert sim.stats()["requests"] == 1
    assert wrong not in str(caught.value) and "20717" in str(caught.value)


def test_a_spent_quota_stops_all_further_calls(make_client, sim):
    sim.state.config.daily_quota = 1
    client = make_client()
    client.amd_accumulated("20717", WINDOW)
    with pytest.raises(errors.QuotaExhaustedError):
        client.amd_accumulated("20718", WINDOW)
    with pytest.raises(errors.QuotaExhaustedError, match="not calling"):
        client.amd_accumulated("20731", WINDOW)
    assert sim.stats()["requests"] == 2


def test_a_window_over_31_days_is_a_bad_request(make_client):
    long = day_window(dt.date(2026, 1, 1), "America/Bogota")
    too_long = type(long)(
        start=long.start, end=long.start + dt.timedelta(days=40), tz=long.tz, local_date=long.local_date
    )
    with pytest.raises(errors.BadRequestError, match="31 days"):
        make_client().amd_accumulated("20717", too_long)


def test_an_unreachable_host_is_a_transport_error_in_words_after_retries(fake_sleep, token):
    client = WolkvoxClient("http://127.0.0.1:9", token, retry=RetryPolicy(max_attempts=2), sleep=fake_sleep)
    with pytest.raises(errors.TransportError) as caught:
        client.amd_accumulated("20717", WINDOW)
    assert caught.value.reason == "connection refused" and caught.value.attempts == 2
    assert "could not reach http://127.0.0.1:9 (connection refused)" in str(caught.value)
    assert "HTTPConnectionPool" not in str(caught.value)
    assert token not in str(caught.value)
    assert token not in repr(client)


@pytest.mark.parametrize("fault", ["busy", "429"])
def test_a_busy_answer_is_retried_no_sooner_than_its_retry_after(make_client, sim, fake_sleep, fault):
    sim.state.config.retry_after = 7
    sim.queue_faults(fault)
    answer = make_client(retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=60)).amd_accumulated(
        "20717", WINDOW
    )
    assert answer.attempts == 2
    assert 7 <= fake_sleep.waits[0] <= 8  # the backoff alone would wait about 10 ms


def test_retry_after_is_capped_by_the_longest_backoff(make_client, sim, fake_sleep):
    sim.state.config.retry_after = 3600
    sim.queue_faults("busy")
    make_client(retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=20)).amd_accumulated("20717", WINDOW)
    assert fake_sleep.waits == [20]


def test_a_maintenance_answer_waits_at_least_the_maintenance_delay(make_client, sim, fake_sleep):
    sim.queue_faults("maintenance", "maintenance")
    policy = RetryPolicy(max_attempts=4, base_delay=0.01, maintenance_delay=45.0)
    assert make_client(retry=policy).amd_accumulated("20717", WINDOW).attempts == 3
    assert len(fake_sleep.waits) == 2 and all(45.0 <= w < 46 for w in fake_sleep.waits)


def test_the_client_never_makes_more_calls_than_it_is_allowed(make_client, sim):
    client = make_client(max_calls=3)
    sim.queue_faults("500", "500", "500", "500", "500")
    with pytest.raises(errors.CallLimitError, match="3 calls its plan allows"):
        client.amd_accumulated("20717", WINDOW)
    assert sim.stats()["requests"] == 3


def test_campaign_listing_returns_the_operations_campaigns(make_client):
    rows = make_client().campaigns()
    assert {r["campaign_id"] for r in rows} >= {"20717", "20718", "20731"}
