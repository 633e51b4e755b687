"""Windows and macOS: the source holds nothing POSIX-only outside one room, the package runs with the
POSIX-only modules hidden (as on Windows), its locks are freed when their holder dies, and every file
it writes has a name Windows allows. No Windows machine is at hand: what this cannot show is in
docs/operating.md#windows-and-macos."""

import ast
import datetime as dt
import errno
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path, PurePosixPath

import pytest

from amd_pipeline.core.portable import port_refusal
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, truth_for_day
from amd_pipeline_tests import test_cli
from amd_pipeline_tests.barrier import runs_at_once
from amd_pipeline_tests.conftest import CAMPAIGNS, CONTENTION
from amd_pipeline_tests.portable_rules import posix_only_uses, windows_name_problem
from amd_pipeline_tests.windows_like import ROOT, windows_like

PACKAGE = ROOT / "amd_pipeline"
PORTABLE = PACKAGE / "core" / "portable.py"
CLI_MAIN = "import sys; from amd_pipeline.cli import main; sys.exit(main())"


# --- the source -------------------------------------------------------------------------------------


def test_nothing_posix_only_outside_the_platform_module():
    found = {
        str(path.relative_to(ROOT)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PORTABLE and (uses := posix_only_uses(path.read_text(), str(path)))
    }
    assert found == {}, "move these into amd_pipeline/core/portable.py, with a Windows branch"


def test_tests_that_need_posix_or_linux_are_marked_so_other_systems_skip_them():
    unmarked = []
    for path in sorted((ROOT / "amd_pipeline_tests").glob("test_*.py")):
        source = path.read_text()
        module_marks = " ".join(re.findall(r"^pytestmark = (.*)$", source, re.MULTILINE))
        for node in ast.parse(source).body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            if node.name == "test_tests_that_need_posix_or_linux_are_marked_so_other_systems_skip_them":
                continue  # this one only names /proc
            text = ast.get_source_segment(source, node)
            marks = module_marks + " ".join(ast.unparse(d) for d in node.decorator_list)
            if posix_only_uses(textwrap.dedent(text)) and "mark.posix" not in marks:
                unmarked.append(f"{path.name}::{node.name} (posix)")
            if "/proc" in text and "mark.linux" not in marks:
                unmarked.append(f"{path.name}::{node.name} (linux)")
    assert unmarked == []


def test_the_source_rule_finds_what_windows_lacks():
    # Control: the rule flags the import the old token_guard.py had, also behind a try at module level...
    old_token_guard = "import fcntl\n" + (PACKAGE / "core" / "token_guard.py").read_text()
    assert "1: module-level import of fcntl" in posix_only_uses(old_token_guard)
    assert posix_only_uses("try:\n    import pwd\nexcept ImportError:\n    pwd = None\n") == [
        "2: module-level import of pwd"
    ]
    assert posix_only_uses("import msvcrt\n") == ["1: module-level import of msvcrt"]
    # ... calls that exist only on POSIX, wherever they are; but an import inside a function is allowed.
    assert posix_only_uses("import os, signal\ndef stop(p):\n    os.killpg(p, signal.SIGKILL)\n") == [
        "3: os.killpg",
        "3: signal.SIGKILL",
    ]
    assert posix_only_uses("subprocess.Popen(argv,\n    start_new_session=True)\n") == ["2: start_new_session="]
    assert posix_only_uses("def f():\n    import fcntl\n") == []


# --- the package with the POSIX-only modules hidden -------------------------------------------------------

IMPORT_EVERYTHING = textwrap.dedent("""
    import importlib, pkgutil
    import amd_pipeline
    names = [m.name for m in pkgutil.walk_packages(amd_pipeline.__path__, "amd_pipeline.")]
    names.remove("amd_pipeline.__main__")  # it runs the command line
    for name in names:
        importlib.import_module(name)
    from amd_pipeline.definitions import defs
    built = defs()
    print(len(names), len(list(built.resolve_all_asset_keys())))
""")


def test_the_package_imports_and_builds_its_definitions_without_posix_only_modules(tmp_path):
    env = {k: v for k, v in windows_like().items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modules, assets = map(int, done.stdout.split())
    assert modules > 40 and assets >= 2
    # Control: in that Python the old token_guard.py (fcntl at module level) does not import.
    old = (
        (PACKAGE / "core" / "token_guard.py")
        .read_text()
        .replace("import contextlib\n", "import contextlib\nimport fcntl\n", 1)
    )
    (tmp_path / "old_token_guard.py").write_text(old)
    control = subprocess.run(
        [sys.executable, "-c", "import old_token_guard"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert control.returncode == 1 and "import of fcntl halted" in control.stderr, control.stderr


# --- the port `dev` checks --------------------------------------------------------------------------------


def test_a_listening_port_is_refused_and_a_free_one_is_not():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert port_refusal("127.0.0.1", port).errno == errno.EADDRINUSE
    assert port_refusal("127.0.0.1", port) is None  # closed, in no TIME_WAIT: free again


# --- locks whose holder is killed -----------------------------------------------------------------------

HOLD = {
    "token": "from amd_pipeline.core.token_guard import TokenGuard\nheld = TokenGuard('k', lock_dir=D).lease()",
    "ledger": "from amd_pipeline.core.budget import CallLedger\n"
    "held = CallLedger(D / 'k.calls.json', 'America/Bogota')._exclusive()",
    "instance": "from amd_pipeline.orchestration.instance import init_lock\nheld = init_lock(D)",
}
TAKE = {
    "token": "from amd_pipeline.core.token_guard import TokenGuard\nwith TokenGuard('k', lock_dir=D).lease(): pass",
    "ledger": "from amd_pipeline.core.budget import CallLedger\n"
    "CallLedger(D / 'k.calls.json', 'America/Bogota').charge('cli', None)",
    "instance": "from amd_pipeline.orchestration.instance import open_instance, prepare_home\n"
    "open_instance(prepare_home(D)).dispose()",
}
# The control's prelude: each module's lock made a plain lock file (created exclusively, removed on
# release), the way a hand-written lock goes wrong: a killed holder leaves it behind. (filelock's own
# SoftFileLock would not do: it breaks a lock whose owner's pid is gone.)
LOCK_FILE_ONLY = textwrap.dedent("""
    import contextlib, os, time
    import amd_pipeline.core.token_guard, amd_pipeline.core.budget, amd_pipeline.orchestration.instance
    class LockFile:
        def __init__(self, path, mode=0o644):
            self.path = str(path)
        def acquire(self, poll_interval=0.005, blocking=True):
            while True:
                try:
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    return contextlib.closing(self)
                except FileExistsError:
                    if not blocking:
                        raise amd_pipeline.core.token_guard.Timeout(self.path) from None
                    time.sleep(poll_interval)
        def release(self):
            os.remove(self.path)
        close = release
        def __enter__(self):
            self.acquire()
            return self
        def __exit__(self, *exc):
            self.release()
    for m in (amd_pipeline.core.token_guard, amd_pipeline.core.budget, amd_pipeline.orchestration.instance):
        m.FileLock = LockFile
""")


@pytest.mark.slow  # 13 s of waiting in all: the controls' takers wait 2 s for a holder that is gone
@pytest.mark.posix
@pytest.mark.parametrize("lock", list(HOLD))
@pytest.mark.parametrize("kind", ["os lock", "control: lock file only"])
def test_a_lock_whose_holder_is_killed_is_free_again(tmp_path, lock, kind):
    prelude = (
        LOCK_FILE_ONLY if kind.startswith("control") else ""
    ) + f"from pathlib import Path\nD = Path({str(tmp_path)!r})\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", prelude + HOLD[lock] + "\nwith held:\n    print('held', flush=True)\n    input()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    os.kill(holder.pid, signal.SIGKILL)  # kill -9: no finally, no atexit
    holder.wait()
    taker = subprocess.Popen([sys.executable, "-c", prelude + TAKE[lock]])
    try:
        code = taker.wait(timeout=30 if kind == "os lock" else 2)
    except subprocess.TimeoutExpired:
        code = None
        taker.kill()
        taker.wait()
    assert code == (0 if kind == "os lock" else None)  # the control's taker still waits for the dead holder


# --- a backfill, the budget and the demo with the POSIX-only modules hidden ---------------------------------

START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 30)


def cli_env(sim: Simulator, folder: Path) -> dict[str, str]:
    """test_cli's environment in ``folder``, with the lock folder beside it (one token, one lane) and
    temporary files in it (walked for their names)."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    return test_cli.cli_env(sim, folder, AMD_LOCK_DIR=str(folder.parent / "locks"), TMPDIR=str(folder / "tmp"))


def two_at_once(sim: Simulator, tmp_path: Path, args: list[str], **extra: str) -> list[subprocess.CompletedProcess]:
    """Two ``amd-pipeline *args`` processes with the POSIX-only modules hidden, each with its own Dagster home
    and DuckDB file (only the lock folder is shared), whose runs start together (a barrier)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    results: list[subprocess.CompletedProcess] = []

    def go(name: str):
        folder = tmp_path / name
        folder.mkdir()
        env = windows_like({**cli_env(sim, folder), **extra}, prelude=runs_at_once(gate, 2), folder=folder)
        argv = [sys.executable, "-c", CLI_MAIN, *args]
        results.append(subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=300))

    threads = [threading.Thread(target=go, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def written_names_windows_refuses(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): problem
        for path in folder.rglob("*")
        if (problem := windows_name_problem(path.name))
    }


@pytest.mark.slow
@CONTENTION
def test_two_backfills_without_posix_only_modules_share_one_token_and_equal_the_truth(tmp_path):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=40)) as sim:
        results = two_at_once(sim, tmp_path, ["backfill", "--start", str(START), "--end", str(END), "--quiet"])
        stats = sim.stats()
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    for name in ("a", "b"):
        rows = AmdStore(tmp_path / name / "data" / "amd.duckdb").query(
            "SELECT campaign_id, local_date, total_amd FROM amd_daily"
        )
        assert len(rows) == 90 and set(rows.campaign_id) == set(CAMPAIGNS)
        assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    assert stats["calls"]["campaign_6:all"] == 60  # one call a day each
    # One token, one request in flight, and not by luck: both were calling during one common stretch
    # and the token passed between them (a backfill alone takes over a second of calls here).
    assert stats["overlaps"] == 0
    assert len(stats["clients"]) == 2 and stats["clients_overlap_seconds"] > 0.5 and stats["client_switches"] >= 5
    assert written_names_windows_refuses(tmp_path) == {}


@pytest.mark.slow
@CONTENTION
def test_two_backfills_without_posix_only_modules_stay_within_one_budget(tmp_path):
    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=100, daily_quota=40)) as sim:
        args = ["backfill", "--start", str(START), "--end", str(END), "--force", "--quiet"]
        results = two_at_once(sim, tmp_path, args, WOLKVOX_DAILY_QUOTA="40")  # a budget of 20: half of it
        stats = sim.stats()
    # Both stopped at the budget (exit 4), and between them they made its 20 calls, no more.
    assert sorted(r.returncode for r in results) == [4, 4], [r.stderr[-2000:] for r in results]
    ledger = json.loads((tmp_path / "locks").glob("*.calls.json").__next__().read_text())
    assert stats["requests"] == 20 == sum(ledger["calls"].values())
    assert len(stats["clients"]) == 2 and stats["client_switches"] >= 3, stats


@pytest.mark.slow
def test_the_demo_without_posix_only_modules_equals_the_truth_and_writes_only_names_windows_allows(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WOLKVOX_", "AMD_", "DAGSTER_"))}
    env = windows_like({**env, "AMD_LOCK_DIR": str(tmp_path / "locks"), "TMPDIR": str(tmp_path / "tmp")})
    (tmp_path / "tmp").mkdir()

    def amd(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", CLI_MAIN, *args]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    demo = amd("demo", "--days", "7")
    assert demo.returncode == 0, demo.stderr[-2000:]
    rows = AmdStore(tmp_path / "data" / "amd.duckdb").query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
    assert len(rows) == 21
    assert all(r.total_amd == truth_for_day(r.campaign_id, r.local_date.date()) for r in rows.itertuples())
    for args in (
        ["export", "--format", "csv", "--out", "exports"],
        ["report", "--out", "report.html", "--png-dir", "charts"],
    ):
        done = amd(*args)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20
    assert written_names_windows_refuses(tmp_path) == {}
    # Windows' classic limit is 260 characters for a whole path: leave the project folder 100 of them.
    longest = max(written, key=lambda p: len(str(p.relative_to(tmp_path))))
    assert len(str(longest.relative_to(tmp_path))) < 160, longest


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("amd.duckdb", None),
        ("2026-11-01|20717", "contains '|'"),  # a multi-partition key, as Dagster writes it
        ("report-2026-12-03T10:00.html", "contains ':'"),
        ("CON.lock", "is a reserved device name"),
        ("nul", "is a reserved device name"),
        ("console.lock", None),
        ("amd.", "ends with a dot or a space"),
    ],
)
def test_the_name_rule_refuses_what_windows_refuses(name, problem):
    assert windows_name_problem(name) == problem


# --- the quick start without make --------------------------------------------------------------------


def load_tasks():
    spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    return tasks


def makefile_recipes(text: str) -> dict[str, list[list[str]]]:
    """The commands each Makefile target runs, its prerequisite targets' first (but not the install's), its
    variables expanded."""
    variables = dict(re.findall(r"^(\w+) \??:?= (.*)$", text, re.MULTILINE))
    rules = re.findall(r"^(\w+):([^\n=]*)\n((?:\t.*\n)*)", text, re.MULTILINE)
    own = {
        target: [
            shlex.split(re.sub(r"\$\((\w+)\)", lambda m: variables[m[1]], line.strip())) for line in body.splitlines()
        ]
        for target, _, body in rules
    }
    prerequisites = {target: [p for p in deps.split() if p in own and p != "install"] for target, deps, _ in rules}

    def commands(target: str) -> list[list[str]]:
        return [c for p in prerequisites[target] for c in commands(p)] + own[target]

    return {target: commands(target) for target in own}


def test_tasks_py_runs_what_the_makefile_runs():
    tasks, recipes = load_tasks(), makefile_recipes((ROOT / "Makefile").read_text())

    def named(commands):  # .venv/bin/pytest -> pytest
        return [[PurePosixPath(c[0]).name, *c[1:]] for c in commands]

    for task in ("demo", "lint", "test", "check", "dev"):
        assert named(recipes[task]) == tasks.TASKS[task], task
    # Control: a Makefile whose tests run on one core no longer matches.
    one_core = makefile_recipes((ROOT / "Makefile").read_text().replace("-n auto", "-n 1"))
    assert named(one_core["test"]) != tasks.TASKS["test"]


def test_tasks_py_on_windows_installs_then_runs_from_the_venvs_scripts_folder(tmp_path):
    tasks = load_tasks()
    (tmp_path / "pyproject.toml").write_text("")
    fresh = tasks.plan("test", windows=True, python="py", root=tmp_path)
    assert fresh[0] == ["py", "-m", "venv", ".venv"]
    assert fresh[2] == [r".venv\Scripts\python.exe", "-m", "pip", "install", "--quiet", "-e", ".[dev]"]
    assert fresh[-1] == [r".venv\Scripts\pytest.exe", *tasks.PARALLEL]
    # Once installed (after the last change to pyproject.toml) it only runs the task.
    stamp = tmp_path / ".venv" / "Scripts" / "amd-pipeline.exe"
    stamp.parent.mkdir(parents=True)
    stamp.touch()
    assert tasks.plan("demo", windows=True, root=tmp_path) == [[r".venv\Scripts\amd-pipeline.exe", "demo"]]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tasks.py"), "--dry-run", "check"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.splitlines()[-1].endswith("-m not slow and not postgres")


def test_output_in_a_windows_code_page_shows_what_it_can_instead_of_failing(tmp_path):
    # On Windows, output to a file or a pipe is in the ANSI code page; a value it lacks must not end the command.
    import duckdb

    duckdb.connect(str(tmp_path / "x.duckdb")).close()
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    argv = [sys.executable, "-c", CLI_MAIN, "query", "SELECT 'Campaña → norte' AS name", "--duckdb", "x.duckdb"]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("cp1252").split() == ["name", "Campaña", "?", "norte"]


STOPS_SLOWLY = textwrap.dedent("""
    import pathlib, signal, sys, time
    def stop(*_):
        time.sleep(0.5)  # like amd-pipeline dev passing Ctrl-C on to dagster dev and waiting for it
        pathlib.Path(sys.argv[1]).write_text("stopped")
        sys.exit(3)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.mark.posix
@pytest.mark.parametrize("runner", ["tasks.run", "control: subprocess.call"])
def test_ctrl_c_lets_the_command_tasks_py_runs_stop_itself(tmp_path, runner):
    # Ctrl-C in a terminal reaches its whole foreground group: tasks.py and the command it runs.
    call = "tasks.run(argv)" if runner == "tasks.run" else "subprocess.call(argv)"
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the suite itself was started with SIGINT
    # ignored (a script's background job: every child inherits that, and the control would never see Ctrl-C).
    driver = textwrap.dedent(f"""
        import signal, subprocess, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(ROOT)!r})
        import tasks
        argv = [sys.executable, "-c", {STOPS_SLOWLY!r}, {str(tmp_path / "stopped")!r}]
        try:
            print({call})
        except KeyboardInterrupt:
            print("interrupted")
    """)
    group = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert group.stdout.readline() == "ready\n"
    os.killpg(group.pid, signal.SIGINT)
    out = group.communicate(timeout=30)[0]
    if runner == "tasks.run":
        assert out == "3\n" and (tmp_path / "stopped").exists()  # its own exit status, after its own stop
    else:  # subprocess.call kills the command on Ctrl-C: it never finishes stopping
        assert out == "interrupted\n" and not (tmp_path / "stopped").exists()
