"""The daily call budget: counted per source and local day, exactly, across processes."""

import datetime as dt
import json
import subprocess
import sys
import textwrap

import pytest

from amd_pipeline.core.budget import Budget, CallLedger
from amd_pipeline.wolkvox.errors import BudgetExhaustedError

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


def test_processes_spending_one_budget_at_once_stay_within_it(tmp_path):
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
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    numbers = [[int(n) for n in p.communicate(timeout=120)[0].split()] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # Each call got its own number 1..150: a lost update would hand one number out twice and overspend.
    assert sorted(n for ns in numbers for n in ns) == list(range(1, 151))
    # They really contended: some process's numbers are not one block (another charged in between).
    assert any(ns and ns[-1] - ns[0] + 1 != len(ns) for ns in numbers)
    assert CallLedger(tmp_path / "k.calls.json", BOGOTA).usage() == {"backfill": 150}
