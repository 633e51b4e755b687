"""Exports for tools that do not speak DuckDB: 3 campaigns x 60 days read back with pandas, row for row."""

import datetime as dt
import os
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from amd_pipeline.core.export import STAGING_PREFIX, export_published
from amd_pipeline.core.views import VIEWS
from amd_pipeline.wolkvox.simulator import truth_for_day
from amd_pipeline_tests import forkserver
from amd_pipeline_tests.conftest import CAMPAIGNS
from amd_pipeline_tests.sample import make_working_store

NAMES = ["amd_daily", "campaigns", "amd_intraday", *VIEWS]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    make_working_store(folder / "amd.working.duckdb", CAMPAIGNS, days=60).publish(folder / "amd.duckdb")
    return folder / "amd.duckdb"


def source(path: Path, name: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(f"SELECT * FROM {name}").df()


def canonical(frame: pd.DataFrame, like: pd.DataFrame) -> list[tuple]:
    """Rows as comparable Python values, the columns typed as in ``like`` (the DuckDB source)."""
    columns = []
    for name in like.columns:
        values, kind = frame[name], like[name].dtype
        if isinstance(kind, pd.DatetimeTZDtype):
            values, show = pd.to_datetime(values, utc=True), pd.Timestamp.isoformat
        elif pd.api.types.is_datetime64_any_dtype(kind):  # a DATE
            values, show = pd.to_datetime(values), lambda v: v.date().isoformat()
        elif pd.api.types.is_bool_dtype(kind):
            show = lambda v: str(v).lower()  # noqa: E731
        elif pd.api.types.is_numeric_dtype(kind):
            show = float
        else:
            show = str
        columns.append([None if pd.isna(v) else show(v) for v in values.astype(object).tolist()])
    return sorted(zip(*columns, strict=True), key=repr)


def read_back(out: Path, name: str, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False, na_values=[""])
    path = out / name if (out / name).is_dir() else out / f"{name}.parquet"
    return pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_export_reads_back_with_pandas_as_the_same_rows(published, tmp_path, fmt):
    out = tmp_path / "out"
    done = export_published(published, out, fmt)
    assert list(done.rows) == NAMES
    assert done.rows["amd_daily"] >= 3 * 60
    for name in NAMES:
        expected = source(published, name)
        got = read_back(out, name, fmt)
        assert len(got) == done.rows[name] == len(expected), name
        assert canonical(got, expected) == canonical(expected, expected), name
    # and the numbers are the simulator's, not only the file's
    daily = read_back(out, "amd_daily", fmt)
    final = daily[daily.is_final.astype(str).str.lower() == "true"]
    for row in final.itertuples():
        day = pd.Timestamp(row.local_date).date()
        assert int(row.total_amd) == truth_for_day(row.campaign_id, day)
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())


def test_parquet_tables_that_grow_are_written_per_month(published, tmp_path):
    export_published(published, tmp_path, "parquet")
    months = sorted(p.name for p in (tmp_path / "amd_daily").iterdir())
    first = dt.date.today() - dt.timedelta(days=61)
    assert months[0] <= f"month={first:%Y-%m}" and len(months) >= 2
    assert all(len(list((tmp_path / "amd_daily" / m).iterdir())) == 1 for m in months)
    assert (tmp_path / "amd_weekday_profile.parquet").is_file()


def test_exporting_again_replaces_the_files_and_drops_months_no_longer_written(published, tmp_path):
    export_published(published, tmp_path, "parquet")
    stale = tmp_path / "amd_daily" / "month=1999-01" / "data_0.parquet"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    keep = tmp_path / "notes.txt"  # not the export's: left alone
    keep.write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and p != stale)
    export_published(published, tmp_path, "parquet")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before and not stale.parent.exists() and keep.read_text() == "mine"


def test_publish_can_keep_a_parquet_copy_beside_the_file(published, tmp_path):
    from amd_pipeline.core.store import AmdStore

    working = AmdStore(published.with_name("amd.working.duckdb"))
    working.publish(tmp_path / "amd.duckdb", parquet_dir=tmp_path / "amd_parquet")
    got = pd.read_parquet(tmp_path / "amd_parquet" / "amd_daily")
    assert len(got) == len(source(published, "amd_daily"))


@pytest.mark.slow
def test_the_export_command_writes_both_formats_and_refuses_a_bad_one_in_one_line(published, tmp_path):
    env = dict(os.environ)
    for fmt in ("parquet", "csv"):
        done = forkserver.run(
            ["export", "--format", fmt, "--out", str(tmp_path / fmt), "--duckdb", str(published)], env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert f"{fmt} file(s)" in done.stdout and "amd_daily" in done.stdout
    assert (tmp_path / "csv" / "amd_daily.csv").is_file()
    bad = forkserver.run(
        ["export", "--format", "xlsx", "--out", str(tmp_path / "x"), "--duckdb", str(published)], env=env, cwd=tmp_path
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "xlsx" in bad.stderr
