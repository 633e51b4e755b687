"""Where a secret ended up: every file under a folder, SQLite values included (zlib blobs unpacked)."""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from pathlib import Path


def secret_hits(root: Path, secret: str) -> list[str]:
    """Files under ``root`` holding ``secret``: raw bytes, and every sqlite value (zlib blobs unpacked)."""
    needle, hits = secret.encode(), []
    for path in (p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if needle in data:
            hits.append(str(path))
        if data.startswith(b"SQLite format 3"):
            conn = sqlite3.connect(path)
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        blob = value.encode() if isinstance(value, str) else value
                        if isinstance(blob, bytes):
                            with contextlib.suppress(zlib.error):
                                blob = zlib.decompress(blob)
                            if needle in blob:
                                hits.append(f"{path}:{table}")
            conn.close()
    return hits
