"""One exception tree for the pipeline's own failures (the vendor's are in ``wolkvox/errors.py``).

    AmdPipelineError
    ├── SettingsError            a setting or an argument is wrong (also a ValueError: pydantic wraps those)
    ├── InvalidValueError        a value in an answer cannot be trusted: its window is rejected, never 0
    ├── RejectedValuesError      some windows held rejected values; every other window was written
    ├── LoadFailedError          a load stopped early: what it wrote (``report``) and why (``cause``)
    ├── StoreLockedError         another process holds the DuckDB file, or the publish lock, too long
    ├── TimezoneMismatchError    the file's days are in another time zone than the load's
    ├── FileHeldError            a program holds open a file an export must replace (Windows)
    │   └── PublishHeldError     ... or a publish must replace: the rows are safe in the working file
    └── SharedStateError         the PostgreSQL that holds the token's shared call budget fails
        └── SharedLockError      ... or the one that holds the shared token lock

A call through the token's client raises :data:`CALL_ERRORS`: the vendor's tree, or ``SharedStateError``
from its lease or its budget charge, never retried. Handlers of a call catch that tuple. The mapping to
sentences is ``messages.explain``, to exit statuses ``messages.exit_status``, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amd_pipeline.core.portable import file_holders
from amd_pipeline.wolkvox.errors import WolkvoxError
from amd_pipeline.wolkvox.windows import Window


class AmdPipelineError(Exception):
    """Base of every error the pipeline raises of its own (not the vendor's, not a library's)."""


class SettingsError(AmdPipelineError, ValueError):
    """A setting or an argument is wrong. The message says which, and how to fix it."""


class InvalidValueError(AmdPipelineError):
    """A value in an answer that cannot be trusted; names campaign, window and the raw value."""

    def __init__(self, campaign_id: str, window: Window, field: str, raw: Any, reason: str):
        self.campaign_id = campaign_id
        self.window = window
        self.field = field
        self.raw = raw
        super().__init__(f"campaign {campaign_id}, window {window}: {field} = {raw!r} rejected: {reason}")


class RejectedValuesError(AmdPipelineError):
    """Some windows held values that were rejected; every other window was written."""

    def __init__(self, rejects: Sequence[InvalidValueError]):
        self.rejects = list(rejects)
        lines = "\n".join(f"  - {r}" for r in self.rejects[:20])
        more = f"\n  ... and {len(self.rejects) - 20} more" if len(self.rejects) > 20 else ""
        super().__init__(f"{len(self.rejects)} window(s) rejected, not written:\n{lines}{more}")


class LoadFailedError(AmdPipelineError):
    """A load stopped early; ``report`` (a ``loader.LoadReport``) says what was written before it stopped."""

    def __init__(self, report: Any, cause: BaseException):
        self.report = report
        self.cause = cause
        super().__init__(str(cause))


class StoreLockedError(AmdPipelineError):
    """Another process holds the DuckDB file for longer than the store waits."""


class TimezoneMismatchError(AmdPipelineError):
    """The file's days are in another time zone than the one this load was asked to use."""


class FileHeldError(AmdPipelineError):
    """A file could not be replaced: a program holds it open.

    On Windows: Excel holds a CSV it shows, Power BI a Parquet file it reads, DBeaver the DuckDB file. The files
    of an export renamed before it are new, the rest as they were.

    Attributes:
        path: the held file.
        holders: who holds it, like ``"EXCEL.EXE (pid 1234)"`` (empty: not found out).
        reason: what the operating system said.
    """

    def __init__(self, path: Path, holders: list[str], reason: str):
        super().__init__(f"{path} is held open by {self.held_by(holders)} ({reason})")
        self.path, self.holders, self.reason = Path(path), holders, reason

    @staticmethod
    def held_by(holders: list[str]) -> str:
        """The holders joined with "and", or "another program" when none were found."""
        return " and ".join(holders) or "another program"

    @classmethod
    def of(cls, path: Path, exc: OSError, **extra) -> FileHeldError:
        """The error for ``path``, whose replacement failed with ``exc``, naming who holds it."""
        return cls(path, file_holders(path), exc.strerror or str(exc), **extra)


class PublishHeldError(FileHeldError):
    """A publish could not replace a file a program holds open (Windows refuses the rename).

    The file is the published DuckDB file, or one of its Parquet copy. Nothing is lost: the rows are in the
    working file (``working``), the published file is still the previous complete copy, and the temporary copy
    was removed; the next publish tries again.
    """

    def __init__(self, path: Path, holders: list[str], reason: str, *, working: Path):
        super().__init__(path, holders, reason)
        self.working = Path(working)


class SharedStateError(AmdPipelineError):
    """The database holding the token's shared state cannot be reached or used."""


class SharedLockError(SharedStateError):
    """The shared lock's database cannot be reached; the message never holds the URL (it may hold a password)."""


# What a call through the token's client can raise: the vendor's answers, or the token's shared state.
CALL_ERRORS = (WolkvoxError, SharedStateError)
