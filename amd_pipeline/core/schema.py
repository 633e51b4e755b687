"""The DuckDB file's layout: every table's DDL and columns, and migrating a file from before operations. No dagster.

The AMD tables are :class:`TableSpec` (:data:`AMD_DAILY`); :func:`ensure_schema` brings an old file up to date.
Every table the store writes has ``operation`` as its first column and in its key (two operations' campaign
ids can collide). A file from before operations is migrated in place on its first write-open: every row
becomes :data:`~amd_pipeline.core.settings.DEFAULT_OPERATION`'s, and ``amd_meta``'s zone and first day move to
``amd_operations``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import duckdb
import pandas as pd

from amd_pipeline.core.settings import DEFAULT_OPERATION
from amd_pipeline.core.views import create_views

META_DDL = "CREATE TABLE IF NOT EXISTS amd_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
TIMEZONE_KEY = "timezone"  # in amd_meta before operations: moved to amd_operations by the migration
START_DATE_KEY = "start_date"
# Per operation: the zone its days are in and the first day of its partition matrix.
OPERATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS amd_operations (operation VARCHAR PRIMARY KEY, timezone VARCHAR, start_date DATE)"
)

# The request ledger: one row per HTTP attempt, written in the transaction of the batch it belongs to.
REQUEST_COLUMNS: dict[str, str] = {
    "requested_at": "TIMESTAMPTZ",
    "source": "VARCHAR",
    "run_id": "VARCHAR",
    "api": "VARCHAR",
    "campaign": "VARCHAR",
    "date_ini": "VARCHAR",
    "date_end": "VARCHAR",
    "attempt": "INTEGER",
    "http_status": "INTEGER",
    "outcome": "VARCHAR",
    "latency_ms": "DOUBLE",
    "bytes": "BIGINT",
}
REQUESTS_DDL = (
    "CREATE TABLE IF NOT EXISTS api_requests (operation VARCHAR NOT NULL, "
    + ", ".join(f"{name} {kind}" for name, kind in REQUEST_COLUMNS.items())
    + ")"
)

# Every answer as it came, one row per data row (an empty answer: one row with no campaign), written in
# the transaction of the batch it belongs to. A later run of the same backfill takes a closed window's
# totals from a campaign_id=all answer fetched after the window ended instead of calling again.


def attempts_frame(attempts: list[dict], tags: dict[str, str | None]) -> pd.DataFrame:
    """A client's recorded HTTP attempts as ``api_requests`` rows, tagged (``source``, ``run_id``).

    The list is emptied, so each attempt is written once.
    """
    taken = len(attempts)  # the calling thread may append meanwhile: those stay for the next batch
    rows = [{**attempt, **tags} for attempt in attempts[:taken]]
    del attempts[:taken]
    frame = pd.DataFrame.from_records(rows, columns=list(REQUEST_COLUMNS))
    frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True)
    return frame.astype({"attempt": "Int32", "http_status": "Int32", "latency_ms": "float64", "bytes": "Int64"})


ANSWER_COLUMNS: dict[str, str] = {
    "answer_id": "VARCHAR",
    "api_campaign": "VARCHAR",  # what was asked: "all" or one campaign id
    "window_start": "TIMESTAMPTZ",
    "window_end": "TIMESTAMPTZ",
    "local_date": "DATE",
    "fetched_at": "TIMESTAMPTZ",
    "empty": "BOOLEAN",  # the server said "no data" (404 envelope or empty data)
    "campaign_id": "VARCHAR",  # of this data row, as sent (trimmed)
    "total_amd": "VARCHAR",  # as sent, before parsing
    "data_row": "VARCHAR",  # the whole data row, JSON
    "source": "VARCHAR",
    "run_id": "VARCHAR",
    "backfill_id": "VARCHAR",  # Dagster's dagster/backfill tag, or the CLI backfill's own id
}
ANSWERS_DDL = (
    "CREATE TABLE IF NOT EXISTS api_answers (operation VARCHAR NOT NULL, "
    + ", ".join(f"{n} {k}" for n, k in ANSWER_COLUMNS.items())
    + ")"
)
ANSWERS_KEEP_DAYS = 14  # answers older than this are pruned when the next load starts (prepare)


CAMPAIGNS_DDL = """
CREATE TABLE IF NOT EXISTS campaigns (
    operation VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    campaign_name VARCHAR,
    type_campaign VARCHAR,
    status VARCHAR,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    listed BOOLEAN NOT NULL,
    PRIMARY KEY (operation, campaign_id)
)"""


ISSUES_DDL = """
CREATE TABLE IF NOT EXISTS amd_window_issues (
    operation VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    local_date DATE NOT NULL,
    status VARCHAR NOT NULL,
    detail VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (operation, campaign_id, window_start)
)"""


# Today so far: one row per campaign, open day and fetch, written with the batch that fetched it.
INTRADAY_COLUMNS = (
    "operation VARCHAR NOT NULL, campaign_id VARCHAR NOT NULL, local_date DATE NOT NULL, "
    "fetched_at TIMESTAMPTZ NOT NULL, total_amd BIGINT NOT NULL"
)
INTRADAY_DDL = (
    f"CREATE TABLE IF NOT EXISTS amd_intraday ({INTRADAY_COLUMNS}, "
    "PRIMARY KEY (operation, campaign_id, local_date, fetched_at))"
)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """An AMD table: one row per campaign and window of its grain."""

    name: str
    description: str

    @property
    def ddl(self) -> str:
        """The table's ``CREATE TABLE IF NOT EXISTS`` statement, keyed by operation, campaign and window start."""
        return f"""
        CREATE TABLE IF NOT EXISTS {self.name} (
            operation VARCHAR NOT NULL,
            campaign_id VARCHAR NOT NULL,
            window_start TIMESTAMPTZ NOT NULL,
            window_end TIMESTAMPTZ NOT NULL,
            local_date DATE NOT NULL,
            total_amd BIGINT NOT NULL CHECK (total_amd >= 0),
            fetch_status VARCHAR NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL,
            is_final BOOLEAN NOT NULL,
            PRIMARY KEY (operation, campaign_id, window_start)
        )"""


AMD_DAILY = TableSpec(
    "amd_daily",
    "AMD detections (calls answered by a machine) per campaign and local day of the operation. "
    "One row per campaign and day; window_end is exclusive.",
)


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed when the body ends, rolled back when it raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def ensure_schema(conn: duckdb.DuckDBPyConnection, table: TableSpec = AMD_DAILY) -> None:
    """Create the tables; migrate a file from before operations (:func:`_migrate`)."""
    for ddl in (
        table.ddl,
        REQUESTS_DDL,
        ANSWERS_DDL,
        META_DDL,
        OPERATIONS_DDL,
        CAMPAIGNS_DDL,
        ISSUES_DDL,
        INTRADAY_DDL,
    ):
        conn.execute(ddl)
    if needs_migration(conn, table):
        with transaction(conn):
            _migrate(conn, table)


def _per_operation(table: TableSpec) -> dict[str, str]:
    """The tables whose rows are an operation's, and their DDL."""
    return {
        table.name: table.ddl,
        "campaigns": CAMPAIGNS_DDL,
        "amd_window_issues": ISSUES_DDL,
        "amd_intraday": INTRADAY_DDL,
        "api_requests": REQUESTS_DDL,
        "api_answers": ANSWERS_DDL,
    }


def table_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The columns of each table of the connection's own file."""
    found: dict[str, set[str]] = {}
    for name, column in conn.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database()"
    ).fetchall():
        found.setdefault(name, set()).add(column)
    return found


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True if a table named ``name`` exists in any database attached to ``conn``."""
    return bool(conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def needs_migration(conn: duckdb.DuckDBPyConnection, table: TableSpec = AMD_DAILY) -> bool:
    """True for a file from before operations: a table without ``operation``, or a zone in ``amd_meta``."""
    columns = table_columns(conn)
    if any(name in columns and "operation" not in columns[name] for name in _per_operation(table)):
        return True
    return "amd_meta" in columns and bool(
        conn.execute("SELECT count(*) FROM amd_meta WHERE key IN (?, ?)", [TIMEZONE_KEY, START_DATE_KEY]).fetchall()[0][
            0
        ]
    )


def _migrate(conn: duckdb.DuckDBPyConnection, table: TableSpec) -> None:
    """Make a file from before operations :data:`DEFAULT_OPERATION`'s, inside the caller's transaction.

    Every row of every per-operation table becomes the default operation's; DuckDB cannot alter a
    primary key, so each such table is rebuilt (create the new one, insert by name, drop, rename).
    A table from before ``is_final`` existed gets it, computed. ``amd_meta``'s zone and first day move to
    ``amd_operations``, and the views are made anew. Nothing else; a second run finds nothing to do.
    """
    columns = table_columns(conn)
    for name, ddl in _per_operation(table).items():
        old = columns.get(name)
        if old is None or "operation" in old:
            continue
        extra = ", fetched_at >= window_end AS is_final" if name == table.name and "is_final" not in old else ""
        conn.execute(ddl.replace(f"EXISTS {name} (", f"EXISTS {name}__migrating (", 1))
        conn.execute(
            f"INSERT INTO {name}__migrating BY NAME SELECT ?::VARCHAR AS operation, *{extra} FROM {name}",
            [DEFAULT_OPERATION],
        )
        conn.execute(f"DROP TABLE {name}")
        conn.execute(f"ALTER TABLE {name}__migrating RENAME TO {name}")
    if "amd_meta" in columns:
        meta = dict(
            conn.execute(
                "SELECT key, value FROM amd_meta WHERE key IN (?, ?)", [TIMEZONE_KEY, START_DATE_KEY]
            ).fetchall()
        )
        if meta:
            conn.execute(
                "INSERT INTO amd_operations VALUES (?, ?, ?::DATE) ON CONFLICT (operation) DO NOTHING",
                [DEFAULT_OPERATION, meta.get(TIMEZONE_KEY), meta.get(START_DATE_KEY)],
            )
            conn.execute("DELETE FROM amd_meta WHERE key IN (?, ?)", [TIMEZONE_KEY, START_DATE_KEY])
    create_views(conn)  # the old ones read amd_meta's zone
