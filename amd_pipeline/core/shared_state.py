"""One token's shared state in PostgreSQL: the daily call ledger and what was learned about its server. No dagster.

On one machine this state is small files beside the token's lock files (``budget.CallLedger``,
``token_guard.TokenState``), which reach only that machine, and an empty container folder would start an empty
ledger. With the Dagster instance in PostgreSQL (production) or ``AMD_TOKEN_LOCK_URL`` set, it lives in that
database, so every process, machine and container shares one exact budget. ``amd_pipeline_calls`` counts calls
per token key, local day and source; a charge takes an advisory lock on the key, so check and increment are one
step everywhere. ``amd_pipeline_token_state`` holds named facts per key (today's limit, the ``all`` refusal,
windows served from answers). Rows are keyed by ``token_guard.token_key``, never the token; messages never
hold the URL (it may hold a password).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

from amd_pipeline.core.errors import SharedStateError
from amd_pipeline.wolkvox.errors import BudgetExhaustedError

SCHEMA = """
CREATE TABLE IF NOT EXISTS amd_pipeline_calls (
    token_key TEXT NOT NULL,
    day DATE NOT NULL,
    source TEXT NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (token_key, day, source)
);
CREATE TABLE IF NOT EXISTS amd_pipeline_token_state (
    token_key TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (token_key, name)
);
"""
SCHEMA_LOCK = (0x616D64, 0)  # one fixed advisory key: concurrent CREATE TABLE IF NOT EXISTS can collide
LEDGER_SLOT = -1  # the ledger's advisory lock; the token lock uses slots 0, 1, ...


def lock_class(key: str) -> int:
    """The first advisory-lock number of a token key (the second is the slot)."""
    return int.from_bytes(bytes.fromhex(key)[:4], "big", signed=True)


def dsn(url: str) -> str:
    """A SQLAlchemy-style ``postgresql+psycopg2://`` URL as psycopg2 takes it."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


_local = threading.local()  # a thread's connections: a load's calls and its writes run in two threads
_schema_ready: set[tuple[str, int]] = set()


def _connections() -> dict[tuple[str, int], object]:
    if not hasattr(_local, "connections"):
        _local.connections = {}  # closed with the thread's locals when the thread ends
    return _local.connections


def _connection(url: str):
    """This thread's connection for the shared state (one per URL, reopened after a failure or a fork).

    Per thread, because a transaction here must not share its connection with another thread's.
    """
    import psycopg2  # only on machines that use it; dagster-postgres brings it

    slot = (url, os.getpid())
    conn = _connections().get(slot)
    if conn is None or conn.closed:
        try:
            conn = psycopg2.connect(dsn(url), connect_timeout=10, application_name="amd_pipeline shared state")
        except Exception as exc:
            raise SharedStateError(
                f"cannot reach the PostgreSQL that holds the token's call budget ({type(exc).__name__}): "
                "check DAGSTER_PG_URL (or AMD_TOKEN_LOCK_URL) and that the database is up"
            ) from None
        _connections()[slot] = conn
    if slot not in _schema_ready:
        with _transaction(url, conn) as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
            cursor.execute(SCHEMA)
        _schema_ready.add(slot)
    return conn


@contextlib.contextmanager
def _transaction(url: str, conn=None) -> Iterator:
    """One transaction on this thread's connection: committed when the body ends, rolled back when it raises.

    A database error drops the connection (the next use reconnects) and says so in one sentence.
    """
    import psycopg2

    conn = conn or _connection(url)
    try:
        with conn, conn.cursor() as cursor:
            yield cursor
    except psycopg2.Error as exc:
        with contextlib.suppress(Exception):
            conn.close()
        _connections().pop((url, os.getpid()), None)
        raise SharedStateError(
            f"the token's shared call budget in PostgreSQL failed ({type(exc).__name__}); the next call reconnects"
        ) from None


class PgCallLedger:
    """:class:`amd_pipeline.core.budget.CallLedger` kept in PostgreSQL: one count for every machine.

    Args:
        url: a PostgreSQL URL (``postgresql[+psycopg2]://...``), usually the Dagster instance's.
        key: the token's key (:func:`amd_pipeline.core.token_guard.token_key`).
        timezone: the operation's zone; the count restarts at its midnight.
        now: the wall clock (tests move it).
    """

    where = "PostgreSQL (shared by every process, machine and container that uses it)"

    def __init__(
        self, url: str, key: str, timezone: str, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    ):
        self.url = url
        self.key = key
        self.zone = ZoneInfo(timezone)
        self._now = now
        self._classid = lock_class(key)

    def today(self) -> dt.date:
        """Today's date in the operation's zone: the day the ledger counts against."""
        return self._now().astimezone(self.zone).date()

    def charge(self, source: str, limit: int | None) -> int:
        """Count one call for ``source``, or raise :class:`BudgetExhaustedError` (nothing counted)."""
        day = self.today()
        with _transaction(self.url) as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self._classid, LEDGER_SLOT))
            cursor.execute(
                "SELECT coalesce(sum(calls), 0) FROM amd_pipeline_calls WHERE token_key = %s AND day = %s",
                (self.key, day),
            )
            used = int(cursor.fetchone()[0])
            if limit is not None and used >= limit:
                raise BudgetExhaustedError(
                    f"daily call budget of {limit} reached ({used} used)", limit=limit, used=used, request=""
                )
            cursor.execute(
                "INSERT INTO amd_pipeline_calls (token_key, day, source, calls) VALUES (%s, %s, %s, 1) "
                "ON CONFLICT (token_key, day, source) DO UPDATE SET calls = amd_pipeline_calls.calls + 1",
                (self.key, day, source),
            )
        return used + 1

    def usage(self) -> dict[str, int]:
        """Today's calls per source."""
        with _transaction(self.url) as cursor:
            cursor.execute(
                "SELECT source, calls FROM amd_pipeline_calls WHERE token_key = %s AND day = %s",
                (self.key, self.today()),
            )
            return {source: int(calls) for source, calls in cursor.fetchall()}

    def _state(self) -> PgTokenState:
        return PgTokenState(self.url, self.key)

    def token_limit(self) -> int | None:
        """The token's daily quota as ``token_info`` said today, if it was asked."""
        found = self._state().get("token_limit")
        return found["limit"] if isinstance(found, dict) and found.get("day") == self.today().isoformat() else None

    def remember_token_limit(self, limit: int) -> None:
        """Store ``limit`` as the token's daily quota for today (what :meth:`token_limit` returns)."""
        self._state().set("token_limit", {"day": self.today().isoformat(), "limit": limit})

    def note_from_answers(self, windows: int) -> None:
        """Count windows served from answers already in hand today (no call made for them)."""
        if windows:
            self._state().add(f"windows_from_answers:{self.today().isoformat()}", windows)

    def from_answers(self) -> int:
        """The windows served from answers already in hand today (0 when none)."""
        return int(self._state().get(f"windows_from_answers:{self.today().isoformat()}", 0))


class PgTokenState:
    """:class:`amd_pipeline.core.token_guard.TokenState` kept in PostgreSQL (values are JSON)."""

    def __init__(self, url: str, key: str):
        self.url = url
        self.key = key

    def get(self, name: str, default: object = None) -> object:
        """The fact ``name`` decoded from JSON, or ``default`` when it was never set."""
        with _transaction(self.url) as cursor:
            cursor.execute(
                "SELECT value FROM amd_pipeline_token_state WHERE token_key = %s AND name = %s", (self.key, name)
            )
            row = cursor.fetchone()
        return json.loads(row[0]) if row else default

    def set(self, name: str, value: object) -> None:
        """Store ``value`` as JSON under ``name``, replacing any earlier value."""
        with _transaction(self.url) as cursor:
            cursor.execute(
                "INSERT INTO amd_pipeline_token_state (token_key, name, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (token_key, name) DO UPDATE SET value = excluded.value, updated_at = now()",
                (self.key, name, json.dumps(value)),
            )

    def add(self, name: str, amount: int) -> None:
        """Add ``amount`` to a numeric fact (0 when absent), in one statement."""
        with _transaction(self.url) as cursor:
            cursor.execute(
                "INSERT INTO amd_pipeline_token_state (token_key, name, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (token_key, name) DO UPDATE SET "
                "value = (amd_pipeline_token_state.value::bigint + excluded.value::bigint)::text, updated_at = now()",
                (self.key, name, str(int(amount))),
            )


def instance_url(instance) -> str | None:
    """The PostgreSQL URL of a Dagster instance whose event log lives there (the production profile), else None."""
    if instance is None:
        return None
    try:
        storage = instance.event_log_storage
    except Exception:  # an instance that cannot open its storage has nothing to share
        return None
    url = getattr(storage, "postgres_url", None)
    return url if isinstance(url, str) and url else None
