"""A cross-process lease: at most ``max_in_flight`` requests with one token, on this machine or on all.

Dagster's ``wolkvox_token`` pool keeps only the *steps* of one instance apart; this lease covers every request,
also those outside a step (pre-flight ``token_info``, campaign discovery, sensors), scripts, tests and a second
DAGSTER_HOME. On one machine it is a set of locked slot files (``filelock``) named by a keyed hash of base URL
and token (the name cannot be turned back into the token); the OS releases a dead process's lock. With
``shared_url`` (production's PostgreSQL, or AMD_TOKEN_LOCK_URL) each lease also holds an advisory lock on the
same slot, which keeps machines and containers apart; it is released when a dead process's connection drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from amd_pipeline.core.errors import SharedLockError
from amd_pipeline.core.shared_state import dsn, lock_class

DEFAULT_LOCK_DIR_NAME = "amd_pipeline-token-locks"
POLL_SECONDS = 0.005


def token_key(base_url: str, token: str) -> str:
    """A short, non-reversible name for (host, token)."""
    digest = hashlib.blake2b(f"{base_url}\n{token}".encode(), key=b"amd_pipeline-token-guard", digest_size=10)
    return digest.hexdigest()


def default_lock_dir() -> Path:
    """The slot files' folder when none is given: ``amd_pipeline-token-locks`` in the system's temp folder."""
    return Path(tempfile.gettempdir()) / DEFAULT_LOCK_DIR_NAME


class TokenGuard:
    """Hands out leases; use ``with guard.lease(): <one HTTP request>``.

    Args:
        key: from :func:`token_key`.
        max_in_flight: slots (1 by default; Wolkvox's error table allows 2).
        lock_dir: where the slot files live; every process that shares the token must agree.
        sleep: poll wait when every slot is taken and there is more than one slot.
        shared_url: a PostgreSQL URL (``postgresql[+psycopg2]://...``): every lease also takes an
            advisory lock there, shared by every machine that uses the same database.
    """

    def __init__(
        self,
        key: str,
        *,
        max_in_flight: int = 1,
        lock_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        shared_url: str | None = None,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.key = key
        self.max_in_flight = max_in_flight
        self.lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
        self._sleep = sleep
        self.shared_url = shared_url
        self._shared = SharedLock(shared_url, key) if shared_url else None

    def state(self) -> TokenState:
        """What was learned about this token's server, where every process that shares the token sees it.

        In the shared database when there is one (every machine), else beside the lock files (this machine).
        """
        if self.shared_url:
            from amd_pipeline.core.shared_state import PgTokenState

            return PgTokenState(self.shared_url, self.key)
        return TokenState(self.lock_dir / f"{self.key}.state.json")

    def _slot_path(self, slot: int) -> Path:
        return self.lock_dir / f"{self.key}.{slot}.lock"

    @contextlib.contextmanager
    def lease(self) -> Iterator[int]:
        """Block until a slot is free, hold it for the body, then release it. Yields the slot.

        filelock waits by trying again every few milliseconds, so a process that releases a slot and
        takes it again at once would win nearly every time and starve the others (a refresh waiting out
        a whole backfill). So a lease is taken in two steps: the gate, then a slot, and the gate is let go
        once the slot is held. A waiter holds the gate while it waits for a slot, so the holder, coming
        back for its next lease, queues behind it at the gate: the token passes from process to process.
        """
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        # New lock objects per lease: two leases in one process (two threads) exclude each other too.
        slots = [FileLock(self._slot_path(slot), mode=0o600) for slot in range(self.max_in_flight)]
        with self._gate():
            slot = self._take_a_slot(slots)
        try:
            with self._across_machines(slot):
                yield slot
        finally:
            slots[slot].release()

    def _gate(self) -> contextlib.AbstractContextManager:
        return FileLock(self.lock_dir / f"{self.key}.gate.lock", mode=0o600).acquire(poll_interval=POLL_SECONDS)

    def _take_a_slot(self, slots: list[FileLock]) -> int:
        if len(slots) == 1:
            slots[0].acquire(poll_interval=POLL_SECONDS)
            return 0
        while True:
            for slot, lock in enumerate(slots):
                try:
                    lock.acquire(blocking=False)
                    return slot
                except Timeout:
                    continue
            self._sleep(POLL_SECONDS)

    def _across_machines(self, slot: int) -> contextlib.AbstractContextManager:
        return self._shared.hold(slot) if self._shared else contextlib.nullcontext()


class SharedLock:
    """PostgreSQL advisory locks named by the token's key: one per slot, held for one request.

    One connection per process (opened on first use, reopened after a failure). The key goes to the
    server as two 32-bit numbers derived from the token's keyed hash, never the token.
    """

    def __init__(self, url: str, key: str):
        self.url = url
        self._classid = lock_class(key)
        self._conn = None
        self._pid = None

    def _connection(self):
        import psycopg2  # only on machines that use it; dagster-postgres brings it

        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn = psycopg2.connect(dsn(self.url), connect_timeout=10, application_name="amd_pipeline token lock")
            self._conn.autocommit = True
            self._pid = os.getpid()
        return self._conn

    @contextlib.contextmanager
    def hold(self, slot: int) -> Iterator[None]:
        """Hold the advisory lock of ``slot`` for the body; raise :class:`SharedLockError` if it cannot be taken."""
        try:
            cursor = self._connection().cursor()
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", (self._classid, slot))
        except Exception as exc:
            self._conn = None
            raise SharedLockError(
                f"cannot take the shared token lock in PostgreSQL (DAGSTER_PG_URL or AMD_TOKEN_LOCK_URL): "
                f"{type(exc).__name__}"
            ) from None
        try:
            yield
        finally:
            try:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", (self._classid, slot))
            except Exception:
                self._conn = None  # a dropped connection released the lock with it


class TokenState:
    """Facts learned about a token's server (e.g. "refuses campaign_id=all"), kept beside its lock files.

    A small JSON file named by the token's key (never the token). Writes are atomic (temp file + rename),
    and reads and writes take a lock beside it: Windows refuses to rename over a file another process is
    reading, and two writers would lose each other's facts.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = FileLock(self.path.with_suffix(".lock"), mode=0o600)

    def get(self, name: str, default: object = None) -> object:
        """The fact ``name``, or ``default`` when it or the file does not exist."""
        if not self.path.exists():
            return default
        with self._lock.acquire(poll_interval=POLL_SECONDS):
            return self._read().get(name, default)

    def set(self, name: str, value: object) -> None:
        """Store ``value`` under ``name``, rewriting the file atomically under its lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.acquire(poll_interval=POLL_SECONDS):
            data = self._read()
            data[name] = value
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
