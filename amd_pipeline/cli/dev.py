"""`dagster dev` as a child of `amd-pipeline dev`, stopped with everything it started however `dev` was launched.

Started in the background (`... &` in a script, ``nohup``), `dev` gets SIGINT ignored, which stays ignored in every
program it starts; `dagster dev`, its webserver and daemon stop through SIGINT, so then only SIGKILL ends them.
Here the stop signals are caught (a caught signal is back at its default in a program started after it, so the
tree gets a working Ctrl-C), passed on to the tree as Ctrl-C, and whatever is left ``STOP_GRACE_S`` later is
killed. What differs on Windows is in ``core/portable.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.messages import EXIT_INTERRUPTED
from amd_pipeline.core.portable import ProcessTree, port_refusal, stop_signals

# Host dagster dev's webserver binds by default (dagster_webserver's DEFAULT_WEBSERVER_HOST).
DEV_HOST = "127.0.0.1"
# How long the tree has to end after a stop signal before what is left is killed; dagster dev's own stop takes
# a few seconds (docs/operating.md, "Stopping dev").
STOP_GRACE_S = 10.0
_POLL_S = 0.2


def refuse_busy_port(port: int) -> None:
    """Raise :class:`SettingsError` (exit 2) when the UI could not listen on ``port``.

    dagster dev would start its daemon anyway and serve no UI.
    """
    error = port_refusal(DEV_HOST, port)
    if error is None:
        return
    import errno

    if error.errno == errno.EADDRINUSE:
        reason = "is already in use (another `amd-pipeline dev` or `dagster dev`?)"
    else:
        reason = f"cannot be used ({error.strerror or error})"
    raise SettingsError(f"port {port} on {DEV_HOST} {reason}: stop what holds it, or pick another with --port N")


def run_dagster_dev(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` (`dagster dev ...`) until it ends; Ctrl-C, SIGTERM and SIGHUP stop its whole tree.

    Returns its exit status, or ``EXIT_INTERRUPTED`` when part of it had to be killed after the grace.
    """
    stopped: list[float] = []  # when the first stop signal came
    tree: ProcessTree | None = None

    def on_stop(signum: int, frame) -> None:
        if not stopped:
            stopped.append(time.monotonic())
        if tree is not None:
            tree.interrupt()

    previous = {sig: signal.signal(sig, on_stop) for sig in stop_signals()}
    killed = False
    try:
        tree = ProcessTree(argv, env)
        if stopped:  # a signal came while it was being started
            tree.interrupt()
        while True:
            try:
                code = tree.wait(_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if stopped and not killed and time.monotonic() > stopped[0] + STOP_GRACE_S:
                    killed = _kill_rest(tree)
        # dagster dev ended: the rest of its tree (a code server, a run worker) gets the rest of the grace.
        deadline = (stopped[0] if stopped else time.monotonic()) + STOP_GRACE_S
        while tree.alive() and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if tree.alive():
            if killed:  # killed already: zombies not yet reaped by init still count as the group's members
                tree.kill()
            else:
                killed = _kill_rest(tree)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tree is not None and tree.process.poll() is None:  # an error of ours: leave nothing behind
            tree.kill()
            tree.process.wait()
    if killed and stopped:
        return EXIT_INTERRUPTED
    return code if code >= 0 else 128 - code


def _kill_rest(tree: ProcessTree) -> bool:
    print(
        f"dev: what `dagster dev` started did not end within {STOP_GRACE_S:g} s; killing what is left of it",
        file=sys.stderr,
        flush=True,
    )
    tree.kill()
    return True
