"""Older ``duckdb`` releases, each installed by the test run itself into a folder of its own, and a way
to query a file with one of them in a separate interpreter (CI has no other way to get them).

The folders live outside the clone, in the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``amd_pipeline_tests/old-duckdb/<version>``; ``AMD_TESTS_CACHE`` names another place), so a fresh
clone reuses what an earlier one installed. Installing holds a file lock (``filelock``, which Dagster
brings): pytest-xdist's workers, or two clones' suites, never install one release twice at once; a
release is built beside its final place and renamed into it, so an interrupted install is never reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

INSTALL_TIMEOUT = 600


def cache_root() -> Path:
    """Where the test suite keeps what it installs for itself, outside any clone."""
    if os.environ.get("AMD_TESTS_CACHE"):
        return Path(os.environ["AMD_TESTS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "amd_pipeline_tests"


# Runs in the old release's interpreter: every name's rows, each value as DuckDB itself prints it.
DUMP = """
import json, sys
sys.path.insert(0, sys.argv[1])
import duckdb
con = duckdb.connect(sys.argv[2], read_only=True)
con.execute("SET TimeZone = 'UTC'")
out = {"version": duckdb.__version__, "rows": {}}
for name in sys.argv[3:]:
    rows = con.execute(f"SELECT COLUMNS(*)::VARCHAR FROM {name} ORDER BY ALL").fetchall()
    out["rows"][name] = [list(r) for r in rows]
print(json.dumps(out))
"""


def install(version: str) -> Path:
    """The folder holding ``duckdb==version`` (installed with pip the first time)."""
    cache = cache_root() / "old-duckdb"
    target = cache / version
    if (target / "duckdb").is_dir() and (target / ".complete").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{version}.lock"), timeout=INSTALL_TIMEOUT):
        if (target / "duckdb").is_dir() and (target / ".complete").exists():  # another process just did
            return target
        building = cache / f".{version}.{os.getpid()}.tmp"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(building),
                f"duckdb=={version}",
            ],
            check=True,
            timeout=INSTALL_TIMEOUT,
            capture_output=True,
        )
        (building / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
    return target


def dump(folder: Path | None, database: Path, names: list[str]) -> dict:
    """Rows of ``names`` in ``database`` read by the duckdb in ``folder`` (None: this environment's).

    Raises:
        ClientRefusedError: the release could not open or query the file (its error line).
    """
    # -S: no site-packages, so the interpreter imports the old release and nothing of this venv.
    flags = ["-S"] if folder is not None else []
    done = subprocess.run(
        [sys.executable, *flags, "-c", DUMP, str(folder or ""), str(database), *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise ClientRefusedError(done.stderr.strip() or f"exit status {done.returncode}")
    return json.loads(done.stdout)


class ClientRefusedError(RuntimeError):
    """The release could not open or query the file; the message is its error line."""
