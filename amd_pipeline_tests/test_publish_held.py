"""A published file that a program holds open, as on Windows: the load succeeds, nothing is lost, the
person reads one line naming the file and its holder, and the next publish lands every row.

Windows refuses ``os.replace`` over a file another program has open (WinError 5 or 32, a
``PermissionError``). Linux does not, so these tests make the rename over the published file fail that
way; the holder is a real child process with the file open, found through ``/proc``.
"""

import contextlib
import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from amd_pipeline.core import portable
from amd_pipeline.core import publish as publish_module
from amd_pipeline.core.errors import PublishHeldError
from amd_pipeline.core.messages import explain
from amd_pipeline.core.normalize import to_frame
from amd_pipeline.core.publish import REPLACE_WAITS
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.core.store import AmdStore
from amd_pipeline.orchestration.build import AMD_DAILY_JOB
from amd_pipeline.orchestration.location import build_definitions
from amd_pipeline.orchestration.partitions import day_key
from amd_pipeline.wolkvox.simulator import SimConfig, Simulator, truth_for_day
from amd_pipeline.wolkvox.windows import day_window
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.conftest import CAMPAIGNS
from amd_pipeline_tests.sample import daily_row

# The holders are named as Linux names them (/proc/<pid>/comm); elsewhere the lookup is another one.
pytestmark = pytest.mark.linux

ZONE = "America/Bogota"
WINDOWS_SAYS = "The process cannot access the file because it is being used by another process"
PYTHON = Path(sys.executable).name[:15]  # /proc/<pid>/comm: the program's name, at most 15 characters


def windows_refusal() -> PermissionError:
    """What Windows raises on a rename over a file a program has open: EACCES, with WinError 32."""
    refusal = PermissionError(13, WINDOWS_SAYS)
    refusal.winerror = 32  # set by Windows itself; POSIX errors have none
    return refusal


def hold_windows_style(monkeypatch, target: Path) -> None:
    """``os.replace`` onto ``target`` fails as Windows fails it while a program has the file open."""
    real = os.replace

    def replace(src, dst, **kwargs):
        if Path(dst) == Path(target):
            raise windows_refusal()
        return real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@contextlib.contextmanager
def holder(path: Path, *, duckdb: bool = True):
    """A child process that has ``path`` open (a DuckDB connection, read-only, or a plain file) until the end."""
    opener = (
        f"import duckdb; conn = duckdb.connect({str(path)!r}, read_only=True)" if duckdb else f"f = open({str(path)!r})"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", f"{opener}\nimport sys\nprint('open', flush=True)\nsys.stdin.readline()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "open"
        yield child
    finally:
        child.communicate("\n", timeout=30)


def truth_rows(days: list[dt.date]) -> list[dict]:
    """Every campaign's closed day, its total the simulator's truth."""
    return [
        daily_row(campaign, day, truth_for_day(campaign, day), day_window(day, ZONE).end + dt.timedelta(hours=1))
        for day in days
        for campaign in CAMPAIGNS
    ]


def days_from(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=k) for k in range(n)]


def totals(path: Path) -> dict[tuple[str, dt.date], int]:
    frame = AmdStore(path).query("SELECT campaign_id, local_date, total_amd FROM amd_daily")
    return {(r.campaign_id, r.local_date.date()): r.total_amd for r in frame.itertuples()}


def truth(days: list[dt.date]) -> dict[tuple[str, dt.date], int]:
    return {(c, d): truth_for_day(c, d) for d in days for c in CAMPAIGNS}


def temp_copies(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


# --- the store ---------------------------------------------------------------------------------------


def test_a_held_published_file_keeps_the_previous_copy_names_its_holder_and_the_next_publish_lands(
    tmp_path, monkeypatch
):
    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"
    waits = []
    store = AmdStore(working, timezone=ZONE, sleep=waits.append)
    store.prepare(AMD_DAILY)
    before, after = days_from(dt.date(2026, 11, 1), 2), days_from(dt.date(2026, 11, 1), 5)
    store.replace(AMD_DAILY, to_frame(truth_rows(before)))
    store.publish(published)
    store.replace(AMD_DAILY, to_frame(truth_rows(after)))

    with holder(published) as analyst:
        with monkeypatch.context() as held:
            hold_windows_style(held, published)
            with pytest.raises(PublishHeldError) as raised:
                store.publish(published)
        said = explain(raised.value)
        assert raised.value.holders == [f"{PYTHON} (pid {analyst.pid})"]
        assert totals(published) == truth(before)  # the previous copy, whole, still opens
        assert totals(working) == truth(after)  # every row of the load is kept
        assert temp_copies(published) == []
        assert waits == list(REPLACE_WAITS)  # a brief holder (a virus scanner) gets a second to let go
        store.publish(published)  # the next publish; Linux lets it replace the file the analyst still has open
    assert totals(published) == truth(after)
    assert temp_copies(published) == []
    assert said == (
        f"{published} was not updated: it is open in {PYTHON} (pid {analyst.pid}) ({WINDOWS_SAYS}); the new rows "
        f"are safe in {working} and analysts still see the previous copy: close the file in that program; the "
        "next load or backfill publishes again, or Materialize amd_published (`amd-pipeline dev`) to publish now"
    )


def test_a_held_file_whose_holder_is_not_found_says_another_program(tmp_path, monkeypatch):
    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"
    store = AmdStore(working, timezone=ZONE, sleep=lambda s: None)
    store.prepare(AMD_DAILY)
    store.replace(AMD_DAILY, to_frame(truth_rows([dt.date(2026, 11, 1)])))
    hold_windows_style(monkeypatch, published)
    with pytest.raises(PublishHeldError) as raised:
        store.publish(published)
    assert f"{published} was not updated: it is open in another program ({WINDOWS_SAYS})" in explain(raised.value)
    assert not published.exists() and temp_copies(published) == []


def test_a_permission_error_on_linux_or_macos_is_not_taken_for_a_held_file(tmp_path, monkeypatch):
    # A rename refused by permissions (a read-only data folder) is not a program holding the file:
    # no waiting, no "open in another program"; it fails the publish as it did (the load says so).
    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"
    waits = []
    store = AmdStore(working, timezone=ZONE, sleep=waits.append)
    store.prepare(AMD_DAILY)
    store.replace(AMD_DAILY, to_frame(truth_rows([dt.date(2026, 11, 1)])))
    real = os.replace

    def read_only_folder(src, dst, **kwargs):
        if Path(dst) == published:
            raise PermissionError(13, "Permission denied")  # POSIX: no winerror
        return real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", read_only_folder)
    with pytest.raises(PermissionError) as raised:
        store.publish(published)
    assert not isinstance(raised.value, PublishHeldError) and waits == []
    assert temp_copies(published) == []


def test_a_temporary_copy_left_by_a_publish_that_ended_is_removed_by_the_next(tmp_path):
    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"
    store = AmdStore(working, timezone=ZONE)
    store.prepare(AMD_DAILY)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = published.with_name(f".{published.name}.{int(ended.stdout)}.tmp")
    alive = published.with_name(f".{published.name}.{os.getppid()}.tmp")  # a publish still running elsewhere
    dead.write_bytes(b"half a copy")
    alive.write_bytes(b"being written")
    store.publish(published)
    assert temp_copies(published) == [alive]


# --- who holds a file ----------------------------------------------------------------------------------


def test_the_holder_of_a_file_is_found_by_name_and_pid_through_proc(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)  # asked by another path than the one the holder opened
    path = tmp_path / "link" / "amd.duckdb"
    path.write_bytes(b"")
    with holder(real / "amd.duckdb", duckdb=False) as child:
        found = portable.file_holders(path)
        assert f"{PYTHON} (pid {child.pid})" in found
        assert all(str(os.getpid()) not in name for name in found)  # this process does not have it open
    assert portable.file_holders(path) == []  # the holder ended


@pytest.mark.skipif(shutil.which("lsof") is None, reason="lsof is not installed")
def test_the_macos_way_lsof_finds_the_holder_too(tmp_path):
    path = tmp_path / "amd.duckdb"
    path.write_bytes(b"")
    with holder(path, duckdb=False) as child:
        assert f"{PYTHON} (pid {child.pid})" in portable._lsof_holders(str(path))
    assert portable._lsof_holders(str(path)) == []


def test_the_lookup_never_raises(tmp_path, monkeypatch):
    assert portable.file_holders(tmp_path / "missing") == []
    monkeypatch.setattr(portable, "WINDOWS", True)  # here rstrtmgr.dll cannot load: an empty answer, no error
    assert portable.file_holders(tmp_path / "missing") == []


def test_the_restart_manager_structures_have_the_sdk_layout():
    """RM_PROCESS_INFO is 668 bytes on Windows (2-byte wchar_t): 12 + (256 + 64) characters + 16."""
    import ctypes

    unique, info = portable._restart_manager_types()
    assert ctypes.sizeof(unique) == 12
    assert ctypes.sizeof(info) == 12 + 320 * ctypes.sizeof(ctypes.c_wchar) + 16
    assert info.strAppName.offset == 12 and info.ApplicationType.offset == 12 + 320 * ctypes.sizeof(ctypes.c_wchar)


# --- Dagster: amd_daily succeeds, amd_published fails saying why -----------------------------------------------


START = dt.date(2026, 11, 1)


def run_daily(instance, end: dt.date) -> dg.ExecuteInProcessResult:
    job = build_definitions(DefinitionSettings()).resolve_job_def(AMD_DAILY_JOB)
    tags = {
        "dagster/asset_partition_range_start": str(day_key(CAMPAIGNS[0], START)),
        "dagster/asset_partition_range_end": str(day_key(CAMPAIGNS[-1], end)),
    }
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def materialize_published(instance) -> dg.ExecuteInProcessResult:
    job = (
        build_definitions(DefinitionSettings())
        .resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={dg.AssetKey("amd_published")})
    )
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_a_load_succeeds_while_the_published_file_is_held_and_materializing_amd_published_lands_it(
    pipeline_env, instance, monkeypatch
):
    monkeypatch.setenv("WOLKVOX_CAMPAIGN_ALL", "off")
    monkeypatch.setattr(publish_module, "REPLACE_WAITS", ())  # the waits are the store test's; none here
    published = pipeline_env.path
    working = published.with_name("amd.working.duckdb")
    before, after = days_from(START, 2), days_from(START, 5)
    assert run_daily(instance, before[-1]).success
    first = instance.fetch_materializations(dg.AssetKey("amd_published"), limit=10).records

    with holder(published) as analyst, monkeypatch.context() as held:
        hold_windows_style(held, published)
        load = run_daily(instance, after[-1])
        refused = materialize_published(instance)
    assert load.success  # the rows are loaded: the load did its job
    assert totals(working) == truth(after)
    assert totals(published) == truth(before)
    [observation] = [
        e.asset_observation_data.asset_observation
        for e in load.all_events
        if e.is_asset_observation and e.asset_observation_data.asset_observation.asset_key.path == ["amd_published"]
    ]
    line = observation.metadata["publish_held"].value
    assert line.startswith(f"{published} was not updated: it is open in {PYTHON} (pid {analyst.pid})")
    assert observation.metadata["published"].value is False
    warned = [r.user_message for r in instance.all_logs(load.run_id) if r.level == logging.WARNING]
    assert line in warned  # in the run's log, as a warning
    # No materialisation of amd_published: the file did not change, and its latest event says what it holds.
    assert instance.fetch_materializations(dg.AssetKey("amd_published"), limit=10).records == first
    assert not refused.success  # Materialize while it is held: the step fails with the same line
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert failure.step_failure_data.user_failure_data.description == line
    assert temp_copies(published) == []

    republished = materialize_published(instance)  # closed in that program: Materialize again
    assert republished.success
    assert totals(published) == truth(after)
    assert temp_copies(published) == []


# --- the CLI backfill -------------------------------------------------------------------------------------


HELD_PRELUDE = textwrap.dedent(f"""
    import os
    from pathlib import Path
    from amd_pipeline.core import publish

    publish.REPLACE_WAITS = ()
    _real, _target = os.replace, Path(os.environ["AMD_DUCKDB_PATH"])

    def _replace(src, dst, **kwargs):  # as Windows refuses it while a program has the file open
        if Path(dst) == _target:
            refusal = PermissionError(13, {WINDOWS_SAYS!r})
            refusal.winerror = 32  # as Windows sets it
            raise refusal
        return _real(src, dst, **kwargs)

    os.replace = _replace
""")


@pytest.mark.slow
def test_a_cli_backfill_exits_0_with_one_line_naming_the_held_file_and_the_next_backfill_publishes(tmp_path):
    from amd_pipeline_tests.test_cli import cli_env

    with Simulator(SimConfig(token="SECRET-" + os.urandom(8).hex(), latency_ms=1)) as sim:
        env = cli_env(sim, tmp_path, AMD_CAMPAIGNS=",".join(CAMPAIGNS), WOLKVOX_CAMPAIGN_ALL="off")
        published = Path(env["AMD_DUCKDB_PATH"])
        working = published.with_name("amd.working.duckdb")
        before, after = days_from(START, 2), days_from(START, 5)

        def backfill(days, script=None):
            args = ["backfill", "--start", str(days[0]), "--end", str(days[-1]), "--quiet"]
            return forkserver.run(args, env=env, cwd=tmp_path, script=script)

        assert backfill(before).returncode == 0
        with holder(published) as analyst:
            load = backfill(after, HELD_PRELUDE + forkserver.CLI_MAIN)
        assert load.returncode == 0, load.stderr
        assert totals(working) == truth(after)
        assert totals(published) == truth(before)
        assert temp_copies(published) == []
        [line] = [line for line in load.stderr.splitlines() if "was not updated" in line]
        assert line.startswith(f"warning: {published} was not updated: it is open in {PYTHON} (pid {analyst.pid})")
        assert line.endswith(
            "close the file in that program; the next load or backfill publishes again, "
            "or Materialize amd_published (`amd-pipeline dev`) to publish now"
        )

        again = backfill(after)  # the program closed it: the same backfill fetches nothing and publishes
        assert again.returncode == 0, again.stderr
        assert "nothing to fetch: every window is final" in again.stderr
    assert totals(published) == truth(after)
    assert temp_copies(published) == []


def test_an_export_file_held_open_is_named_and_the_export_after_it_lands(tmp_path, monkeypatch):
    # An analyst has amd_daily.csv open in Excel (which holds what it shows): the export says so in one line.
    from amd_pipeline.core.errors import FileHeldError
    from amd_pipeline.core.export import export_published

    working, published, out = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb", tmp_path / "csv"
    store = AmdStore(working, timezone=ZONE)
    store.prepare(AMD_DAILY)
    store.replace(AMD_DAILY, to_frame(truth_rows(days_from(dt.date(2026, 11, 1), 3))))
    store.publish(published)
    export_published(published, out, "csv")
    held_csv = out / "amd_daily.csv"
    with holder(held_csv, duckdb=False) as analyst, monkeypatch.context() as held:
        hold_windows_style(held, held_csv)
        with pytest.raises(FileHeldError) as raised:
            export_published(published, out, "csv")
    assert explain(raised.value) == (
        f"{held_csv} was not replaced: it is open in {PYTHON} (pid {analyst.pid}) ({WINDOWS_SAYS}): close it "
        "there and export again (the files before it are new, the others as they were)"
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".export-")]  # no staging folder left
    assert export_published(published, out, "csv").rows["amd_daily"] == 9


def test_a_published_parquet_file_held_open_holds_the_publish_back_whole(tmp_path, monkeypatch):
    # With the published Parquet copy on, a Parquet file open in Power BI stops the DuckDB rename too.
    working, published, parquet = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb", tmp_path / "parquet"
    store = AmdStore(working, timezone=ZONE, sleep=lambda s: None)
    store.prepare(AMD_DAILY)
    before, after = days_from(dt.date(2026, 11, 1), 2), days_from(dt.date(2026, 11, 1), 4)
    store.replace(AMD_DAILY, to_frame(truth_rows(before)))
    store.publish(published, parquet_dir=parquet)
    store.replace(AMD_DAILY, to_frame(truth_rows(after)))
    held_file = parquet / "campaigns.parquet"
    with monkeypatch.context() as held:
        hold_windows_style(held, held_file)
        with pytest.raises(PublishHeldError) as raised:
            store.publish(published, parquet_dir=parquet)
    assert raised.value.path == held_file and f"{held_file} was not updated" in explain(raised.value)
    assert totals(published) == truth(before) and temp_copies(published) == []
    store.publish(published, parquet_dir=parquet)
    assert totals(published) == truth(after)
