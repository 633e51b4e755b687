import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from amd_pipeline.core.errors import SharedLockError
from amd_pipeline.core.token_guard import TokenGuard, token_key
from amd_pipeline_tests.conftest import CONTENTION
from amd_pipeline_tests.windows_like import windows_like

# Where the processes run: this Python, or one with fcntl and every other POSIX-only module hidden, as on
# Windows (filelock then keeps them apart with lock files created exclusively; on Windows, msvcrt.locking).
PLATFORMS = [pytest.param(False, id="posix"), pytest.param(True, id="windows-like")]


def overlapping_pairs(intervals):
    intervals = sorted(intervals)
    return sum(1 for (s1, e1), (s2, e2) in itertools.pairwise(intervals) if s2 < e1)


def test_the_lock_key_does_not_contain_the_token():
    key = token_key("https://wv0010.wolkvox.com", "SECRET-abcdef")
    assert "SECRET" not in key and "abcdef" not in key
    assert key != token_key("https://wv0010.wolkvox.com", "SECRET-other")
    assert key != token_key("https://wv0020.wolkvox.com", "SECRET-abcdef")


def three_processes_leasing(tmp_path, own_folders: bool = False, shared_url: str | None = None, windows: bool = False):
    """Three processes (started together at a barrier) each take 15 leases of 10 ms.

    Returns ``(intervals, holders)``: every lease's (start, end), and who held the token in time order.
    ``own_folders`` gives each process its own lock folder, as on separate machines; ``windows`` hides
    the POSIX-only modules from them.
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
    env = windows_like() if windows else None
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)
    ]
    leases = [(tuple(i), n) for n, p in enumerate(procs) for i in json.loads(p.communicate(timeout=60)[0])]
    assert len(leases) == 45
    # They really contended: in time order, the holder changes more often than once per process
    # (three back-to-back runs would change holder only twice).
    holders = [n for _, n in sorted(leases)]
    assert sum(a != b for a, b in itertools.pairwise(holders)) > 2, holders
    return [interval for interval, _ in leases], holders


@pytest.mark.parametrize("windows", PLATFORMS)
@CONTENTION
def test_leases_from_several_processes_never_overlap(tmp_path, windows):
    intervals, _ = three_processes_leasing(tmp_path, windows=windows)
    assert overlapping_pairs(intervals) == 0


@pytest.mark.parametrize("windows", PLATFORMS)
@CONTENTION
def test_the_overlap_count_sees_processes_that_do_not_share_a_lock(tmp_path, windows):
    # Control: the same three processes, each with a lock folder of its own, so no lock stands between them.
    intervals, _ = three_processes_leasing(tmp_path, own_folders=True, windows=windows)
    assert overlapping_pairs(intervals) > 0


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


GATE_REMOVED = (
    "import contextlib\n"
    "from amd_pipeline.core.token_guard import TokenGuard\n"
    "TokenGuard._gate = lambda self: contextlib.nullcontext()\n"
)


@pytest.mark.parametrize("gate", ["gate", "control: gate removed"])
@CONTENTION
def test_a_process_waiting_for_the_token_gets_it_before_a_busy_one_takes_it_twice(tmp_path, gate):
    # A busy process takes 300 leases of 5 ms back to back (a backfill); another, once the first is
    # going, takes 10 leases (a refresh), noting when it began to wait and when it got each. Counted
    # for each wait: how many of the busy process's leases started while it waited.
    prelude = GATE_REMOVED if gate.startswith("control") else ""
    busy = prelude + textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from amd_pipeline.core.token_guard import TokenGuard
        guard, starts = TokenGuard("k", lock_dir={str(tmp_path)!r}), []
        for n in range(300):
            with guard.lease():
                starts.append(time.monotonic())
                if n == 0:
                    Path({str(tmp_path / "going")!r}).touch()
                time.sleep(0.005)
        print(json.dumps(starts))
    """)
    waiter = prelude + textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from amd_pipeline.core.token_guard import TokenGuard
        while not Path({str(tmp_path / "going")!r}).exists():
            time.sleep(0.001)
        guard, waits = TokenGuard("k", lock_dir={str(tmp_path)!r}), []
        for _ in range(10):
            began = time.monotonic()
            with guard.lease():
                waits.append((began, time.monotonic()))
                time.sleep(0.005)
            time.sleep(0.01)
        print(json.dumps(waits))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", s], stdout=subprocess.PIPE, text=True) for s in (busy, waiter)]
    starts, waits = (json.loads(p.communicate(timeout=60)[0]) for p in procs)
    passed_by = [sum(began < start < got for start in starts) for began, got in waits]
    if gate == "gate":
        assert max(passed_by) <= 2, passed_by  # 0 or 1, and 2 when the machine is busy
    else:  # without the gate the busy process takes the token again and again while the other waits
        assert max(passed_by) > 2, passed_by


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


STATE_LOCK_REMOVED = (
    "import contextlib\n"
    "from amd_pipeline.core import token_guard\n"
    "class NoLock:\n"
    "    def __init__(self, *args, **kwargs): pass\n"
    "    def acquire(self, **kwargs): return contextlib.nullcontext()\n"
    "token_guard.FileLock = NoLock\n"
)


@pytest.mark.parametrize("lock", ["held", "control: lock removed"])
@pytest.mark.parametrize("windows", PLATFORMS)
@CONTENTION
def test_facts_learned_by_processes_at_once_are_all_kept(tmp_path, lock, windows):
    # Three processes each record 40 facts about one token's server at the same time (read, change, rename).
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from amd_pipeline.core.token_guard import TokenState
        from amd_pipeline_tests.barrier import wait_at_barrier
        wait_at_barrier(Path({str(tmp_path)!r}), 3)
        state = TokenState(Path({str(tmp_path)!r}) / "k.state.json")
        for n in range(40):
            state.set(f"{{os.getpid()}}-{{n}}", n)
    """)
    prelude = STATE_LOCK_REMOVED if lock.startswith("control") else ""
    env = windows_like() if windows else None
    procs = [subprocess.Popen([sys.executable, "-c", prelude + script], env=env) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    kept = len(json.loads((tmp_path / "k.state.json").read_text()))
    if lock == "held":
        assert kept == 120
    else:  # two processes read the same facts, each writes back its own plus them: one's is lost
        assert kept < 120
