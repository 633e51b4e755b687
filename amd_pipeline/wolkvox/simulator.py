"""A local Wolkvox API: a real HTTP server on loopback for the demo, the tests and development.

It behaves as ``shared/wolkvox-api.md`` documents the vendor: token check, 403 on overlapping requests (each
counted), a daily quota reset at local midnight, the 31-day limit, 404 without data, ``campaign_id=all``,
``campaigns``, ``token_info``, ``Retry-After``. Detections are deterministic per campaign and second
(:func:`truth`), often on a day's first and last second, so a window off by one second or sent in UTC gets
other totals. Faults come at a rate (``fault_rate`` x ``faults``) or queued (``POST /_sim/faults``); the controls,
the stats and ``GET /_sim/requests`` (every API request: when each operation's loads ran) live under ``/_sim/``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import random
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate, pairwise
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

FAULTS = (
    "500",
    "html502",
    "html404",
    "maintenance",
    "busy",
    "429",
    "drop",
    "slow",
    "truncated",
    "code_string",
    "data_object",
)
VENDOR_FORMAT = "%Y%m%d%H%M%S"
MAX_DAYS = 31
SECONDS_PER_DAY = 86400


@dataclasses.dataclass(frozen=True)
class SimCampaign:
    """A campaign of the simulated operation, as ``information.php?api=campaigns`` lists it."""

    campaign_id: str
    name: str
    type_campaign: str = "predictive"
    status: str = "Started"


DEMO_CAMPAIGNS = (
    SimCampaign("20717", "Cobranza temprana"),
    SimCampaign("20718", "Renovaciones"),
    SimCampaign("20731", "Encuestas NPS"),
    SimCampaign("20744", "Agenda manual", type_campaign="preview"),
)


def many_campaigns(count: int) -> tuple[SimCampaign, ...]:
    """``count`` predictive campaigns (ids 30001, 30002, ...): an operation's scale for benchmarks."""
    return tuple(SimCampaign(str(30001 + n), f"Campaign {n + 1}") for n in range(count))


@dataclasses.dataclass
class SimConfig:
    """How the simulator behaves. Every field can be changed at run time with ``POST /_sim/config``."""

    token: str = "demo-token"
    latency_ms: float = 0.0
    daily_quota: int = 1000
    max_in_flight: int = 1
    campaigns: tuple[SimCampaign, ...] = DEMO_CAMPAIGNS
    supports_all: bool = True
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ()
    slow_seconds: float = 2.0
    seed: int = 0
    bad_values: dict[str, str] = dataclasses.field(default_factory=dict)
    retry_after: int = 1  # seconds, sent with busy and 429 answers
    timezone: str = "America/Bogota"  # the operation's wall clock: the quota resets at its midnight
    clock_offset_seconds: float = 0.0  # added to the real time (tests move the simulated day)
    refuse_everything: str | None = None  # "400", "500" or "html404": every API request gets that answer
    restatements: dict[str, int] = dataclasses.field(default_factory=dict)  # "campaign|YYYY-MM-DD" -> added later
    # Count only detections that already happened on the simulated wall clock, as the real server
    # does: today's total grows through the day (the dev demo). Off, a window counts its whole span.
    up_to_now: bool = False
    # Whose server this is: two simulated operations with the same campaign ids have different detections
    # (empty: the numbers every test and benchmark before operations compared with).
    operation: str = ""


# --- ground truth -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _day_profile(campaign_id: str, day: dt.date, operation: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Prefix sums of AMD detections per minute of ``day`` (length 1441), and the pinned seconds.

    Every hour has detections (fewer at night). On most days one more detection sits exactly on
    second 0 and one on second 86399 of the local day: the seconds a wrong window boundary misses.
    """
    # Another operation's campaign 20717 is another campaign: its own detections (a swapped operation shows).
    name = f"{operation}|{campaign_id}" if operation else campaign_id
    seed = int.from_bytes(hashlib.blake2b(f"{name}|{day.isoformat()}".encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    per_minute = [0] * 1440
    pins: list[int] = []
    if day.weekday() != 6 and rng.random() >= 0.08:  # Sundays and ~8% of days: nothing (HTTP 404)
        busy = 1.5 + rng.random() * 2.0
        for minute in range(1440):
            rate = busy * (1.6 if 8 * 60 <= minute < 20 * 60 else 0.8)
            per_minute[minute] = int(rng.random() * rate)
        pins = [second for second in (0, SECONDS_PER_DAY - 1) if rng.random() < 0.75]
    return tuple(accumulate(per_minute, initial=0)), tuple(pins)


def _second_hits(minute: int, count: int, first: int, last: int) -> int:
    """Detections in seconds ``first..last`` of a minute that has ``count`` of them."""
    return sum(1 for s in range(first, last + 1) if (7 * s + minute) % 60 < count)


def _day_total(campaign_id: str, day: dt.date, first: int, last: int, operation: str = "") -> int:
    """Detections in seconds ``first..last`` (inclusive) of ``day``."""
    prefix, pins = _day_profile(campaign_id, day, operation)
    pinned = sum(1 for second in pins if first <= second <= last)
    m0, s0 = divmod(first, 60)
    m1, s1 = divmod(last, 60)

    def count(m: int) -> int:
        return prefix[m + 1] - prefix[m]

    if m0 == m1:
        return pinned + _second_hits(m0, count(m0), s0, s1)
    total = _second_hits(m0, count(m0), s0, 59) + _second_hits(m1, count(m1), 0, s1)
    return pinned + total + prefix[m1] - prefix[m0 + 1]


def truth(campaign_id: str, date_ini: str | dt.datetime, date_end: str | dt.datetime, operation: str = "") -> int:
    """Detections of ``campaign_id`` (of ``operation``: SimConfig.operation) between two inclusive wall-clock times."""
    ini = dt.datetime.strptime(date_ini, VENDOR_FORMAT) if isinstance(date_ini, str) else date_ini
    end = dt.datetime.strptime(date_end, VENDOR_FORMAT) if isinstance(date_end, str) else date_end
    total, day = 0, ini.date()
    while day <= end.date():
        first = (ini - dt.datetime.combine(day, dt.time())).total_seconds() if day == ini.date() else 0
        last = (end - dt.datetime.combine(day, dt.time())).total_seconds() if day == end.date() else SECONDS_PER_DAY - 1
        total += _day_total(campaign_id, day, int(first), int(last), operation)
        day += dt.timedelta(days=1)
    return total


def truth_for_day(campaign_id: str, day: dt.date, operation: str = "") -> int:
    """Detections of ``campaign_id`` (of ``operation``) over the whole wall-clock ``day``."""
    return _day_total(campaign_id, day, 0, SECONDS_PER_DAY - 1, operation)


# --- server -----------------------------------------------------------------------------------


class _State:
    def __init__(self, config: SimConfig):
        self.config = config
        self.lock = threading.Lock()
        self.rng = random.Random(config.seed)
        self.queued_faults: deque[str] = deque()
        self.reset()

    def reset(self) -> None:
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.requests = 0
        self.overlaps = 0
        self.quota_used = 0
        self.quota_day = self.local_today()
        self.statuses: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[float, float, str]] = []  # (start, end, User-Agent) of every API request
        self.requests_log: list[dict[str, Any]] = []  # the same requests, with wall-clock times and what they asked

    def local_today(self) -> dt.date:
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.config.clock_offset_seconds)
        return now.astimezone(ZoneInfo(self.config.timezone)).date()

    def spend_quota(self) -> bool:
        """Count one call against today's quota (reset at local midnight); False when it is spent."""
        today = self.local_today()
        if today != self.quota_day:
            self.quota_day, self.quota_used = today, 0
        if self.quota_used >= self.config.daily_quota:
            return False
        self.quota_used += 1
        return True

    def client_switches(self) -> int:
        """How often consecutive requests (in arrival order) came from different clients.

        Two processes that ran one after the other give 1; processes that really contended for
        the token, their requests interleaved, give many.
        """
        order = [client for _, _, client in sorted(self.log)]
        return sum(1 for a, b in pairwise(order) if a != b)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            # Seconds spent answering API requests (latency plus computing the answer), summed: with one
            # request in flight, the least time any client could have taken to get these answers.
            "busy_seconds": round(sum(end - start for start, end, _ in self.log), 3),
            "overlaps": self.overlaps,
            "max_in_flight_seen": self.max_in_flight_seen,
            "quota_used": self.quota_used,
            "daily_quota": self.config.daily_quota,
            "statuses": dict(self.statuses),
            "faults_injected": dict(self.faults_injected),
            "calls": dict(self.calls),
            "clients": dict(Counter(client for _, _, client in self.log)),
            "client_switches": self.client_switches(),
            "clients_overlap_seconds": self.clients_overlap_seconds(),
        }

    def clients_overlap_seconds(self) -> float:
        """How long every client was active at once (from its first request to its last answer).

        With one request in flight at a time, a positive value means the clients took turns:
        one waited for the token while the other held it.
        """
        spans: dict[str, tuple[float, float]] = {}
        for start, end, client in self.log:
            first, last = spans.get(client, (start, end))
            spans[client] = (min(first, start), max(last, end))
        if len(spans) < 2:
            return 0.0
        return max(0.0, min(e for _, e in spans.values()) - max(s for s, _ in spans.values()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body leave in one segment (no 40 ms delayed-ACK stall)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    # -- plumbing --
    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode())

    def _envelope(
        self, status: int, error: str | None, msg: str, data: Any = None, code: Any = None, headers: dict | None = None
    ) -> None:
        payload: dict[str, Any] = {"code": status if code is None else code, "error": error, "msg": msg}
        if data is not None:
            payload["data"] = data
        self._send(status, json.dumps(payload).encode(), headers=headers)

    # -- control --
    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = urlsplit(self.path).path
        with state.lock:
            if path == "/_sim/reset":
                state.reset()
                state.queued_faults.clear()
            elif path == "/_sim/faults":
                state.queued_faults.extend(body.get("next", []))
            elif path == "/_sim/config":
                for key, value in body.items():
                    if key == "campaigns":
                        value = tuple(SimCampaign(**c) for c in value)
                    elif key == "faults":
                        value = tuple(value)
                    setattr(state.config, key, value)
            else:
                self._json(404, {"error": "unknown control path"})
                return
        self._json(200, state.snapshot())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_sim/stats":
            with self.server.state.lock:
                self._json(200, self.server.state.snapshot())
            return
        if url.path == "/_sim/requests":
            with self.server.state.lock:
                self._json(200, {"requests": list(self.server.state.requests_log)})
            return
        self._api(url.path, {k: v[-1] for k, v in parse_qs(url.query).items()})

    def _api(self, path: str, params: dict[str, str]) -> None:
        state, config = self.server.state, self.server.state.config
        with state.lock:
            state.requests += 1
            overlapping = state.in_flight > 0
            if overlapping:
                state.overlaps += 1
            state.in_flight += 1
            state.max_in_flight_seen = max(state.max_in_flight_seen, state.in_flight)
            too_many = state.in_flight > config.max_in_flight
            fault = None
            if state.queued_faults:
                fault = state.queued_faults.popleft()
            elif config.faults and config.fault_rate > 0 and state.rng.random() < config.fault_rate:
                fault = state.rng.choice(config.faults)
            if fault:
                state.faults_injected[fault] += 1
        status = 0
        started, started_wall = time.monotonic(), time.time()
        try:
            if config.latency_ms:
                time.sleep(config.latency_ms / 1000)
            status = self._answer(path, params, too_many, fault)
        finally:
            with state.lock:
                state.in_flight -= 1
                state.statuses[str(status)] += 1
                client = self.headers.get("User-Agent", "")
                state.log.append((started, time.monotonic(), client))
                state.requests_log.append(
                    {
                        "start": started_wall,
                        "end": time.time(),
                        "client": client,
                        "api": params.get("api", ""),
                        "campaign_id": params.get("campaign_id", ""),
                        "date_ini": params.get("date_ini", ""),
                        "date_end": params.get("date_end", ""),
                        "status": status,
                        "overlapping": overlapping,
                    }
                )

    def _answer(self, path: str, params: dict[str, str], too_many: bool, fault: str | None) -> int:
        state, config = self.server.state, self.server.state.config
        token = self.headers.get("wolkvox-token")
        if not token:
            self._envelope(401, "UNAUTHORIZED", "PLEASE ENTER THE WOLKVOX-TOKEN")
            return 401
        if token != config.token:
            self._envelope(403, "FORBIDDEN", "PLEASE VALIDATE TOKEN")
            return 403
        retry_after = {"Retry-After": str(config.retry_after)}
        if too_many or fault == "busy":
            self._envelope(
                403, "FORBIDDEN", "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)", headers=retry_after
            )
            return 403
        if fault == "429":
            self._envelope(429, "TOO MANY REQUESTS", "TOO MANY REQUESTS", headers=retry_after)
            return 429
        with state.lock:
            quota_left = state.spend_quota()
        if not quota_left:
            self._envelope(403, "FORBIDDEN", "TOKEN LIMIT EXCEEDED")
            return 403
        fault = config.refuse_everything or fault
        if fault == "400":
            self._envelope(400, "BAD REQUEST", "SOME PARAMETERS ARE REQUIRED")
            return 400
        if fault == "500":
            self._envelope(500, "INTERNAL SERVER ERROR", "INTERNAL ERROR")
            return 500
        if fault == "html404":
            self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
            return 404
        if fault == "html502":
            self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return 502
        if fault == "maintenance":
            self._envelope(403, "FORBIDDEN", "THE API IS DISABLED WHILE A BACKUP RUNS")
            return 403
        if fault == "drop":
            self.close_connection = True
            return -1
        if fault == "slow":
            time.sleep(config.slow_seconds)
        if path == "/api/v2/information.php":
            return self._information(params)
        if path != "/api/v2/reports_manager.php" or params.get("api") != "campaign_6":
            self._envelope(400, "BAD REQUEST", "THE API YOU WANT TO CONSULT DOES NOT EXIST")
            return 400
        return self._campaign_6(params, fault)

    def _information(self, params: dict[str, str]) -> int:
        config = self.server.state.config
        self.server.state.calls[f"information:{params.get('api')}"] += 1
        if params.get("api") == "campaigns":
            data = [
                {
                    "campaign_id": c.campaign_id,
                    "campaign_name": c.name,
                    "type_campaign": c.type_campaign,
                    "status": c.status,
                }
                for c in config.campaigns
            ]
            self._envelope(200, None, f"{len(data)} records were found", data, code="")
            return 200
        if params.get("api") == "token_info":
            with self.server.state.lock:
                used = self.server.state.quota_used  # this call included: it was counted a moment ago
            info = {"token_limit": str(config.daily_quota), "token_use_today": str(used)}
            self._envelope(200, None, "1 records were found", [info], code="")
            return 200
        self._envelope(400, "BAD REQUEST", "THE API YOU WANT TO CONSULT DOES NOT EXIST")
        return 400

    def _campaign_6(self, params: dict[str, str], fault: str | None) -> int:
        config = self.server.state.config
        campaign_id = params.get("campaign_id", "")
        if not campaign_id or not params.get("date_ini") or not params.get("date_end"):
            self._envelope(400, "BAD REQUEST", "SOME PARAMETERS ARE REQUIRED")
            return 400
        try:
            ini = dt.datetime.strptime(params["date_ini"], VENDOR_FORMAT)
            end = dt.datetime.strptime(params["date_end"], VENDOR_FORMAT)
        except ValueError:
            self._envelope(400, "BAD REQUEST", "THE DATE FORMAT IS INVALID")
            return 400
        if end < ini or (end - ini) >= dt.timedelta(days=MAX_DAYS):
            self._envelope(400, "BAD REQUEST", f"THE MAXIMUM RANGE OF DAYS TO CONSULT IS {MAX_DAYS}")
            return 400
        if campaign_id == "all":
            self.server.state.calls["campaign_6:all"] += 1
            if not config.supports_all:
                self._envelope(400, "BAD REQUEST", "SOME PARAMETERS ARE REQUIRED")
                return 400
            ids = [c.campaign_id for c in config.campaigns]
        else:
            self.server.state.calls["campaign_6:one"] += 1
            # A campaign the operation does not have has no data, as on the real server.
            ids = [campaign_id] if campaign_id in {c.campaign_id for c in config.campaigns} else []
        if config.up_to_now:
            now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=config.clock_offset_seconds)
            end = min(end, now.astimezone(ZoneInfo(config.timezone)).replace(tzinfo=None, microsecond=0))
        data = []
        for cid in ids:
            total = (truth(cid, ini, end, config.operation) if end >= ini else 0) + sum(
                extra
                for key, extra in config.restatements.items()
                if key.split("|")[0] == cid and ini.date() <= dt.date.fromisoformat(key.split("|")[1]) <= end.date()
            )
            if cid in config.bad_values:
                data.append({"campaign_id": cid, "total_amd": config.bad_values[cid]})
            elif total > 0:  # campaigns with no detections are left out, as Wolkvox is believed to do
                data.append({"campaign_id": cid, "total_amd": str(total)})
        if not data:
            self._envelope(404, "NOT FOUND", "0 records were found", [])
            return 404
        if fault == "truncated":
            body = json.dumps({"code": 200, "error": None, "msg": "", "data": data}).encode()
            self._send(200, body[: len(body) // 2])
            return 200
        payload: Any = data[0] if fault == "data_object" and len(data) == 1 else data
        self._envelope(
            200, None, f"{len(data)} records were are found", payload, code="200" if fault == "code_string" else 200
        )
        return 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _State, verbose: bool):
        self.state = state
        self.verbose = verbose
        super().__init__(address, _Handler)


class Simulator:
    """The simulator, started in a background thread (tests, demo) or served in the foreground (CLI).

    Example:
        >>> with Simulator(SimConfig(token="t", latency_ms=5)) as sim:
        ...     url = sim.url  # point WOLKVOX_BASE_URL here
    """

    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ):
        self.config = config or SimConfig()
        self.state = _State(self.config)
        self._server = _Server((host, port), self.state, verbose)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL the server listens on (``http://host:port``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Simulator:
        """Serve in a background daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="wolkvox-simulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until stopped."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Shut the server down, close its socket and join the background thread (up to 5 s)."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """The counters ``GET /_sim/stats`` answers: requests, overlaps, quota, statuses, calls, clients."""
        with self.state.lock:
            return self.state.snapshot()

    def day_total(self, campaign_id: str, day: dt.date) -> int:
        """What this server answers for ``campaign_id`` over the whole local ``day`` (0 for unknown ids)."""
        config = self.state.config
        if campaign_id not in {c.campaign_id for c in config.campaigns}:
            return 0
        return truth_for_day(campaign_id, day, config.operation) + config.restatements.get(
            f"{campaign_id}|{day.isoformat()}", 0
        )

    def queue_faults(self, *faults: str) -> None:
        """Give the next API requests these faults, in order (as ``POST /_sim/faults``)."""
        with self.state.lock:
            self.state.queued_faults.extend(faults)

    def reset(self) -> None:
        """Zero the counters, the request logs and today's quota use; queued faults stay."""
        with self.state.lock:
            self.state.reset()
