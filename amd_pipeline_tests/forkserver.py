"""A pre-warmed fork server: the tests' ``amd-pipeline`` commands and helper scripts as real processes,
without paying Dagster's, pandas' and DuckDB's imports in each one.

One server per test process (per pytest-xdist worker) imports the heavy modules once, starts no thread,
and forks a fresh process per command. That process is a real one (its own pid, memory, file locks,
exit status, stdout and stderr), with the environment, working folder and arguments the test gives it;
only the imports are shared. What a fork cannot stand for stays a ``subprocess`` in the tests: a fresh
interpreter's imports (test_layers.py, test_definitions.py), signals and process trees (``dev``),
``kill -9`` mid-run.

Each command runs in a grandchild: the server forks a handler per request, which forks the command,
waits for it and reports its exit status, so the server itself never waits. ``AMD_TESTS_FORKSERVER=0``
runs every command as a plain subprocess instead (the same tests, slower), to compare the two.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "amd-pipeline")
# The command's own entry, for a script that changes something first (a test's control or barrier).
CLI_MAIN = "import sys; from amd_pipeline.cli import main; sys.exit(main())\n"
# What every command pays otherwise: about 1.5 s of imports a process on the 2-core machine.
PRELOAD = (
    "dagster",
    "dagster_postgres",
    "pandas",
    "duckdb",
    "amd_pipeline.cli.commands",
    "amd_pipeline.cli.backfill",
    "amd_pipeline.cli.demo",
    "amd_pipeline.orchestration.build",
    "amd_pipeline.core.report",
    "amd_pipeline.core.export",
)


# --- the server -------------------------------------------------------------------------------------


def serve(socket_path: str) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    assert threading.active_count() == 1, "a thread in the server would be lost in every fork"
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the handlers reap themselves
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            _handle(conn)
        conn.close()


def _handle(conn: socket.socket) -> None:
    """In the handler: fork the command, tell the client its pid, wait, tell it the exit status."""
    try:
        request = json.loads(conn.makefile("rb").readline())
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # so waitpid below sees the command end
        pid = os.fork()
        if pid == 0:
            conn.close()
            _command(request)
        with contextlib.suppress(OSError):  # also here, so a kill sent before the child set it reaches it
            os.setpgid(pid, pid)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def _command(request: dict) -> None:
    """In the command's process: its folder, environment and files, then the CLI's main or the script."""
    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own, as a shell gives a command: a kill reaches what it started
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as from a terminal
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        files = [(request["stdin"], os.O_RDONLY), (request["stdout"], os.O_WRONLY), (request["stderr"], os.O_WRONLY)]
        for fd, (path, mode) in enumerate(files):
            opened = os.open(path, mode)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = list(request["argv"])
        if request["script"] is None:
            from amd_pipeline.cli import main

            main()  # as the installed command: it ends the process itself
        else:
            exec(compile(request["script"], "<string>", "exec"), {"__name__": "__main__"})
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


# --- the client -------------------------------------------------------------------------------------


class Process:
    """A command started by :func:`start`: ``wait()`` returns a ``CompletedProcess`` with text output."""

    def __init__(self, argv: list[str], folder: Path, conn: socket.socket | None, popen: subprocess.Popen | None):
        self.args, self._folder, self._conn, self._popen = argv, folder, conn, popen
        self._reader = conn.makefile("rb") if conn else None
        self.pid = json.loads(self._reader.readline())["pid"] if self._reader else popen.pid

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        try:
            if self._popen is not None:
                try:
                    returncode = self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
                    self._popen.wait()  # reaped, not left a zombie
                    raise
            else:
                self._conn.settimeout(timeout)
                try:
                    returncode = json.loads(self._reader.readline())["returncode"]
                except TimeoutError:
                    self.kill()
                    raise subprocess.TimeoutExpired(self.args, timeout) from None
            out, err = ((self._folder / name).read_text() for name in ("stdout", "stderr"))
            return subprocess.CompletedProcess(self.args, returncode, out, err)
        finally:
            if self._conn is not None:
                self._conn.close()
            shutil.rmtree(self._folder, ignore_errors=True)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


class _Server:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="amd-fork-"))
        self.path = str(self.folder / "s")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from amd_pipeline_tests.forkserver import serve; serve({self.path!r})"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the terminal's Ctrl-C is for pytest, which then stops it
        )
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the fork server did not start (exit status {self.proc.wait()})")

    def connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        return conn

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: _Server | None = None
_lock = threading.Lock()


def _the_server() -> _Server:
    global _server
    with _lock:
        if _server is None or _server.proc.poll() is not None:
            _server = _Server()
            atexit.register(_server.close)
        return _server


def enabled() -> bool:
    """On unless ``AMD_TESTS_FORKSERVER=0``, or where there is no fork (Windows)."""
    return os.environ.get("AMD_TESTS_FORKSERVER", "1") != "0" and hasattr(os, "fork")


def start(
    argv: list[str], *, env: dict[str, str], cwd: str | os.PathLike[str], script: str | None = None, stdin: str = ""
) -> Process:
    """Start ``amd-pipeline *argv`` (or, with ``script``, ``python -c script *argv``) in ``cwd`` with exactly
    ``env``; ``stdin`` is what it reads."""
    folder = Path(tempfile.mkdtemp(prefix="amd-cmd-"))
    (folder / "stdin").write_text(stdin)
    files = {name: str(folder / name) for name in ("stdin", "stdout", "stderr")}
    for name in ("stdout", "stderr"):
        Path(files[name]).touch()
    if not enabled():
        command = [CLI, *argv] if script is None else [sys.executable, "-c", script, *argv]
        with open(files["stdin"]) as i, open(files["stdout"], "w") as o, open(files["stderr"], "w") as e:
            popen = subprocess.Popen(command, env=env, cwd=cwd, stdin=i, stdout=o, stderr=e, start_new_session=True)
        return Process(command, folder, None, popen)
    conn = _the_server().connect()
    shown = ["amd-pipeline", *argv] if script is None else ["-c", *argv]
    request = {"argv": shown, "script": script, "env": dict(env), "cwd": str(cwd), **files}
    conn.sendall(json.dumps(request).encode() + b"\n")
    return Process(shown, folder, conn, None)


def run(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | os.PathLike[str],
    script: str | None = None,
    stdin: str = "",
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """:func:`start`, then wait for it."""
    return start(argv, env=env, cwd=cwd, script=script, stdin=stdin).wait(timeout)
