"""Several Wolkvox operations in one DuckDB file: keys, scoping, zones, migration of a file from before
operations, operation-only publishes, the publish lock and the views per operation. No Dagster."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import threading
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest

from amd_pipeline.core import publish as publish_module
from amd_pipeline.core import schema
from amd_pipeline.core.errors import TimezoneMismatchError
from amd_pipeline.core.normalize import FETCHED, to_frame
from amd_pipeline.core.schema import AMD_DAILY, ANSWER_COLUMNS, REQUEST_COLUMNS
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.windows import day_window
from amd_pipeline_tests.sample import daily_row

BOGOTA = "America/Bogota"
LANDED = "b06ee64"  # main before operations: the files it wrote are what the migration meets


def row(campaign: str, day: dt.date, total: int, *, zone: str = BOGOTA, final: bool = True) -> dict:
    window = day_window(day, zone)
    fetched_at = window.end + dt.timedelta(hours=1) if final else window.start + dt.timedelta(hours=10)
    return {**daily_row(campaign, day, total, fetched_at, zone), "fetch_status": FETCHED}


DAY = dt.datetime.now(ZoneInfo(BOGOTA)).date() - dt.timedelta(days=3)  # answers of it are kept (14 days)


def answers_for(window, backfill: str, total: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                **dict.fromkeys(ANSWER_COLUMNS),
                "answer_id": uuid.uuid4().hex,
                "api_campaign": "all",
                "window_start": window.start,
                "window_end": window.end,
                "local_date": window.local_date,
                "fetched_at": window.end + dt.timedelta(hours=1),
                "empty": False,
                "campaign_id": "1",
                "total_amd": total,
                "data_row": json.dumps({"campaign_id": "1", "total_amd": total}),
                "source": "ui",
                "run_id": "r",
                "backfill_id": backfill,
            }
        ],
        columns=list(ANSWER_COLUMNS),
    )


def requests_frame(campaign: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{**dict.fromkeys(REQUEST_COLUMNS), "requested_at": pd.Timestamp.now(tz="UTC"), "campaign": campaign}],
        columns=list(REQUEST_COLUMNS),
    )
    return frame.astype({"attempt": "Int32", "http_status": "Int32", "latency_ms": "float64", "bytes": "Int64"})


def totals(path: Path) -> list:
    return AmdStore(path).query("SELECT operation, campaign_id, total_amd FROM amd_daily ORDER BY ALL").values.tolist()


# --- keys and scoping -----------------------------------------------------------------------------


def test_two_operations_keep_the_same_campaign_and_window_and_a_rewrite_of_one_leaves_the_other(tmp_path):
    path = tmp_path / "amd.duckdb"
    a, b = AmdStore(path, operation="a", timezone=BOGOTA), AmdStore(path, operation="b", timezone=BOGOTA)
    a.replace(AMD_DAILY, to_frame([row("1", DAY, 5)]))
    b.replace(AMD_DAILY, to_frame([row("1", DAY, 7)]))
    assert totals(path) == [["a", "1", 5], ["b", "1", 7]]
    written = a.replace(AMD_DAILY, to_frame([row("1", DAY, 50)]))
    assert totals(path) == [["a", "1", 50], ["b", "1", 7]]
    assert written.changes == [("1", DAY, 5, 50)]  # b's final 7 is not a's restatement


def test_final_keys_and_answers_in_hand_are_the_operations_own(tmp_path):
    path = tmp_path / "amd.duckdb"
    a, b = AmdStore(path, operation="a"), AmdStore(path, operation="b")
    window = day_window(DAY, BOGOTA)
    a.replace(AMD_DAILY, to_frame([row("1", DAY, 5)]), answers=answers_for(window, "bf", "5"))
    key = ("1", window.start)
    assert a.final_keys(AMD_DAILY, [key]) == {key}
    assert b.final_keys(AMD_DAILY, [key]) == set()
    # one UI backfill over two operations' assets shares its id: a's server answer never serves b
    assert a.answers_in_hand("bf", [window])[window.start]["rows"] == [{"campaign_id": "1", "total_amd": "5"}]
    assert b.answers_in_hand("bf", [window]) == {}
    b.replace(AMD_DAILY, to_frame([]), answers=answers_for(window, "bf", "8"))
    assert b.answers_in_hand("bf", [window])[window.start]["rows"] == [{"campaign_id": "1", "total_amd": "8"}]
    assert a.answers_in_hand("bf", [window])[window.start]["rows"] == [{"campaign_id": "1", "total_amd": "5"}]


def test_a_campaign_list_unlists_only_the_operations_own_campaigns(tmp_path):
    path = tmp_path / "amd.duckdb"
    a, b = AmdStore(path, operation="a"), AmdStore(path, operation="b")
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    a.record_campaigns([{"campaign_id": "1", "campaign_name": "Alpha"}, {"campaign_id": "2"}], at)
    b.record_campaigns([{"campaign_id": "1", "campaign_name": "Beta"}], at)
    a.record_campaigns([{"campaign_id": "2"}], at)
    listed = a.query("SELECT operation, campaign_id, coalesce(campaign_name, '-'), listed FROM campaigns ORDER BY ALL")
    assert listed.values.tolist() == [["a", "1", "Alpha", False], ["a", "2", "-", True], ["b", "1", "Beta", True]]


def test_issues_and_snapshots_are_the_operations_own(tmp_path):
    path = tmp_path / "amd.duckdb"
    a, b = AmdStore(path, operation="a"), AmdStore(path, operation="b")
    window = day_window(DAY, BOGOTA)
    for store in (a, b):
        store.record_issues([("1", window.start, DAY, "deferred", "budget")])
        store.replace(AMD_DAILY, to_frame([row("1", DAY, 3, final=False)]))  # a's write clears a's issue only
        store.record_issues([("1", window.start, DAY, "deferred", "budget")])
    a.replace(AMD_DAILY, to_frame([row("1", DAY, 5)]))
    assert a.query("SELECT operation FROM amd_window_issues").operation.tolist() == ["b"]
    assert a.query("SELECT operation FROM amd_intraday ORDER BY ALL").operation.tolist() == ["a", "b"]


def test_each_operation_claims_its_own_zone(tmp_path):
    path = tmp_path / "amd.duckdb"
    AmdStore(path, operation="a", timezone=BOGOTA).replace(AMD_DAILY, to_frame([row("1", DAY, 5)]))
    tokyo = to_frame([row("1", DAY, 6, zone="Asia/Tokyo")])
    AmdStore(path, operation="b", timezone="Asia/Tokyo").replace(AMD_DAILY, tokyo)  # two zones, one file
    assert AmdStore(path, operation="a").stored_timezone() == BOGOTA
    assert AmdStore(path, operation="b").stored_timezone() == "Asia/Tokyo"
    with pytest.raises(TimezoneMismatchError, match="holds days for operation 'a' in America/Bogota"):
        AmdStore(path, operation="a", timezone="Asia/Tokyo").replace(AMD_DAILY, tokyo)
    # an operation that recorded no zone is judged by its own days only
    AmdStore(path, operation="c").replace(AMD_DAILY, to_frame([row("1", DAY, 1)]))
    with pytest.raises(TimezoneMismatchError, match="operation 'c' in another time zone"):
        AmdStore(path, operation="c", timezone="Asia/Tokyo").prepare(AMD_DAILY)
    migrated = AmdStore(path, operation="a").migrate_timezone(AMD_DAILY, "Europe/Madrid")
    assert migrated.old == BOGOTA and migrated.dropped_rows == 1
    assert totals(path) == [["b", "1", 6], ["c", "1", 1]]
    assert AmdStore(path, operation="b").stored_timezone() == "Asia/Tokyo"


# --- a file from before operations ----------------------------------------------------------------


def landed_store_module(tmp_path: Path):
    """``store.py`` and ``views.py`` as main had them before operations (``landed/``, from git), importable as
    a package of their own; the modules they import that did not change (normalize, settings, export, ...)
    are today's."""
    name = f"landed_{uuid.uuid4().hex[:8]}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("store", "views"):
        source = (Path(__file__).parent / "landed" / f"{module}_{LANDED}.py.txt").read_text()
        (package / f"{module}.py").write_text(source.replace("amd_pipeline.core.views", f"{name}.views"))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(f"{name}.store")
    finally:
        sys.path.remove(str(tmp_path))


TABLES = ("amd_daily", "campaigns", "amd_window_issues", "amd_intraday", "api_requests", "api_answers")


def dump(path: Path, *, drop_operation: bool = False) -> dict[str, list]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for table in TABLES:
            columns = [
                c
                for (c,) in conn.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
                ).fetchall()
                if not (drop_operation and c == "operation")
            ]
            out[table] = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall()
        return out
    finally:
        conn.close()


def old_file(tmp_path: Path) -> tuple[Path, dt.date]:
    old = landed_store_module(tmp_path)
    path = tmp_path / "old.duckdb"
    start = dt.date(2026, 10, 1)
    store = old.AmdStore(path, timezone=BOGOTA, start_date=start)
    store.prepare(old.AMD_DAILY)
    window = day_window(DAY, BOGOTA)
    store.replace(
        old.AMD_DAILY,
        to_frame([row("1", DAY, 5), row("2", DAY, 6), row("1", DAY + dt.timedelta(days=1), 2, final=False)]),
        requests=requests_frame("1"),
        answers=answers_for(window, "bf", "5"),
    )
    store.record_campaigns([{"campaign_id": "1", "campaign_name": "Alpha"}], dt.datetime.now(dt.UTC))
    store.record_issues([("3", window.start, DAY, "deferred", "budget")])
    store.record_requests(requests_frame("2"))
    return path, start


@pytest.mark.parametrize("without_is_final", [False, True], ids=["landed", "before-is_final"])
def test_a_file_from_before_operations_becomes_the_default_operations_once_and_whole(tmp_path, without_is_final):
    path, start = old_file(tmp_path)
    before = dump(path)
    assert all(before[t] for t in TABLES)  # every table has rows to lose
    if without_is_final:  # as a file from before is_final existed: the migration computes it
        conn = duckdb.connect(str(path))
        conn.execute("ALTER TABLE amd_daily DROP COLUMN is_final")
        conn.close()
    window = day_window(DAY, BOGOTA)

    # reads of the un-migrated file do not crash and see its rows as the default operation's
    default = AmdStore(path, timezone=BOGOTA)
    assert default.final_keys(AMD_DAILY, [("1", window.start)]) == {("1", window.start)}
    assert default.stored_timezone() == BOGOTA
    assert list(default.answers_in_hand("bf", [window])) == [window.start]

    after = dump(path)
    assert dump(path, drop_operation=True) == before  # every row kept, equal
    assert {t: {r[0] for r in rows} for t, rows in after.items()} == {t: {"default"} for t in TABLES}
    assert default.query("SELECT * FROM amd_operations").values.tolist() == [["default", BOGOTA, pd.Timestamp(start)]]
    assert default.query("SELECT key FROM amd_meta WHERE key IN ('timezone', 'start_date')").empty
    keys = default.query(
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
    )
    assert {t: list(k) for t, k in keys.values.tolist()} == {
        "amd_daily": ["operation", "campaign_id", "window_start"],
        "campaigns": ["operation", "campaign_id"],
        "amd_window_issues": ["operation", "campaign_id", "window_start"],
        "amd_intraday": ["operation", "campaign_id", "local_date", "fetched_at"],
        "amd_operations": ["operation"],
        "amd_meta": ["key"],
    }

    # a second open finds nothing to do
    default.prepare(AMD_DAILY)
    conn = duckdb.connect(str(path), read_only=True)
    assert not schema.needs_migration(conn)
    conn.close()
    assert dump(path) == after

    # another operation writes the same campaign and window without touching the default's rows
    AmdStore(path, operation="b", timezone=BOGOTA).replace(AMD_DAILY, to_frame([row("1", DAY, 99)]))
    assert totals(path) == [["b", "1", 99], ["default", "1", 2], ["default", "1", 5], ["default", "2", 6]]
    assert AmdStore(path).query("SELECT count(*) FROM amd_completeness WHERE operation = 'default'").iloc[0, 0] > 0


def test_publishing_a_file_from_before_operations_migrates_it_first(tmp_path):
    path, _ = old_file(tmp_path)
    done = AmdStore(path).publish(tmp_path / "amd.duckdb")
    assert (done.rows, done.operations, done.campaigns) == (3, 1, 2)
    assert AmdStore(tmp_path / "amd.duckdb").query("SELECT DISTINCT operation FROM amd_daily").operation.tolist() == [
        "default"
    ]


# --- publishing -----------------------------------------------------------------------------------


def two_operations(path: Path) -> None:
    at = dt.datetime.now(dt.UTC)
    window = day_window(DAY, BOGOTA)
    for op, zone in (("a", BOGOTA), ("b", "Asia/Tokyo")):
        store = AmdStore(path, operation=op, timezone=zone, start_date=DAY)
        store.prepare(AMD_DAILY)
        store.replace(
            AMD_DAILY,
            to_frame([row("1", DAY, 5, zone=zone), row("1", DAY + dt.timedelta(days=1), 2, zone=zone, final=False)]),
            requests=requests_frame("1"),
            answers=answers_for(window, "bf", "5"),
        )
        store.record_campaigns([{"campaign_id": "1", "campaign_name": f"name of {op}"}], at)
        store.record_issues([("2", window.start, DAY, "deferred", "budget")])


def test_an_operation_only_publish_holds_nothing_of_another_operation_in_any_table(tmp_path):
    working = tmp_path / "amd.working.duckdb"
    two_operations(working)
    everything = AmdStore(working).publish(tmp_path / "all.duckdb")
    assert (everything.operations, everything.campaigns, everything.rows) == (2, 2, 4)
    done = AmdStore(working).publish(tmp_path / "a.duckdb", operation="a")
    assert (done.operations, done.campaigns, done.rows) == (1, 1, 2)
    conn = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    try:
        kinds = dict(conn.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
        assert {"amd_daily", "amd_operations", "api_answers", "amd_completeness"} <= set(kinds)
        for name, kind in kinds.items():
            columns = [c for (c,) in conn.execute(f"SELECT column_name FROM (DESCRIBE {name})").fetchall()]
            if name == "amd_meta":  # global keys only
                assert conn.execute("SELECT count(*) FROM amd_meta").fetchall() == [(0,)]
                continue
            assert columns[0] == "operation", name
            found = {r[0] for r in conn.execute(f"SELECT DISTINCT operation FROM {name}").fetchall()}
            assert found == {"a"} if kind == "BASE TABLE" else found <= {"a"}, name  # a view may be empty
    finally:
        conn.close()


def test_publishes_of_one_target_are_serialised_so_an_older_snapshot_never_lands_last(tmp_path, monkeypatch):
    published = race(tmp_path, monkeypatch)
    assert totals(published) == [["a", "1", 5], ["b", "1", 7]]


def test_the_control_without_the_publish_lock_the_older_snapshot_drops_the_latest_batch(tmp_path, monkeypatch):
    """Shows the race above is real and deterministic: without the lock, b's batch is lost."""
    monkeypatch.setattr(publish_module, "_publish_lock", lambda target, timeout: NoLock())
    published = race(tmp_path, monkeypatch)
    assert totals(published) == [["a", "1", 5]]


class NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """a publishes and stops between its snapshot and its rename; b writes a batch and publishes; then a
    goes on. Returns the published file."""
    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"
    a, b = AmdStore(working, operation="a"), AmdStore(working, operation="b")
    a.replace(AMD_DAILY, to_frame([row("1", DAY, 5)]))
    snapshotted, go_on = threading.Event(), threading.Event()

    real_replace = publish_module._replace

    def held_replace(tmp, target, working, sleep):
        if threading.current_thread() is first:  # a's publish only
            snapshotted.set()
            go_on.wait(10)
        real_replace(tmp, target, working, sleep)

    monkeypatch.setattr(publish_module, "_replace", held_replace)
    errors: list[BaseException] = []

    def publish(store):
        try:
            store.publish(published)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=publish, args=(a,))
    first.start()
    assert snapshotted.wait(10)
    b.replace(AMD_DAILY, to_frame([row("1", DAY, 7)]))  # the other operation's latest batch
    second = threading.Thread(target=publish, args=(b,))
    second.start()
    second.join(1.0)  # with the lock it waits for a; without, it publishes now
    go_on.set()
    first.join(10)
    second.join(10)
    assert not errors and not first.is_alive() and not second.is_alive()
    return published


# --- views per operation --------------------------------------------------------------------------

KIRITIMATI, PAGO_PAGO = "Pacific/Kiritimati", "Pacific/Pago_Pago"  # UTC+14 and UTC-11: always another date


def test_completeness_runs_from_each_operations_own_first_day_to_its_own_today(tmp_path):
    path = tmp_path / "amd.duckdb"
    expected = {}
    for op, zone, back in (("east", KIRITIMATI, 3), ("west", PAGO_PAGO, 6)):
        today = dt.datetime.now(ZoneInfo(zone)).date()
        start = today - dt.timedelta(days=back)
        store = AmdStore(path, operation=op, timezone=zone, start_date=start)
        store.prepare(AMD_DAILY)
        store.replace(AMD_DAILY, to_frame([row("1", start, 4, zone=zone)]))
        expected[op] = [op, start, today, back + 1]
    found = AmdStore(path).query(
        "SELECT operation, min(local_date)::DATE, max(local_date)::DATE, count(*) FROM amd_completeness "
        "GROUP BY ALL ORDER BY ALL"
    )
    assert [[op, a.date(), b.date(), n] for op, a, b, n in found.values.tolist()] == list(expected.values())


def test_the_trend_names_and_averages_each_operations_campaign_apart(tmp_path):
    path = tmp_path / "amd.duckdb"
    at = dt.datetime.now(dt.UTC)
    for op, total in (("a", 10), ("b", 1000)):
        store = AmdStore(path, operation=op, timezone=BOGOTA)
        store.prepare(AMD_DAILY)
        store.replace(AMD_DAILY, to_frame([row("1", DAY + dt.timedelta(days=k), total) for k in range(8)]))
        store.record_campaigns([{"campaign_id": "1", "campaign_name": f"name of {op}"}], at)
    trend = AmdStore(path).query(
        "SELECT operation, campaign_name, max(avg_7d), count(*) FROM amd_daily_trend GROUP BY ALL"
    )
    assert sorted(trend.values.tolist()) == [["a", "name of a", 10.0, 8], ["b", "name of b", 1000.0, 8]]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_operation_only_export_holds_only_that_operations_rows_in_every_file(tmp_path, fmt):
    from amd_pipeline.core.export import export_published

    working, published = tmp_path / "amd.working.duckdb", tmp_path / "amd.duckdb"
    two_operations(working)
    AmdStore(working).publish(published)
    done = export_published(published, tmp_path / "out", fmt, operation="b")
    assert done.rows["amd_daily"] == 2 and done.rows["campaigns"] == 1
    files = [p for p in (tmp_path / "out").rglob(f"*.{fmt}")]
    assert len(files) >= len(done.rows)
    for path in files:
        frame = pd.read_csv(path, dtype=str) if fmt == "csv" else pd.read_parquet(path)
        assert set(frame.operation) <= {"b"}, path


def test_the_report_shows_operations_side_by_side_or_only_the_one_asked_for(tmp_path):
    from amd_pipeline.core.report import write_report

    working = tmp_path / "amd.working.duckdb"
    two_operations(working)
    page = tmp_path / "report.html"
    write_report(AmdStore(working), page, days=30)
    both = page.read_text()
    assert "<th>operation</th>" in both and ">a</td>" in both and ">b</td>" in both
    write_report(AmdStore(working), page, days=30, operation="b")
    one = page.read_text()
    assert "<th>operation</th>" not in one and ">b</td>" not in one  # one operation: as before operations
    assert both.count("<tr>") == 2 and one.count("<tr>") == 1  # body rows of the totals: a's and b's campaign 1
