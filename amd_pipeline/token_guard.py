"""A cross-process lease: at most ``max_in_flight`` requests with one token on this machine.

Dagster's ``wolkvox_token`` pool keeps runs of one Dagster instance apart. This lease also covers
what the pool cannot see: scripts, tests, ephemeral instances and a second DAGSTER_HOME. It is a
set of ``flock``-ed slot files named by a keyed hash of the base URL and token (the file name does
not contain, and cannot be turned back into, the token). The OS releases a dead process's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DEFAULT_LOCK_DIR_NAME = "amd_pipeline-token-locks"
POLL_SECONDS = 0.005


def token_key(base_url: str, token: str) -> str:
    """A short, non-reversible name for (host, token)."""
    digest = hashlib.blake2b(f"{base_url}\n{token}".encode(), key=b"amd_pipeline-token-guard", digest_size=10)
    return digest.hexdigest()


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / DEFAULT_LOCK_DIR_NAME


class TokenGuard:
    """Hands out leases; use ``with guard.lease(): <one HTTP request>``.

    Args:
        key: from :func:`token_key`.
        max_in_flight: slots (1 by default; Wolkvox's error table allows 2).
        lock_dir: where the slot files live; every process that shares the token must agree.
        sleep: poll wait when every slot is taken and there is more than one slot.
    """

    def __init__(
        self,
        key: str,
        *,
        max_in_flight: int = 1,
        lock_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.key = key
        self.max_in_flight = max_in_flight
        self.lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
        self._sleep = sleep

    def state(self) -> TokenState:
        """What was learned about this token's server (shared by every process using the token)."""
        return TokenState(self.lock_dir / f"{self.key}.state.json")

    def _slot_path(self, slot: int) -> Path:
        return self.lock_dir / f"{self.key}.{slot}.lock"

    @contextlib.contextmanager
    def lease(self) -> Iterator[int]:
        """Block until a slot is free, hold it for the body, then release it. Yields the slot."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        if self.max_in_flight == 1:
            fd = os.open(self._slot_path(0), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield 0
            finally:
                os.close(fd)  # closing releases the lock
            return
        fds = [os.open(self._slot_path(slot), os.O_RDWR | os.O_CREAT, 0o600) for slot in range(self.max_in_flight)]
        try:
            while True:
                for slot, fd in enumerate(fds):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    yield slot
                    return
                self._sleep(POLL_SECONDS)
        finally:
            for fd in fds:
                os.close(fd)


class TokenState:
    """Facts learned about a token's server (e.g. "refuses campaign_id=all"), kept beside its lock files.

    A small JSON file named by the token's key (never the token). Writes are atomic (temp file + rename).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def get(self, name: str, default: object = None) -> object:
        try:
            return json.loads(self.path.read_text()).get(name, default)
        except (FileNotFoundError, ValueError):
            return default

    def set(self, name: str, value: object) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        data[name] = value
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
