"""Put this folder first on PYTHONPATH and the Python started with it has no POSIX-only module, as on Windows.

Python imports ``sitecustomize`` at start-up, before anything else: every later ``import fcntl``
(or ``termios``, ``pwd``, ...) raises ``ImportError``, as it does on Windows. What this cannot hide
(``os.fork``, ``signal.SIGKILL``) ``test_portable.py`` looks for in the source instead.
``AMD_TESTS_PRELUDE``, if set, names a file of test code run right after (a barrier, a patch).
"""

import os
import sys
import warnings

HIDDEN = ("fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog", "posix_ipc")
for _name in HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]  # `import fcntl` now raises ImportError

# Without fcntl, filelock falls back to lock files created exclusively (on Windows it uses msvcrt) and says so.
warnings.filterwarnings("ignore", "only soft file lock is available")

if os.environ.get("AMD_TESTS_PRELUDE"):
    with open(os.environ["AMD_TESTS_PRELUDE"]) as _file:
        exec(compile(_file.read(), os.environ["AMD_TESTS_PRELUDE"], "exec"))
