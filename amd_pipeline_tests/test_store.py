import datetime as dt
import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest

from amd_pipeline.core.errors import StoreLockedError
from amd_pipeline.core.loader import load
from amd_pipeline.core.normalize import Fetched, normalize, to_frame
from amd_pipeline.core.plan import CampaignAll, WindowRequest
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.store import AmdStore
from amd_pipeline.wolkvox.models import Answer
from amd_pipeline.wolkvox.simulator import truth_for_day
from amd_pipeline.wolkvox.windows import day_window

AT = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def frame_for(totals: dict[tuple[str, int], str]):
    items = [
        Fetched(
            (c,),
            day_window(dt.date(2026, 11, d), "America/Bogota"),
            Answer(({"campaign_id": c, "total_amd": t},), False, AT),
        )
        for (c, d), t in totals.items()
    ]
    return normalize(items)


def rows(store: AmdStore):
    return store.query("SELECT campaign_id, local_date, total_amd FROM amd_daily ORDER BY ALL").values.tolist()


def test_writing_the_same_batch_twice_leaves_one_row_per_campaign_and_day(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    batch = frame_for({("1", 1): "5", ("1", 2): "6", ("2", 1): "7"})
    assert store.replace(AMD_DAILY, batch).rows == 3
    assert store.replace(AMD_DAILY, batch).rows == 3
    assert len(rows(store)) == 3


def test_a_rewrite_replaces_values_and_keeps_other_keys(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    store.replace(AMD_DAILY, frame_for({("1", 1): "5", ("1", 2): "6"}))
    store.replace(AMD_DAILY, frame_for({("1", 2): "60"}))
    assert [r[2] for r in rows(store)] == [5, 60]


def test_a_failing_batch_leaves_the_previous_state(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    store.replace(AMD_DAILY, frame_for({("1", 1): "5", ("1", 2): "6"}))
    broken = frame_for({("1", 1): "50", ("1", 2): "60"})
    broken.loc[1, "fetch_status"] = None  # violates NOT NULL after the delete has run
    with pytest.raises(duckdb.ConstraintException):
        store.replace(AMD_DAILY, broken)
    assert [r[2] for r in rows(store)] == [5, 6]


def test_the_table_has_the_declared_schema_and_primary_key(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    store.replace(AMD_DAILY, frame_for({("1", 1): "5"}))
    schema = store.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'amd_daily' "
        "ORDER BY ordinal_position"
    )
    assert schema.column_name.iloc[0] == "operation"
    assert dict(schema.values.tolist()) == {
        "operation": "VARCHAR",
        "campaign_id": "VARCHAR",
        "window_start": "TIMESTAMP WITH TIME ZONE",
        "window_end": "TIMESTAMP WITH TIME ZONE",
        "local_date": "DATE",
        "total_amd": "BIGINT",
        "fetch_status": "VARCHAR",
        "fetched_at": "TIMESTAMP WITH TIME ZONE",
        "is_final": "BOOLEAN",
    }
    conn = store.connect()
    with pytest.raises(duckdb.ConstraintException):
        conn.execute("INSERT INTO amd_daily SELECT * FROM amd_daily")
    conn.close()


def test_queries_are_read_only(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    store.replace(AMD_DAILY, frame_for({("1", 1): "5"}))
    with pytest.raises(duckdb.Error, match="read-only"):
        store.query("DELETE FROM amd_daily")


def test_a_file_locked_by_another_process_is_waited_for_then_reported(tmp_path):
    path = tmp_path / "amd.duckdb"
    AmdStore(path).replace(AMD_DAILY, frame_for({("1", 1): "5"}))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import duckdb, sys, time
            conn = duckdb.connect({str(path)!r})
            print("locked", flush=True)
            sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        waits = []
        store = AmdStore(path, lock_timeout=1.0, sleep=waits.append)
        with pytest.raises(StoreLockedError, match="locked by another process"):
            store.replace(AMD_DAILY, frame_for({("1", 1): "9"}))
        assert sum(waits) >= 1.0
    finally:
        holder.communicate("\n", timeout=10)
    assert [r[2] for r in rows(AmdStore(path))] == [5]


def test_the_file_remembers_its_time_zone_and_refuses_a_write_in_another(tmp_path):
    from amd_pipeline.core.errors import TimezoneMismatchError

    path = tmp_path / "amd.duckdb"
    AmdStore(path, timezone="America/Bogota").replace(AMD_DAILY, frame_for({("1", 1): "5"}))
    assert AmdStore(path).stored_timezone() == "America/Bogota"
    with pytest.raises(
        TimezoneMismatchError, match="holds days in America/Bogota, but WOLKVOX_TIMEZONE is Europe/Madrid"
    ):
        AmdStore(path, timezone="Europe/Madrid").replace(AMD_DAILY, frame_for({("1", 2): "6"}))
    assert rows(AmdStore(path)) == [["1", dt.datetime(2026, 11, 1), 5]]


def test_a_file_written_before_zones_were_recorded_is_adopted_only_if_its_days_agree(tmp_path):
    from amd_pipeline.core.errors import TimezoneMismatchError

    path = tmp_path / "amd.duckdb"
    AmdStore(path).replace(AMD_DAILY, frame_for({("1", 1): "5"}))  # no zone recorded, Bogota days
    with pytest.raises(TimezoneMismatchError, match="another time zone"):
        AmdStore(path, timezone="Asia/Tokyo").prepare(AMD_DAILY)
    AmdStore(path, timezone="America/Lima").prepare(AMD_DAILY)  # same instants as Bogota: adopted
    assert AmdStore(path).stored_timezone() == "America/Lima"


def test_migrating_keeps_days_whose_windows_are_unchanged_and_drops_the_others(tmp_path):
    path = tmp_path / "amd.duckdb"
    store = AmdStore(path, timezone="America/Bogota")
    store.replace(AMD_DAILY, frame_for({("1", 1): "5", ("2", 1): "6", ("1", 2): "7"}))
    lima = store.migrate_timezone(AMD_DAILY, "America/Lima", dry_run=True)
    assert (lima.old, lima.kept_days, lima.dropped_days) == ("America/Bogota", 2, [])
    assert AmdStore(path).stored_timezone() == "America/Bogota"  # a dry run changes nothing
    madrid = store.migrate_timezone(AMD_DAILY, "Europe/Madrid")
    assert madrid.dropped_days == [dt.date(2026, 11, 1), dt.date(2026, 11, 2)] and madrid.dropped_rows == 3
    assert rows(AmdStore(path)) == []
    assert AmdStore(path).stored_timezone() == "Europe/Madrid"
    AmdStore(path, timezone="Europe/Madrid").prepare(AMD_DAILY)


# --- today's snapshots -------------------------------------------------------------------------------


def open_day(campaign: str, day: dt.date, total: int, hour: int):
    from amd_pipeline.core.normalize import to_frame
    from amd_pipeline_tests.sample import daily_row

    at = dt.datetime.combine(day, dt.time(hour), dt.timezone(dt.timedelta(hours=-5)))  # Bogota
    return to_frame([daily_row(campaign, day, total, at)])


def snapshots(store: AmdStore):
    return store.query(
        "SELECT campaign_id, local_date, hour(timezone('America/Bogota', fetched_at)) AS h, total_amd "
        "FROM amd_intraday ORDER BY ALL"
    ).values.tolist()


def test_every_write_of_an_open_day_keeps_a_snapshot_once_and_a_final_write_adds_none(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    day = dt.date(2026, 11, 25)
    for hour, total in ((8, 10), (9, 25), (9, 25), (10, 40)):  # the 9 o'clock batch written twice
        store.replace(AMD_DAILY, open_day("1", day, total, hour))
    store.replace(AMD_DAILY, frame_for({("1", 25): "55"}))  # fetched the next day: final
    assert [r[2:] for r in snapshots(store)] == [[8, 10], [9, 25], [10, 40]]
    assert [r[2] for r in rows(store)] == [55]


def test_a_failing_batch_keeps_no_snapshot(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb")
    broken = open_day("1", dt.date(2026, 11, 26), 10, 8)
    broken.loc[0, "fetch_status"] = None
    with pytest.raises(duckdb.ConstraintException):
        store.replace(AMD_DAILY, broken)
    assert snapshots(store) == []


def test_snapshots_older_than_the_kept_days_are_pruned_by_the_next_write(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb", intraday_keep_days=7)
    first = dt.date(2026, 11, 1)
    for k in (0, 5, 7, 9):
        store.replace(AMD_DAILY, open_day("1", first + dt.timedelta(days=k), 10 + k, 12))
    # the last write was on day 9 at noon: day 1 (9 days before) is gone, day 3 (7 days before) is kept
    assert [r[1].day for r in snapshots(store)] == [6, 8, 10]


def test_migrating_the_time_zone_drops_the_snapshots_of_the_days_it_drops(tmp_path):
    store = AmdStore(tmp_path / "amd.duckdb", timezone="America/Bogota")
    store.replace(AMD_DAILY, open_day("1", dt.date(2026, 11, 25), 10, 8))
    store.migrate_timezone(AMD_DAILY, "Asia/Tokyo")  # every day's window moves
    assert snapshots(store) == []


# --- the published file in older DuckDB clients ---------------------------------------------------

OLD_RELEASES = ["1.0.0", "1.4.4", "1.5.6"]


@pytest.fixture(scope="session")
def sample_working(tmp_path_factory):
    from amd_pipeline_tests.conftest import CAMPAIGNS
    from amd_pipeline_tests.sample import make_working_store

    return make_working_store(tmp_path_factory.mktemp("sample") / "amd.working.duckdb", CAMPAIGNS)


def published_names():
    from amd_pipeline.core.views import VIEWS

    return ["amd_daily", "amd_intraday", "campaigns", *VIEWS]


@pytest.mark.slow
@pytest.mark.parametrize("release", OLD_RELEASES)
def test_the_published_file_gives_the_same_rows_in_older_duckdb_clients(sample_working, tmp_path, release):
    from amd_pipeline_tests import old_duckdb

    folder = old_duckdb.install(release)
    published = tmp_path / "amd.duckdb"
    sample_working.publish(published)
    names = published_names()
    new = old_duckdb.dump(None, published, names)
    old = old_duckdb.dump(folder, published, names)
    assert old["version"] == release and new["version"].startswith("2.")
    assert all(new["rows"][name] for name in ("amd_daily", "amd_daily_trend", "amd_completeness"))
    assert new["rows"]["amd_intraday"] and new["rows"]["amd_unusual_days"]  # not compared on empty views
    for name in names:
        assert old["rows"][name] == new["rows"][name], name


@pytest.mark.slow
def test_the_control_a_file_in_duckdb_2_format_does_not_open_in_1_5(sample_working, tmp_path):
    """Shows the comparison above can fail: the same publish in 2.0's own format is refused by 1.5."""
    from amd_pipeline_tests import old_duckdb

    folder = old_duckdb.install("1.5.6")
    published = tmp_path / "amd.duckdb"
    sample_working.publish(published, storage_version="v2.0.0")
    with pytest.raises(old_duckdb.ClientRefusedError, match="version number"):
        old_duckdb.dump(folder, published, ["amd_daily"])


def test_answers_older_than_the_keep_days_are_pruned_when_a_load_starts(tmp_path):
    from amd_pipeline.core.schema import ANSWER_COLUMNS, ANSWERS_KEEP_DAYS

    store = AmdStore(tmp_path / "amd.duckdb", timezone="America/Bogota")
    now = pd.Timestamp.now(tz="UTC")
    ages = {"old": ANSWERS_KEEP_DAYS + 1, "recent": ANSWERS_KEEP_DAYS - 1}
    answers = pd.DataFrame(
        [
            {
                **dict.fromkeys(ANSWER_COLUMNS),
                "answer_id": name,
                "api_campaign": "all",
                "fetched_at": now - pd.Timedelta(days=age),
                "window_start": now - pd.Timedelta(days=age + 1),
                "empty": True,
            }
            for name, age in ages.items()
        ],
        columns=list(ANSWER_COLUMNS),
    )
    store.replace(AMD_DAILY, to_frame([]), answers=answers)
    assert sorted(store.query("SELECT answer_id FROM api_answers").answer_id) == ["old", "recent"]
    store.prepare(AMD_DAILY)
    assert store.query("SELECT answer_id FROM api_answers").answer_id.tolist() == ["recent"]


def test_answers_in_hand_are_the_latest_answer_the_backfill_has_for_the_window(make_client, sim, tmp_path):
    # One backfill fetched one closed day twice (its second run was not handed the first's answer), and
    # the vendor restated the day in between: both answers came after the day ended, the later one is in hand.
    store = AmdStore(tmp_path / "amd.duckdb")
    window = day_window(dt.date(2026, 9, 1), "America/Bogota")

    def run(run_id: str) -> None:
        load(
            make_client(),
            store,
            AMD_DAILY,
            [WindowRequest("20717", window)],
            campaign_all=CampaignAll.AUTO,
            prefer_all=True,
            request_tags={"source": "ui", "run_id": run_id, "backfill_id": "b1"},
        )

    run("r1")
    sim.state.config.restatements = {"20717|2026-09-01": 7}
    run("r2")
    kept = store.query("SELECT run_id, fetched_at, campaign_id, total_amd FROM api_answers ORDER BY fetched_at")
    assert kept.run_id.unique().tolist() == ["r1", "r2"] and set(kept.campaign_id) >= {"20717", "20718"}
    first, latest = (
        {r.campaign_id: r.total_amd for r in kept[kept.run_id == run].itertuples()} for run in ("r1", "r2")
    )
    assert int(latest["20717"]) == int(first["20717"]) + 7 == truth_for_day("20717", window.local_date) + 7

    in_hand = store.answers_in_hand("b1", [window])
    assert list(in_hand) == [window.start]
    assert {row["campaign_id"]: row["total_amd"] for row in in_hand[window.start]["rows"]} == latest
    assert in_hand[window.start]["fetched_at"] == kept[kept.run_id == "r2"].fetched_at.iloc[0]
