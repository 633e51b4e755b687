"""Processes that see Python as a Windows user's lacks it: every POSIX-only module hidden (sitecustomize.py)."""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
ROOT = FOLDER.parents[1]


def windows_like(env: dict[str, str] | None = None, prelude: str | None = None, folder: Path | None = None) -> dict:
    """``env`` (default: this process's) for a Python that starts without fcntl, pwd, termios...

    ``prelude``: test code run at start-up right after (written to a file in ``folder``). The project
    root stays importable (``amd_pipeline_tests``), whatever the process's working folder.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(FOLDER), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if prelude:
        path = Path(folder or ".") / f"prelude-{os.getpid()}-{len(prelude)}-{hash(prelude) & 0xFFFF:x}.py"
        path.write_text(prelude)
        env["AMD_TESTS_PRELUDE"] = str(path.resolve())
    return env
