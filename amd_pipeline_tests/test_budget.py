"""The daily call budget: counted per source and local day, exactly, across processes."""

import contextlib
import datetime as dt
import json
import subprocess
import sys
import textwrap

import psycopg2
import pytest

from amd_pipeline.core.budget import Budget, CallLedger
from amd_pipeline.core.shared_state import dsn
from amd_pipeline.wolkvox.errors import BudgetExhaustedError
from amd_pipeline_tests.conftest import CONTENTION
from amd_pipeline_tests.windows_like import windows_like

BOGOTA = "America/Bogota"


class Clock:
    def __init__(self, at: dt.datetime):
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def test_the_budget_is_the_share_of_the_quota_rounded_down():
    assert Budget(1000, 0.5).limit == 500
    assert Budget(45, 0.5).limit == 22
    assert Budget(None, 0.5).limit is None


def test_calls_are_counted_per_source_and_refused_at_the_limit(tmp_path):
    ledger = CallLedger(tmp_path / "k.calls.json", BOGOTA)
    assert [ledger.charge("backfill", 3) for _ in range(2)] == [1, 2]
    ledger.charge("refresh", 3)
    with pytest.raises(BudgetExhaustedError) as caught:
        ledger.charge("refresh", 3)
    assert (caught.value.limit, caught.value.used) == (3, 3)
    assert str(caught.value) == "daily call budget of 3 reached (3 used)"
    assert ledger.usage() == {"backfill": 2, "refresh": 1}  # the refused call was not counted
    assert ledger.charge("sensor", None) == 4  # no limit known: counted, never refused


def test_reading_a_ledger_nothing_was_counted_in_creates_no_folder(tmp_path):
    ledger = CallLedger(tmp_path / "locks" / "k.calls.json", BOGOTA)
    assert (ledger.usage(), ledger.token_limit()) == ({}, None)
    assert list(tmp_path.iterdir()) == []  # `amd-pipeline budget` on a fresh machine writes nothing
    ledger.charge("cli", None)
    assert ledger.usage() == {"cli": 1}


def test_the_count_restarts_at_the_operations_local_midnight(tmp_path):
    clock = Clock(dt.datetime(2026, 11, 28, 4, 59, 59, tzinfo=dt.UTC))  # 23:59:59 in Bogota
    ledger = CallLedger(tmp_path / "k.calls.json", BOGOTA, now=clock)
    ledger.charge("backfill", 1)
    ledger.remember_token_limit(1000)
    with pytest.raises(BudgetExhaustedError):
        ledger.charge("backfill", 1)
    clock.at += dt.timedelta(seconds=1)  # 00:00:00 the next local day
    assert ledger.today() == dt.date(2026, 11, 28)
    assert ledger.charge("backfill", 1) == 1
    assert ledger.token_limit() is None  # token_info is asked again once on the new day
    assert json.loads((tmp_path / "k.calls.json").read_text())["day"] == "2026-11-28"


# The controls' preludes: the same processes with the ledger's lock taken out, as a real bug would.
FILE_LOCK_REMOVED = (
    "import contextlib\n"
    "from amd_pipeline.core.budget import CallLedger\n"
    "CallLedger._exclusive = lambda self: contextlib.nullcontext()\n"
)
# PgCallLedger.charge rebuilt from its own source less the one statement that takes the advisory lock
# ("it is already a transaction"); it fails here, rather than testing nothing, if that statement moves.
PG_LOCK_REMOVED = textwrap.dedent("""
    import inspect, textwrap
    from amd_pipeline.core import shared_state
    lines = textwrap.dedent(inspect.getsource(shared_state.PgCallLedger.charge)).splitlines()
    kept = [line for line in lines if "pg_advisory_xact_lock" not in line]
    assert len(kept) == len(lines) - 1, "PgCallLedger.charge no longer takes its lock in one statement"
    rebuilt = {}
    exec(compile("\\n".join(kept), shared_state.__file__, "exec"), vars(shared_state), rebuilt)
    shared_state.PgCallLedger.charge = rebuilt["charge"]
""")
LOCKS = [pytest.param("held", id="lock held"), pytest.param("removed", id="control: lock removed")]


def spend_at_once(script: str, parties: int, windows: bool = False) -> list[list[int]]:
    """Run ``parties`` copies of ``script`` (each waits at the barrier, then prints the numbers it was charged);
    ``windows`` hides the POSIX-only modules from them, as on Windows."""
    env = windows_like() if windows else None
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(parties)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err for _, err in outs)[-3000:]
    return [[int(n) for n in out.split()] for out, _ in outs]


def interleaved(numbers: list[list[int]]) -> bool:
    """Some process's numbers are not one block: another process charged in between, so they contended."""
    return any(ns and ns[-1] - ns[0] + 1 != len(ns) for ns in numbers)


@pytest.mark.parametrize("windows", [pytest.param(False, id="posix"), pytest.param(True, id="windows-like")])
@pytest.mark.parametrize("lock", LOCKS)
@CONTENTION
def test_processes_spending_one_budget_at_once_stay_within_it(tmp_path, lock, windows):
    # Three processes wait at a file barrier, then each tries 80 calls against a budget of 150
    # (240 tries in all), pausing 1 ms between tries so their loops overlap whoever starts first.
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from amd_pipeline.core.budget import CallLedger
        from amd_pipeline.wolkvox.errors import BudgetExhaustedError
        from amd_pipeline_tests.barrier import wait_at_barrier
        gate = Path({str(tmp_path)!r})
        wait_at_barrier(gate, 3)
        ledger, numbers = CallLedger(gate / "k.calls.json", "America/Bogota"), []
        for _ in range(80):
            try:
                numbers.append(ledger.charge("backfill", 150))
            except BudgetExhaustedError:
                pass
            time.sleep(0.001)
        print(" ".join(map(str, numbers)))
    """)
    numbers = spend_at_once((FILE_LOCK_REMOVED if lock == "removed" else "") + script, 3, windows)
    charged = sorted(n for ns in numbers for n in ns)
    if lock == "removed":
        # The control: without the lock, two processes read the same count and both write it plus one
        # (a lost update): one number handed out twice, and more calls allowed than the budget.
        assert len(charged) > 150 and len(set(charged)) < len(charged), charged
        return
    # Each call got its own number 1..150: a lost update would hand one number out twice and overspend.
    assert charged == list(range(1, 151))
    assert interleaved(numbers)
    assert CallLedger(tmp_path / "k.calls.json", BOGOTA).usage() == {"backfill": 150}


@pytest.mark.postgres
@pytest.mark.parametrize("lock", LOCKS)
@CONTENTION
def test_processes_charging_one_postgresql_ledger_at_once_stay_within_it(postgres, tmp_path, lock):
    # Eight processes connect (the schema is made then), wait at a file barrier, then each tries 20
    # charges against a limit of 20: any one of them could spend it all alone.
    # Measured without the lock: 21-26 charges recorded in every run, numbers handed out several times.
    url, key, limit, parties = postgres.create_database(), "00112233445566778899", 20, 8
    script = textwrap.dedent(f"""
        from pathlib import Path
        from amd_pipeline.core.shared_state import PgCallLedger
        from amd_pipeline.wolkvox.errors import BudgetExhaustedError
        from amd_pipeline_tests.barrier import wait_at_barrier
        ledger, numbers = PgCallLedger({url!r}, {key!r}, "America/Bogota"), []
        ledger.usage()  # connected, the tables made: what races after the barrier is the charge alone
        wait_at_barrier(Path({str(tmp_path)!r}), {parties})
        for _ in range({limit}):
            try:
                numbers.append(ledger.charge("backfill", {limit}))
            except BudgetExhaustedError:
                pass
        print(" ".join(map(str, numbers)))
    """)
    numbers = spend_at_once((PG_LOCK_REMOVED if lock == "removed" else "") + script, parties)
    charged = sorted(n for ns in numbers for n in ns)
    with contextlib.closing(psycopg2.connect(dsn(url))) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT sum(calls) FROM amd_pipeline_calls WHERE token_key = %s", (key,))
        recorded = cursor.fetchone()[0]
    if lock == "removed":
        # The control: two transactions read the same day's sum before either inserts, and both insert.
        assert recorded > limit and len(charged) > limit and len(set(charged)) < len(charged), (recorded, charged)
        return
    assert recorded == limit  # never more
    assert charged == list(range(1, limit + 1))  # each charge its own number
    assert interleaved(numbers)
