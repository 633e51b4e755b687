"""Where a benchmark's Dagster instance lives: the shipped SQLite profile or PostgreSQL, opened and sized.

``Profile`` is one fresh instance per run (SQLite: DAGSTER_HOME created by the CLI from
amd_pipeline/dagster.yaml; PostgreSQL: deploy/dagster.yaml on a database of a throwaway cluster from
amd_pipeline_tests/pg_cluster.py), with its size and the event rows its runs wrote.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sqlite3
import subprocess
from collections import defaultdict
from pathlib import Path

import yaml
from processes import ROOT


def du_bytes(path: Path) -> int:
    """Bytes under ``path`` on disk (``du -sb``)."""
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def postgres_home(home: Path, cluster) -> str:
    """A new database of ``cluster`` and ``home`` holding deploy/dagster.yaml (it reads DAGSTER_PG_URL); its URL."""
    url = cluster.create_database()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return url


def write_pg_home(home: Path) -> None:
    """DAGSTER_HOME/dagster.yaml on PostgreSQL, with the shipped file's pool, queue and monitoring blocks."""
    shipped = yaml.safe_load((ROOT / "amd_pipeline" / "dagster.yaml").read_text())
    config = {"storage": {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}}
    for block in ("concurrency", "run_queue", "run_monitoring", "telemetry", "nux"):
        if block in shipped:
            config[block] = shipped[block]
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def pg_driver_url(url: str) -> str:
    """``postgresql://`` names psycopg (3) in SQLAlchemy 2.1; the venv has psycopg2: name it when only it is there."""
    scheme, sep, rest = url.partition("://")
    plain = scheme in ("postgres", "postgresql") and sep
    if plain and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


class Profile:
    """Where the Dagster instance lives; one fresh instance per run."""

    name = ""

    def prepare(self, home: Path, env: dict[str, str]) -> None:
        """Make the instance in ``home`` and add what the CLI needs to reach it to ``env``."""
        raise NotImplementedError

    def size(self) -> int:
        """The instance's bytes on disk."""
        raise NotImplementedError

    def events(self, run_ids: list[str]) -> dict[str, list[int]]:
        """``{event type: [rows, bytes of the serialised event]}`` the runs wrote."""
        raise NotImplementedError

    @contextlib.contextmanager
    def instance(self):
        """The instance opened in this process (its environment set meanwhile), disposed of after."""
        import dagster as dg

        saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")}
        os.environ.update(self.env)
        instance = dg.DagsterInstance.from_config(str(self.home))
        try:
            yield instance
        finally:
            instance.dispose()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class SqliteProfile(Profile):
    """The shipped instance: SQLite files in DAGSTER_HOME."""

    name = "sqlite"

    def prepare(self, home: Path, env: dict[str, str]) -> None:
        """Name ``home``; the CLI creates it with the shipped dagster.yaml."""
        self.home = home
        self.env = {"DAGSTER_HOME": str(home)}

    def size(self) -> int:
        """Bytes of DAGSTER_HOME."""
        return du_bytes(self.home)

    def events(self, run_ids: list[str]) -> dict[str, list[int]]:
        """Summed over the runs' own shards and index.db, which holds a second copy of the asset events."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.detail = {"index_db": defaultdict(lambda: [0, 0])}
        shards = self.home / "history" / "runs"
        marks = ",".join("?" * len(run_ids))
        sources = [(shards / f"{run_id}.db", "", []) for run_id in run_ids]
        sources.append((shards / "index.db", f" WHERE run_id IN ({marks})", run_ids))
        for path, where, params in sources:
            if not path.exists():
                continue
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                query = f"SELECT dagster_event_type, count(*), sum(length(event)) FROM event_logs{where} GROUP BY 1"
                for kind, rows, size in conn.execute(query, params):
                    for into in (totals, self.detail["index_db"]) if where else (totals,):
                        into[kind or "(log message)"][0] += rows
                        into[kind or "(log message)"][1] += size or 0
        return dict(totals)


class PostgresProfile(Profile):
    """The production profile: deploy/dagster.yaml on a fresh database of a throwaway cluster."""

    name = "postgres"

    def __init__(self, cluster):
        """Make its databases on ``cluster`` (amd_pipeline_tests.pg_cluster)."""
        self.cluster = cluster

    def prepare(self, home: Path, env: dict[str, str]) -> None:
        """A new database; the CLI's instance and token lock both on it."""
        self.home = home
        self.url = postgres_home(home, self.cluster)
        env.update(DAGSTER_PG_URL=self.url, AMD_TOKEN_LOCK_URL=self.url)
        self.env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": self.url}

    def size(self) -> int:
        """``pg_database_size`` of the database."""
        return self.cluster.database_bytes(self.url)

    def events(self, run_ids: list[str]) -> dict[str, list[int]]:
        """Counted in the database's event_logs table."""
        import psycopg2

        conn = psycopg2.connect(self.url.replace("+psycopg2", ""))
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(
                "SELECT dagster_event_type, count(*), sum(length(event)) FROM event_logs "
                "WHERE run_id = ANY(%s) GROUP BY 1",
                (run_ids,),
            )
            return {(kind or "(log message)"): [int(rows), int(size or 0)] for kind, rows, size in cur.fetchall()}
