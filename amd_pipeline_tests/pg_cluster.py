"""A throwaway PostgreSQL cluster on loopback, in a temporary folder: for the tests and the benchmarks.

    python -m amd_pipeline_tests.pg_cluster        # start one, print its URL, stop it on Ctrl-C or kill

Uses Debian's server binaries (``/usr/lib/postgresql/<version>/bin``). The server refuses to run as
root, so as root the folder is given to the ``postgres`` user and the binaries run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

INSTALL_HINT = "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it)"


def server_bin() -> Path | None:
    """The newest installed server's bin folder, or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One server: ``start()``, ``create_database()`` as often as needed, ``stop()`` (also on failure)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="amd-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0  # no such thing on Windows

    def _run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_root else []
        return subprocess.run(
            [*prefix, *argv], check=True, capture_output=True, text=True, timeout=kwargs.pop("timeout", 60), **kwargs
        )

    def start(self) -> Cluster:
        if self._as_root:
            import pwd  # as root on Linux only: the server refuses to run as root

            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self.folder.chmod(0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        # The port was free when picked; another process (a pytest-xdist worker starting its own cluster)
        # may take it before the server binds it: then the start fails, and a new port is tried.
        for attempt in range(5):
            options = (
                f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
            )
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options]
            try:
                self._run(*pg_ctl, "start")
                return self
            except subprocess.CalledProcessError:
                if attempt == 4 or "already in use" not in self.log.read_text(errors="replace"):
                    raise
                self.port = _free_port()
        return self

    def url(self, database: str = "postgres") -> str:
        # The +psycopg2 part matters: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed).
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg2

        name = name or f"amd_{uuid.uuid4().hex[:12]}"
        with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def database_bytes(self, url: str) -> int:
        """``pg_database_size`` of the database behind ``url``."""
        import psycopg2

        name = url.rsplit("/", 1)[1]
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres")
        with contextlib.closing(connection) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(%s)", (name,))
            return int(cur.fetchone()[0])

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    running = Cluster(bindir)
    try:
        yield running.start()
    finally:
        running.stop()


def _interrupt(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Ctrl-C or kill stops the server and removes its folder (a shell's background job ignores SIGINT
    # unless it is handed back).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    with cluster() as c:
        print(c.create_database("dagster"), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
