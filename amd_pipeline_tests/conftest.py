"""Shared fixtures: a simulator on loopback, a secret-looking token, a client that never really sleeps."""

from __future__ import annotations

import random
import secrets

import pytest

from amd_pipeline.simulator import SimConfig, Simulator
from amd_pipeline.token_guard import TokenGuard, token_key
from amd_pipeline.wolkvox.client import RetryPolicy, Timeouts, WolkvoxClient


@pytest.fixture
def token() -> str:
    return "SECRET-" + secrets.token_hex(12)


@pytest.fixture
def sim(token):
    with Simulator(SimConfig(token=token)) as simulator:
        yield simulator


class FakeSleep:
    """Records waits instead of sleeping."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def make_client(sim, token, fake_sleep, tmp_path):
    """Build clients against ``sim`` whose retries record their waits instead of sleeping."""
    made = []

    def make(token_value: str | None = None, **overrides) -> WolkvoxClient:
        kwargs = {
            "timeouts": Timeouts(connect=2.0, read=5.0),
            "retry": RetryPolicy(max_attempts=4),
            "sleep": fake_sleep,
            "rng": random.Random(1),
            "lease": TokenGuard(token_key(sim.url, token), lock_dir=tmp_path / "locks").lease,
        }
        kwargs.update(overrides)
        client = WolkvoxClient(sim.url, token_value or token, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
