import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from amd_pipeline.core.token_guard import SharedLockError, TokenGuard, token_key
from amd_pipeline_tests.conftest import CONTENTION


def overlapping_pairs(intervals):
    intervals = sorted(intervals)
    return sum(1 for (s1, e1), (s2, e2) in itertools.pairwise(intervals) if s2 < e1)


def test_the_lock_key_does_not_contain_the_token():
    key = token_key("https://wv0010.wolkvox.com", "SECRET-abcdef")
    assert "SECRET" not in key and "abcdef" not in key
    assert key != token_key("https://wv0010.wolkvox.com", "SECRET-other")
    assert key != token_key("https://wv0020.wolkvox.com", "SECRET-abcdef")


def three_processes_leasing(tmp_path, own_folders: bool = False, shared_url: str | None = None):
    """Three processes (started together at a barrier) each take 15 leases of 10 ms.

    Returns ``(intervals, holders)``: every lease's (start, end), and who held the token in time order.
    ``own_folders`` gives each process its own lock folder, as on separate machines.
    """
    folder = "gate / str(os.getpid())" if own_folders else "gate"
    script = textwrap.dedent(f"""
        import json, os, sys, time
        from pathlib import Path
        from amd_pipeline.core.token_guard import TokenGuard
        from amd_pipeline_tests.barrier import wait_at_barrier
        gate = Path({str(tmp_path)!r})
        wait_at_barrier(gate, 3)  # so the three loops run at the same time
        guard = TokenGuard("0123456789abcdef0123", lock_dir={folder}, shared_url={shared_url!r})
        out = []
        for _ in range(15):
            with guard.lease():
                start = time.monotonic(); time.sleep(0.01); out.append((start, time.monotonic()))
        print(json.dumps(out))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    leases = [(tuple(i), n) for n, p in enumerate(procs) for i in json.loads(p.communicate(timeout=60)[0])]
    assert len(leases) == 45
    # They really contended: in time order, the holder changes more often than once per process
    # (three back-to-back runs would change holder only twice).
    holders = [n for _, n in sorted(leases)]
    assert sum(a != b for a, b in itertools.pairwise(holders)) > 2, holders
    return [interval for interval, _ in leases], holders


@CONTENTION
def test_leases_from_several_processes_never_overlap(tmp_path):
    intervals, _ = three_processes_leasing(tmp_path)
    assert overlapping_pairs(intervals) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("shared", [True, False], ids=["shared lock", "control: no shared lock"])
@CONTENTION
def test_processes_with_separate_lock_folders_are_kept_apart_by_the_shared_lock(postgres, tmp_path, shared):
    # Separate lock folders stand for separate machines: only the PostgreSQL advisory lock is common.
    intervals, _ = three_processes_leasing(tmp_path, own_folders=True, shared_url=postgres.url() if shared else None)
    assert (overlapping_pairs(intervals) == 0) == shared


def test_an_unreachable_shared_lock_is_one_sentence_without_the_url(tmp_path):
    guard = TokenGuard("0123456789abcdef0123", lock_dir=tmp_path, shared_url="postgresql://amd:PASSWORD@127.0.0.1:9/x")
    with pytest.raises(SharedLockError) as caught, guard.lease():
        pass
    assert "AMD_TOKEN_LOCK_URL" in str(caught.value) and "PASSWORD" not in str(caught.value)


@pytest.mark.parametrize("slots", [1, 2])
def test_at_most_max_in_flight_leases_are_held_at_once(tmp_path, slots):
    guard = TokenGuard("k", max_in_flight=slots, lock_dir=tmp_path)
    held, peak, lock = [0], [0], threading.Lock()

    def work():
        for _ in range(10):
            with guard.lease():
                with lock:
                    held[0] += 1
                    peak[0] = max(peak[0], held[0])
                time.sleep(0.005)
                with lock:
                    held[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == slots


def test_a_dead_holder_does_not_block_the_next_lease(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from amd_pipeline.core.token_guard import TokenGuard
        with TokenGuard("k", lock_dir={str(tmp_path)!r}).lease():
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 9
    started = time.monotonic()
    with TokenGuard("k", lock_dir=tmp_path).lease():
        pass
    assert time.monotonic() - started < 5
