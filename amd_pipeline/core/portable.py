"""What differs between Windows and the POSIX systems (Linux, macOS), in one room. No dagster.

Every other module is written once for all three: file locks come from ``filelock`` (``flock`` on
Linux and macOS, ``msvcrt.locking`` on Windows), paths from :mod:`pathlib`. What cannot be written once
lives here, each function with its Windows branch beside the POSIX one, and ``test_portable.py`` fails
on a module-level import of a POSIX-only (or Windows-only) module anywhere else in the package.
"""

from __future__ import annotations

import os
import sys

WINDOWS = sys.platform == "win32"


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists on this machine.

    On Windows ``os.kill(pid, 0)`` would not ask: signal 0 is ``CTRL_C_EVENT`` there. psutil (which
    Dagster requires on Windows) asks the OS instead.
    """
    if WINDOWS:
        import psutil

        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
