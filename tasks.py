"""The quick start's commands on any OS, for where `make` is missing (Windows): ``py tasks.py demo``.

    py tasks.py demo      create .venv, install, backfill 3 weeks from the simulator (= make demo)
    py tasks.py test      create .venv, install, ruff and the whole test suite (= make test)
    py tasks.py check     the inner loop: ruff and the tests that start no end-to-end process (= make check)
    py tasks.py dev       the Dagster UI and daemon on http://localhost:3000 (= make dev)
    py tasks.py install   create .venv and install the project and its tools

``--dry-run`` prints the commands instead. Standard library only: it runs before anything is installed.
"""

# On Linux and macOS ``python3 tasks.py ...`` does what the Makefile does; the Makefile stays the Linux quick
# start (.ci/run runs `make test`).

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

ROOT = Path(__file__).resolve().parent
VENV = ".venv"
# Every core (at most 4), one worker each; the Makefile's PARALLEL (test_portable.py keeps them equal).
PARALLEL = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadgroup"]
LINT = [["ruff", "format", "--check", "."], ["ruff", "check", "."]]
TASKS = {
    "install": [],
    "demo": [["amd-pipeline", "demo"]],
    "lint": LINT,
    "test": [*LINT, ["pytest", *PARALLEL]],
    "check": [*LINT, ["pytest", *PARALLEL, "-m", "not slow and not postgres"]],
    "dev": [["amd-pipeline", "dev"]],
}


def venv_bin(windows: bool) -> PurePath:
    r"""Where a venv keeps its programs: ``.venv\Scripts`` on Windows, ``.venv/bin`` elsewhere."""
    return PureWindowsPath(VENV, "Scripts") if windows else PurePosixPath(VENV, "bin")


def program_path(name: str, windows: bool) -> PurePath:
    """The path of the venv's program ``name`` (``.exe`` on Windows), relative to the project folder."""
    return venv_bin(windows) / (f"{name}.exe" if windows else name)


def program(name: str, windows: bool) -> str:
    """The venv's program ``name`` as a command-line string (:func:`program_path`)."""
    return str(program_path(name, windows))


def install_steps(python: str, windows: bool) -> list[list[str]]:
    """The commands that create .venv with ``python``, upgrade its pip and install the project with its tools."""
    venv_python = program("python", windows)
    return [
        [python, "-m", "venv", VENV],
        [venv_python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [venv_python, "-m", "pip", "install", "--quiet", "-e", ".[dev]"],
    ]


def installed(windows: bool, root: Path = ROOT) -> bool:
    """Installed after the last change to pyproject.toml (the Makefile's rule, on the same file)."""
    stamp = root.joinpath(*program_path("amd-pipeline", windows).parts)
    return stamp.exists() and stamp.stat().st_mtime >= (root / "pyproject.toml").stat().st_mtime


def plan(task: str, windows: bool, python: str = sys.executable, root: Path = ROOT) -> list[list[str]]:
    """The commands ``task`` runs, from the project folder, installing first unless up to date."""
    steps = [] if installed(windows, root) else install_steps(python, windows)
    return steps + [[program(argv[0], windows), *argv[1:]] for argv in TASKS[task]]


def run(command: list[str]) -> int:
    """Run ``command`` from the project folder and return its exit status.

    Ctrl-C reaches the command too (one terminal group, or one Windows console), so this waits for it
    to stop itself: ``subprocess.call`` would kill it at once, in the middle of its own stop (``dev``
    then could not kill what is left of ``dagster dev``'s tree after its grace, pytest could not end its
    fixtures).
    """
    child = subprocess.Popen(command, cwd=ROOT)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def main(argv: list[str]) -> int:
    """Run (or with ``--dry-run`` print) the task named in ``argv``; return the exit status (2 for a wrong task)."""
    args = [a for a in argv if a != "--dry-run"]
    if len(args) != 1 or args[0] not in TASKS:
        wrong = f"{' '.join(args)!r} is not a task" if args else "no task given"
        usage = __doc__.split("\n\n")[1]
        print(f"error: {wrong}: name one of {', '.join(TASKS)}\n{usage}", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):  # noqa: UP036  (it runs before anything is installed, maybe on an older Python)
        print(
            f"error: amd_pipeline needs Python 3.11 or newer, this is {sys.version.split()[0]}: py -3.11 tasks.py ...",
            file=sys.stderr,
        )
        return 2
    windows, dry_run = os.name == "nt", "--dry-run" in argv
    installing = not installed(windows)
    for command in plan(args[0], windows):
        print("+ " + (subprocess.list2cmdline(command) if windows else " ".join(command)), flush=True)
        if dry_run:
            continue
        code = run(command)
        if code:
            return code
        if installing and "-e" in command:  # as the Makefile does: pip may leave it older than pyproject.toml
            os.utime(ROOT.joinpath(*program_path("amd-pipeline", windows).parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
