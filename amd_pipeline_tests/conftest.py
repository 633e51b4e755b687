"""Shared fixtures: a simulator on loopback, a secret-looking token, a client that never really sleeps,
the pipeline's environment pointed at them, and an instance made from the shipped dagster.yaml."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest

from amd_pipeline.core.store import AmdStore
from amd_pipeline.core.token_guard import TokenGuard, token_key
from amd_pipeline.orchestration.instance import prepare_home
from amd_pipeline.wolkvox.client import RetryPolicy, Timeouts, WolkvoxClient
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator
from amd_pipeline_tests import pg_cluster

CAMPAIGNS = ["20717", "20718", "20731"]
# Tests whose processes must really contend (for the token, the ledger, the pool): under pytest-xdist
# they share one worker, so two of them never run at once and load each other's processes.
CONTENTION = pytest.mark.xdist_group("contention")


def pytest_configure(config):
    """No test sees the operation folders of the checkout (amd_pipeline/defs): a developer's own operations
    would change what every test loads. A test that wants operations points AMD_OPERATIONS_DIR at its own;
    test_dg.py (which runs `dg` as a person does, on the project) drops the variable."""
    import tempfile

    os.environ.setdefault("AMD_OPERATIONS_DIR", tempfile.mkdtemp(prefix="amd-tests-no-operations-"))


def pytest_collection_modifyitems(items):
    """The real `dagster dev` test first: it mostly waits for the daemon, so under pytest-xdist it starts
    at once on one worker while the other runs the rest, instead of lengthening the run at its end.
    Tests marked ``posix`` (fork, POSIX signals, process groups) are skipped on Windows, those marked
    ``linux`` (/proc) everywhere but Linux."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
    for item in items:
        if sys.platform == "win32" and item.get_closest_marker("posix"):
            item.add_marker(pytest.mark.skip(reason="needs fork, POSIX signals or process groups: not on Windows"))
        if not sys.platform.startswith("linux") and item.get_closest_marker("linux"):
            item.add_marker(pytest.mark.skip(reason="needs /proc: Linux only"))


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


@pytest.fixture
def pipeline_env(monkeypatch, sim, token, tmp_path) -> AmdStore:
    """The environment of a run against ``sim``, everything in ``tmp_path``; returns its DuckDB store."""
    monkeypatch.setenv("WOLKVOX_TOKEN", token)
    monkeypatch.setenv("WOLKVOX_BASE_URL", sim.url)
    monkeypatch.setenv("AMD_DUCKDB_PATH", str(tmp_path / "amd.duckdb"))
    monkeypatch.setenv("AMD_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("WOLKVOX_BACKOFF_BASE_MS", "1")
    monkeypatch.setenv("WOLKVOX_MAINTENANCE_DELAY_MS", "1")
    monkeypatch.setenv("WOLKVOX_DAILY_QUOTA", "100000")  # a known quota: no token_info call in the counts
    for name in ("WOLKVOX_SERVER", "AMD_CAMPAIGNS", "WOLKVOX_TIMEZONE", "AMD_START_DATE", "WOLKVOX_CAMPAIGN_ALL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AMD_REFRESH_CRON", "AMD_RESTATE_CRON", "AMD_RESTATE_DAYS", "AMD_QUOTA_SHARE"):
        monkeypatch.delenv(name, raising=False)
    return AmdStore(tmp_path / "amd.duckdb")


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """An instance built from the shipped dagster.yaml (the token pool limit applies), with CAMPAIGNS."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = prepare_home(tmp_path / "dagster_home")
    # Not entered as a context manager: that sets a context variable pytest's teardown cannot reset,
    # and later Definitions would find a disposed instance through it.
    inst = dg.DagsterInstance.from_config(str(home))
    try:
        assert inst.get_concurrency_config().pool_config.default_pool_limit == 1
        inst.add_dynamic_partitions("campaign", CAMPAIGNS)
        yield inst
    finally:
        inst.dispose()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the session, stopped at its end (also on failure).

    Skipped with a reason when PostgreSQL is not installed, unless AMD_REQUIRE_POSTGRES=1 (CI sets it):
    then that is a failure, so CI never skips these tests.
    """
    bindir = pg_cluster.server_bin()
    if bindir is None:
        if os.environ.get("AMD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AMD_REQUIRE_POSTGRES=1 but {pg_cluster.INSTALL_HINT}")
        pytest.skip(pg_cluster.INSTALL_HINT)
    cluster = pg_cluster.Cluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


PRODUCTION_PROFILE = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


@pytest.fixture
def pg_home(postgres, tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME holding the production profile (deploy/dagster.yaml) on a new database.

    Sets DAGSTER_PG_URL for this process and its children; returns the home.
    """
    monkeypatch.setenv("DAGSTER_PG_URL", postgres.create_database())
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(PRODUCTION_PROFILE, home / "dagster.yaml")
    return home


def daily_materializations(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    """The run's amd_daily partition materializations (the step also reports amd_published)."""
    return [m for m in result.asset_materializations_for_node("amd_daily") if m.asset_key == dg.AssetKey("amd_daily")]


def published_materialization(result: dg.ExecuteInProcessResult) -> dg.AssetMaterialization:
    """The run's one amd_published materialization: the dataset, and the load's summary (``load_*``)."""
    [published] = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.is_step_materialization and e.event_specific_data.materialization.asset_key == dg.AssetKey("amd_published")
    ]
    return published
