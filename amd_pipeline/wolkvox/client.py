"""HTTP client for Wolkvox's reports API (campaign_6) and campaign listing.

One request at a time goes through ``lease`` (the token guard), retries happen outside it, and
every answer is turned into data or an exception by :func:`map_response`, the only place where
HTTP status and body decide what an answer means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import requests

from amd_pipeline.wolkvox import errors
from amd_pipeline.wolkvox.models import Answer, CallStats
from amd_pipeline.wolkvox.windows import Window

REPORTS_PATH = "/api/v2/reports_manager.php"
INFORMATION_PATH = "/api/v2/information.php"
USER_AGENT = "amd_pipeline"


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection and for the answer (the server gives up after 60 s)."""

    connect: float = 10.0
    read: float = 75.0


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for :class:`~amd_pipeline.wolkvox.errors.RetryableError`.

    The n-th retry waits ``d/2 + uniform(0, d/2)`` with ``d = min(max_delay, base_delay * 2**(n-1))``,
    at least ``maintenance_delay`` when the API says it is in maintenance, and at least what a
    ``Retry-After`` header asks for (capped by ``max_delay``).
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    maintenance_delay: float = 30.0

    def delay(self, retry_number: int, error: errors.RetryableError, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry_number`` (from 1) after ``error``."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry_number - 1))
        wait = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if isinstance(error, errors.MaintenanceError):
            wait = max(wait, self.maintenance_delay)
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_delay))
        return wait


def _transport_reason(exc: requests.RequestException, timeouts: Timeouts) -> str:
    """What a failed connection looked like, in words."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {timeouts.connect:g} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within {timeouts.read:g} s"
    text = str(exc).lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("name resolution", "host name not found"),
        ("getaddrinfo", "host name not found"),
        ("certificate", "TLS certificate rejected"),
        ("ssl", "TLS handshake failed"),
        ("reset", "connection reset"),
        ("aborted", "connection closed before an answer"),
        ("remote end closed", "connection closed before an answer"),
    ):
        if needle in text:
            return reason
    return f"connection failed ({type(exc).__name__})"


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _describe_body(body: bytes, content_type: str) -> str:
    head = body[:200].decode("utf-8", "replace").strip()
    if "html" in content_type.lower() or head.lower().startswith(("<!doctype", "<html")):
        return f"an HTML page ({len(body)} bytes)"
    if not head:
        return "an empty body"
    return f"a non-JSON body ({len(body)} bytes, starts {head[:40]!r})"


def _retry_after(headers: dict[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After", "")
    try:
        return float(value)
    except ValueError:
        return None


def map_response(
    status: int,
    body: bytes,
    *,
    request: str,
    content_type: str = "",
    headers: dict[str, str] | None = None,
    token_env: str = "WOLKVOX_TOKEN",
) -> tuple[dict[str, Any], ...] | None:
    """Decide what one HTTP answer means: rows, "no rows", or an exception.

    Args:
        status: the HTTP status code.
        body: the raw body.
        request: a label naming the request (campaign and window) for error messages.
        content_type: the Content-Type header, to name HTML pages in errors.
        headers: response headers (``Retry-After`` is honoured).
        token_env: the variable the token came from, named by a token error (an operation has its own).

    Returns:
        The ``data`` rows as a tuple of dicts (empty when ``data`` is ``[]`` or absent), or ``None``
        for a Wolkvox "no rows" answer (HTTP 404 with a Wolkvox envelope).

    Raises:
        errors.WolkvoxError: a subclass chosen by the table in ``errors``' docstring.
    """
    payload = _parse_json(body)
    envelope = payload if isinstance(payload, dict) and ("code" in payload or "msg" in payload) else None
    msg = str(envelope.get("msg") or "").strip() if envelope else ""
    code = str(envelope.get("code", "")).strip() if envelope else ""
    # Some Wolkvox endpoints answer HTTP 200 and put the real status in `code` (as int or text).
    effective = int(code) if code.isdigit() and int(code) >= 300 else status
    what = f"HTTP {effective}" + (f" {msg!r}" if msg else "")
    kw = {"request": request, "status": effective, "vendor_msg": msg}

    if effective >= 500:
        shown = what if envelope else f"HTTP {status} with {_describe_body(body, content_type)}"
        raise errors.ServerError(shown, retry_after=_retry_after(headers), **kw)
    if effective == 404:
        if envelope is None:
            raise errors.UnexpectedResponseError(
                f"HTTP 404 with {_describe_body(body, content_type)}, not a Wolkvox answer: is the base URL right?",
                **kw,
            )
        return None
    if effective == 400:
        raise errors.BadRequestError(f"{what}: the request is malformed (a bug, or a window over 31 days)", **kw)
    if effective == 401:
        raise errors.MissingTokenError(f"{what}: no token was sent; set {token_env}", token_env=token_env, **kw)
    if effective == 403:
        upper = msg.upper()
        if "VALIDATE TOKEN" in upper:
            raise errors.InvalidTokenError(
                f"{what}: the token is wrong or expired; check {token_env}", token_env=token_env, **kw
            )
        if "TOKEN LIMIT EXCEEDED" in upper:
            raise errors.QuotaExhaustedError(f"{what}: the daily quota is spent; no more calls today", **kw)
        if "SIMULTANEOUS" in upper:
            raise errors.TokenBusyError(f"{what}: the token is busy", retry_after=_retry_after(headers), **kw)
        shown = what if envelope else f"HTTP 403 with {_describe_body(body, content_type)}"
        raise errors.MaintenanceError(f"{shown}: treated as maintenance", retry_after=_retry_after(headers), **kw)
    if effective == 429:
        raise errors.TokenBusyError(f"{what}: too many requests", retry_after=_retry_after(headers), **kw)
    if effective == 408:
        raise errors.TransportError(f"{what}: request timeout", **kw)
    if effective >= 300:
        raise errors.UnexpectedResponseError(f"{what}: not an answer the Wolkvox API documents", **kw)
    if envelope is None:
        raise errors.BadBodyError(f"HTTP {status} with {_describe_body(body, content_type)}", **kw)
    data = envelope.get("data")
    if data is None:
        return ()
    if isinstance(data, dict):
        return (data,)
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return tuple(data)
    raise errors.BadBodyError(f"HTTP {status}: `data` is neither a list of objects nor an object", **kw)


class WolkvoxClient:
    """Calls the Wolkvox API with one token, one request at a time, retrying what is transient.

    Args:
        base_url: ``https://wv{server}.wolkvox.com`` or a simulator's URL.
        token: the ``wolkvox-token``; kept out of every message and repr.
        timeouts: connect and read timeouts.
        retry: the backoff policy.
        lease: a factory of context managers held around each HTTP attempt (the token guard).
        session: a ``requests.Session`` (one is made otherwise).
        sleep: waits between retries (tests pass a fake).
        rng: randomness for jitter (tests pass a seeded one).
        clock: monotonic clock for latencies.
        now: wall clock (UTC) for ``received_at``.
        max_calls: most HTTP attempts this client may make (``None``: no limit); the loader sets it to
            the plan's calls x attempts, so no bug can turn a load into a loop that spends the quota.
        before_call: called before every HTTP attempt; it may refuse the attempt by raising
            (the daily call budget: :meth:`amd_pipeline.core.budget.CallLedger.charge`).

    Every attempt is also recorded in :attr:`attempts` (for the ``api_requests`` ledger), the token never.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy = RetryPolicy(),
        lease: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_calls: int | None = None,
        before_call: Callable[[], object] = lambda: None,
        token_env: str = "WOLKVOX_TOKEN",
    ):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.token_env = token_env  # the variable the token came from: what a token error tells people to check
        self.timeouts = timeouts
        self.retry = retry
        self._lease = lease
        self._session = session or requests.Session()
        self._sleep = sleep
        self._stopped = threading.Event()
        self._rng = rng or random.Random()
        self._clock = clock
        self._now = now
        self.stats = CallStats()
        self.quota_exhausted = False
        self.max_calls = max_calls
        self._before_call = before_call
        self.attempts: list[dict[str, Any]] = []
        self.token_info_today: dict[str, int] | None = None  # set by whoever asked token_info for this client

    def __repr__(self) -> str:
        return f"WolkvoxClient(base_url={self.base_url!r}, token=<redacted>)"

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def stop(self) -> None:
        """Make no attempt after this one (from any thread); a retry wait ends now and raises ``StoppedError``.

        The loader calls it when a load ends early (a failed write, Ctrl-C), so its calling thread does not
        go on retrying a server that went away.
        """
        self._stopped.set()

    def amd_accumulated(self, campaign_id: str, window: Window) -> Answer:
        """AMD totals of ``campaign_id`` (or ``"all"``) over ``window``: one campaign_6 call."""
        params = {
            "api": "campaign_6",
            "campaign_id": campaign_id,
            "date_ini": window.date_ini,
            "date_end": window.date_end,
        }
        rows, attempts, received_at = self._get(REPORTS_PATH, params, f"campaign {campaign_id}, window {window}")
        return Answer(rows=rows or (), empty=not rows, received_at=received_at, attempts=attempts)

    def campaigns(self) -> tuple[dict[str, Any], ...]:
        """The operation's campaigns (``information.php?api=campaigns``); costs one call."""
        rows, _, _ = self._get(INFORMATION_PATH, {"api": "campaigns"}, "campaign list")
        return rows or ()

    def token_info(self) -> dict[str, int]:
        """``token_limit`` and ``token_use_today`` (``information.php?api=token_info``); costs one call.

        Raises:
            errors.BadBodyError: the answer has no such numbers.
        """
        rows, _, _ = self._get(INFORMATION_PATH, {"api": "token_info"}, "token info")
        row = rows[0] if rows else {}
        try:
            return {name: int(str(row[name]).strip()) for name in ("token_limit", "token_use_today")}
        except (KeyError, ValueError):
            raise errors.BadBodyError(
                f"token_info answer without numeric token_limit/token_use_today: {sorted(row)}", request="token info"
            ) from None

    def _get(self, path: str, params: dict[str, str], request: str):
        if self.quota_exhausted:
            raise errors.QuotaExhaustedError(
                "the daily quota was spent earlier in this run; not calling", request=request
            )
        url = self.base_url + path
        # The pid tells the simulator's request log which process asked (tests check contention with it).
        headers = {"wolkvox-token": self._token, "User-Agent": f"{USER_AGENT} (pid {os.getpid()})"}
        for attempt in range(1, self.retry.max_attempts + 1):
            if self._stopped.is_set():
                raise errors.StoppedError("the load stopped; not calling again", request=request)
            if self.max_calls is not None and self.stats.calls >= self.max_calls:
                raise errors.CallLimitError(
                    f"this load already made the {self.max_calls} calls its plan allows (plan calls x attempts); "
                    "not calling again",
                    request=request,
                )
            self._before_call()
            try:
                return self._attempt(url, params, headers, request, attempt), attempt, self._now()
            except errors.QuotaExhaustedError:
                self.quota_exhausted = True
                raise
            except errors.RetryableError as exc:
                exc.attempts = attempt
                if attempt == self.retry.max_attempts:
                    exc.args = (f"{exc.args[0]} (gave up after {attempt} attempts)",)
                    raise
                self.stats.retries += 1
                delay = self.retry.delay(attempt, exc, self._rng)
                if self._sleep is time.sleep:
                    self._stopped.wait(delay)  # the same wait, cut short by stop()
                else:
                    self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, url: str, params: dict[str, str], headers: dict[str, str], request: str, attempt: int):
        record: dict[str, Any] = {
            "requested_at": self._now(),
            "api": params.get("api", ""),
            "campaign": params.get("campaign_id"),
            "date_ini": params.get("date_ini"),
            "date_end": params.get("date_end"),
            "attempt": attempt,
            "http_status": None,
            "outcome": "ok",
            "latency_ms": None,
            "bytes": None,
        }
        self.attempts.append(record)
        started = self._clock()
        try:
            with self._lease():
                self.stats.calls += 1
                response = self._session.get(
                    url, params=params, headers=headers, timeout=(self.timeouts.connect, self.timeouts.read)
                )
                body = response.content
        except requests.RequestException as exc:
            reason = _transport_reason(exc, self.timeouts)
            record.update(outcome="TransportError", latency_ms=(self._clock() - started) * 1000)
            raise errors.TransportError(
                f"could not reach {self.base_url} ({reason})", host=self.base_url, reason=reason, request=request
            ) from None
        latency = self._clock() - started
        self.stats.latencies.append(latency)
        record.update(http_status=response.status_code, latency_ms=latency * 1000, bytes=len(body))
        try:
            rows = map_response(
                response.status_code,
                body,
                request=request,
                content_type=response.headers.get("Content-Type", ""),
                headers=dict(response.headers),
                token_env=self.token_env,
            )
        except errors.WolkvoxError as exc:
            record["outcome"] = type(exc).__name__
            exc.args = (self._redact(exc.args[0]),)
            raise
        if not rows:
            record["outcome"] = "empty"
        return rows

    def _redact(self, value: object) -> str:
        text = str(value)
        return text.replace(self._token, "<redacted>") if self._token else text
