"""The systemd units in ``deploy/`` and the environment file they read (``deploy/env.example``).

``systemd-analyze verify`` checks the units' syntax, every directive's value, and that the ExecStart=
and ExecStartPre= binaries exist and are executable. It needs no running systemd (it works in a
container). The units name ``/opt/amd_pipeline/.venv/bin/...``, which does not exist on a test machine,
so the tests verify a copy whose venv paths point at this venv's binaries; nothing else is changed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amd_pipeline.core.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
WEBSERVER = "amd-pipeline-webserver.service"
DAEMON = "amd-pipeline-daemon.service"
UNITS = (WEBSERVER, DAEMON)
INSTALLED_VENV_BIN = "/opt/amd_pipeline/.venv/bin/"
ENV_FILE = "/etc/amd-pipeline/env"
# The modules that read environment variables (core/settings.py checks them, orchestration/build.py hands them to
# resources as EnvVar). A name the env file sets must be read in one of them.
SETTINGS_READERS = (
    ROOT / "amd_pipeline" / "core" / "settings.py",
    ROOT / "amd_pipeline" / "orchestration" / "build.py",
    ROOT / "amd_pipeline" / "orchestration" / "operations.py",
)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not on PATH (Debian/Ubuntu: apt-get install systemd), "
    "so the unit files in deploy/ were NOT verified",
)


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (all sections), each key's values in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def env_assignments(text: str) -> list[str]:
    """The names the env file sets, including commented-out examples like ``#WOLKVOX_BASE_URL=...``."""
    return re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", text, flags=re.MULTILINE)


def localise(unit: str, tmp_path: Path, breakage: tuple[str, str] | None = None) -> Path:
    """Copy ``deploy/<unit>`` into tmp_path with the venv paths pointing at this venv's binaries.

    Only ``/opt/amd_pipeline/.venv/bin/`` is rewritten: ``verify`` checks that the ExecStart*= binaries
    exist, and on a test machine that venv does not. ``User=amd`` is kept: ``verify`` (systemd 252)
    does not look the user up; if a later systemd does, this test fails loudly rather than passing
    because the check was removed. ``WorkingDirectory=``, ``EnvironmentFile=`` and ``ReadWritePaths=``
    are only checked when a unit starts, not by ``verify``.
    """
    text = (DEPLOY / unit).read_text()
    venv_bin = Path(sys.executable).parent
    text = text.replace(INSTALLED_VENV_BIN, f"{venv_bin}/")
    if breakage is not None:
        old, new = breakage
        assert old in text, f"the control cannot break {unit}: {old!r} is not in it"
        text = text.replace(old, new)
    path = tmp_path / unit
    path.write_text(text)
    return path


def verify(paths: list[Path]) -> tuple[int, list[str], str]:
    """Run ``systemd-analyze verify``: its exit status, the output lines naming the units, all output.

    verify exits 0 on some real mistakes (an unknown directive, a value it cannot parse: it prints
    "..., ignoring" and goes on), so a clean unit is exit status 0 *and* no line naming it. Lines about
    other units on the machine (distribution units with deprecated settings) are not ours to judge.
    """
    env = {
        **os.environ,
        # Warnings included, debug chatter left out, whatever the caller's environment says.
        "SYSTEMD_LOG_LEVEL": "info",
        "SYSTEMD_LOG_COLOR": "0",
        "SYSTEMD_LOG_LOCATION": "0",
        "SYSTEMD_PAGER": "cat",
        "LC_ALL": "C",
    }
    # --man=no: the units' Documentation= is not a man page, and man(1) may be missing on CI.
    proc = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    names = [p.name for p in paths]
    problems = [line for line in output.splitlines() if any(name in line for name in names)]
    return proc.returncode, problems, output


@needs_systemd_analyze
def test_verify_accepts_the_units(tmp_path: Path) -> None:
    paths = [localise(unit, tmp_path) for unit in UNITS]
    for path in paths:
        settings = unit_settings(path.read_text())
        for command in settings["ExecStartPre"] + settings["ExecStart"]:
            binary = Path(shlex.split(command)[0])
            assert binary.is_file(), f"{path.name}: the venv path rewrite missed {binary}"
    status, problems, output = verify(paths)
    assert status == 0, f"systemd-analyze verify exited {status}:\n{output}"
    assert problems == [], "systemd-analyze verify complained about the units:\n" + "\n".join(problems)


# Controls: the same check must reject a broken copy, or a pass above would mean nothing. The last
# element is a fragment verify's complaint must contain, so each control fails for its own reason.
BREAKAGES = {
    "misspelled ExecStart": (("ExecStart=", "ExecStrat="), "ExecStrat"),
    "no ExecStart": (("ExecStart=", "#ExecStart="), "no ExecStart="),
    "misspelled directive": (("RestartSec=", "RestartSex="), "Unknown key"),
    "bad value": (("Restart=always", "Restart=allways"), "allways"),
    "missing binary": (("/bin/dagster-", "/bin/no-such-dagster-"), "not executable"),
}


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_verify_rejects_a_broken_unit(tmp_path: Path, unit: str, breakage: str) -> None:
    (old_new, expected) = BREAKAGES[breakage]
    path = localise(unit, tmp_path, old_new)
    status, problems, output = verify([path])
    assert status != 0 or problems, f"verify accepted a unit with a {breakage}:\n{path.read_text()}"
    assert expected in output, output


def test_env_example_names_only_settings_the_code_reads() -> None:
    text = (DEPLOY / "env.example").read_text()
    names = env_assignments(text)
    assert {"WOLKVOX_TOKEN", "WOLKVOX_SERVER", "AMD_DUCKDB_PATH", "AMD_LOCK_DIR"} <= set(names)
    sources = "\n".join(path.read_text() for path in SETTINGS_READERS)
    # WOLKVOX_TOKEN_<ID>: an operation's token, the variable its defs.yaml names (token_env)
    unknown = [
        name for name in names if not name.startswith(("DAGSTER_", "WOLKVOX_TOKEN_")) and f'"{name}"' not in sources
    ]
    assert unknown == [], f"env.example sets names amd_pipeline does not read: {unknown}"


def test_env_example_is_commented_and_systemd_readable() -> None:
    lines = (DEPLOY / "env.example").read_text().splitlines()
    for number, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        # EnvironmentFile= has no inline comments; no spaces or quotes keeps `set -a; . file` identical.
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^\s'\"#]*", line), f"line {number + 1}: {line!r}"
        assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment above it: {line!r}"


def test_env_example_values_pass_the_settings_checks() -> None:
    text = (DEPLOY / "env.example").read_text()
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    settings = RunSettings.from_env(values)
    assert settings.base_url == "https://wv0010.wolkvox.com"
    assert settings.definition.timezone == "America/Bogota"
    assert values["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")


@pytest.mark.parametrize("unit", UNITS)
def test_units_read_the_env_file_and_share_one_instance(unit: str) -> None:
    settings = unit_settings((DEPLOY / unit).read_text())
    assert settings["EnvironmentFile"] == [ENV_FILE]
    assert settings["Environment"] == [
        "DAGSTER_HOME=/var/lib/amd-pipeline/dagster_home",
        "DAGSTER_EVENT_BATCH_SIZE=1000",  # batched event writes in every process the unit starts
    ]
    assert settings["User"] == ["amd"] and settings["Group"] == ["amd"]
    # The daemon's run workers must get SIGTERM themselves (see the comment in the daemon's unit).
    assert settings["KillMode"] == [{WEBSERVER: "mixed", DAEMON: "control-group"}[unit]]
    (command,) = settings["ExecStart"]
    argv = shlex.split(command)
    assert argv[0].startswith(INSTALLED_VENV_BIN)
    assert argv[argv.index("-w") + 1] == "/opt/amd_pipeline/workspace.yaml"
    # ProtectSystem=strict: the only writable places are these, so the files the env sets must be in them.
    writable = settings["ReadWritePaths"][0].split()
    env_text = (DEPLOY / "env.example").read_text()
    for name in ("AMD_DUCKDB_PATH", "AMD_LOCK_DIR"):
        (value,) = re.findall(rf"^{name}=(\S+)$", env_text, flags=re.MULTILINE)
        assert any(value.startswith(folder + "/") for folder in writable), f"{name}={value} is not in {writable}"


def test_webserver_listens_on_localhost_only() -> None:
    text = (DEPLOY / WEBSERVER).read_text()
    (command,) = unit_settings(text)["ExecStart"]
    argv = shlex.split(command)
    assert Path(argv[0]).name == "dagster-webserver"
    assert argv[argv.index("-h") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in text


def test_start_pre_writes_the_instance_config(tmp_path: Path) -> None:
    """ExecStartPre= creates DAGSTER_HOME with amd_pipeline's dagster.yaml (token pool limit 1)."""
    for unit in UNITS:
        (command,) = unit_settings((DEPLOY / unit).read_text())["ExecStartPre"]
        argv = shlex.split(command)
        assert argv[0] == INSTALLED_VENV_BIN + "python"
        home = tmp_path / unit / "dagster_home"
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        subprocess.run([sys.executable, *argv[1:]], env=env, cwd=ROOT, check=True, timeout=60)
        assert "default_limit: 1" in (home / "dagster.yaml").read_text()


def test_units_installed_before_the_package_split_still_prepare_the_home(tmp_path: Path) -> None:
    """Units copied into /etc/systemd/system earlier name the old path; they keep working."""
    old = "from amd_pipeline.instance import prepare_home; prepare_home()"
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    subprocess.run([sys.executable, "-c", old], env=env, cwd=ROOT, check=True, timeout=60)
    assert "default_limit: 1" in (home / "dagster.yaml").read_text()
