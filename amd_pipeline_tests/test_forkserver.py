"""The fork server stands for a fresh process in everything but the imports, as a plain subprocess does."""

import json
import os
import subprocess
import time

import pytest

from amd_pipeline_tests import forkserver

pytestmark = [pytest.mark.posix, pytest.mark.linux]  # a fork server, process groups, /proc

REPORT = """
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "stdin": sys.stdin.read(),
                  "pid": os.getpid(), "pgid": os.getpgid(0)}))
print("to stderr", file=sys.stderr)
sys.exit(7)
"""


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "plain subprocess"])
def test_a_command_gets_exactly_its_environment_folder_arguments_and_input(tmp_path, monkeypatch, forked):
    monkeypatch.setenv("AMD_TESTS_FORKSERVER", "1" if forked else "0")
    monkeypatch.setenv("AMD_TESTS_NOT_PASSED", "x")  # in this process, not in the command's environment
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}
    done = forkserver.run(["a", "b c"], env=env, cwd=tmp_path, script=REPORT, stdin="some input")
    assert (done.returncode, done.stderr) == (7, "to stderr\n")
    seen = json.loads(done.stdout)
    assert seen["argv"] == ["a", "b c"] and seen["cwd"] == str(tmp_path) and seen["stdin"] == "some input"
    assert {k: v for k, v in seen["env"].items() if k not in ("PWD", "LC_CTYPE")} == env
    assert seen["pid"] not in (os.getpid(), os.getppid()) and seen["pgid"] == seen["pid"]  # a group of its own


def test_the_cli_ends_with_its_own_exit_status_and_one_line(tmp_path):
    done = forkserver.run(["query", "SELECT 1"], env={"PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: data/amd.duckdb does not exist yet; run `amd-pipeline demo` or a backfill first\n"


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "plain subprocess"])
def test_a_command_past_its_timeout_is_killed(tmp_path, monkeypatch, forked):
    monkeypatch.setenv("AMD_TESTS_FORKSERVER", "1" if forked else "0")
    started = forkserver.start([], env={}, cwd=tmp_path, script="import time; print('up', flush=True); time.sleep(60)")
    with pytest.raises(subprocess.TimeoutExpired):
        started.wait(timeout=1)
    deadline = time.monotonic() + 30  # killed, then reaped by its parent
    while time.monotonic() < deadline and os.path.exists(f"/proc/{started.pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{started.pid}")
