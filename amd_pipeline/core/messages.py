"""What a person reads when something fails: one sentence per kind of error, saying what to do. No dagster.

The CLI prints it, the asset puts it in the run's failure description, the sensor in its skip reason:
the same words everywhere, and never a traceback or a class path (``--verbose`` shows the traceback).
A command that ends with an exception exits with :func:`exit_status`'s status, mapped from the two trees
(``core/errors.py``, ``wolkvox/errors.py``; the table in docs/operating.md, "Errors and exit statuses").
"""

from __future__ import annotations

from amd_pipeline.core.errors import FileHeldError, PublishHeldError, SettingsError
from amd_pipeline.wolkvox import errors

# Exit statuses of every `amd-pipeline` command (the table in docs/operating.md, "Errors and exit statuses").
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_QUOTA = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130


class CliExit(Exception):  # noqa: N818 - an exit, not an error
    """Stop an `amd-pipeline` command with ``status`` after printing ``message`` as one ``error:`` line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def exit_status(exc: BaseException) -> int:
    """The exit status of an `amd-pipeline` command that ends with ``exc``.

    ``CliExit``: its own status; ``BudgetExhaustedError``: 4; ``QuotaExhaustedError``: 3; ``SettingsError``: 2
    (nothing called or written); ``KeyboardInterrupt``: 130; anything else: 1.
    """
    if isinstance(exc, CliExit):
        return exc.status
    if isinstance(exc, errors.BudgetExhaustedError):
        return EXIT_BUDGET
    if isinstance(exc, errors.QuotaExhaustedError):
        return EXIT_QUOTA
    if isinstance(exc, SettingsError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


ALLOW_LIST_HINT = (
    "check WOLKVOX_SERVER or WOLKVOX_BASE_URL, and that this machine's IP is on the operation's allow-list"
)


# How a person publishes again once the file is free: every path that publishes without new rows.
REPUBLISH_HINT = (
    "the next load or backfill publishes again, or Materialize amd_published (`amd-pipeline dev`) to publish now"
)


def _attempts(exc: errors.WolkvoxError) -> str:
    return f"{exc.attempts} attempt" + ("s" if exc.attempts != 1 else "")


def explain(exc: BaseException, *, deferred: int = 0, timezone: str = "") -> str:
    """The sentence a person reads for ``exc``: what happened, in words, and what to do about it.

    ``deferred`` windows were left for later when a budget or quota ran out (in ``timezone``'s day).
    """
    later = f"; a backfill after midnight {timezone} fetches them" if timezone else "; a later backfill fetches them"
    if isinstance(exc, errors.BudgetExhaustedError):
        spent = f"daily call budget of {exc.limit} reached ({exc.used} used)"
        if not deferred:  # refused before its first call (a backfill's pre-flight, a tick): nothing was left half done
            when = f"after midnight {timezone}" if timezone else "later"
            return f"{spent}: a backfill {when} fetches what is missing"
        return f"{spent}: {deferred} windows deferred{later}"
    if isinstance(exc, errors.QuotaExhaustedError) and deferred:
        return (
            f"the operation's daily call quota is spent (403 TOKEN LIMIT EXCEEDED): {deferred} windows deferred{later}"
        )
    if isinstance(exc, errors.TransportError):
        return f"could not reach {exc.host} ({exc.reason}, {_attempts(exc)}): {ALLOW_LIST_HINT}"
    if isinstance(exc, errors.InvalidTokenError):
        return f"the server refused the token (403 PLEASE VALIDATE TOKEN) for {exc.request}: check {exc.token_env}"
    if isinstance(exc, errors.MissingTokenError):
        return f"the server says no token was sent (401) for {exc.request}: set {exc.token_env}"
    if isinstance(exc, errors.QuotaExhaustedError):
        return (
            f"the operation's daily call quota is spent (403 TOKEN LIMIT EXCEEDED) at {exc.request}: "
            "what was fetched before is written; rerun after the quota resets"
        )
    if isinstance(exc, errors.CallLimitError):
        return f"{exc}. This is a bug in amd_pipeline: please report it with the run's logs"
    if isinstance(exc, errors.BadRequestError):
        return (
            f"{exc.request}: the server rejected the request (HTTP {exc.status} {exc.vendor_msg!r}); "
            "this is a bug in amd_pipeline: please report it with the run's logs"
        )
    if isinstance(exc, errors.RetryableError):
        return f"{exc}: the server kept failing; rerun later (transient errors are retried WOLKVOX_MAX_ATTEMPTS times)"
    if isinstance(exc, FileHeldError):
        held = f"it is open in {exc.held_by(exc.holders)} ({exc.reason})"
        if isinstance(exc, PublishHeldError):
            return (
                f"{exc.path} was not updated: {held}; the new rows are safe in {exc.working} and analysts still "
                f"see the previous copy: close the file in that program; {REPUBLISH_HINT}"
            )
        return (
            f"{exc.path} was not replaced: {held}: close it there and export again (the files before it are "
            "new, the others as they were)"
        )
    if isinstance(exc, SettingsError | errors.WolkvoxError):
        return str(exc)
    name = type(exc).__name__
    text = str(exc).strip()
    if type(exc).__module__.startswith("amd_pipeline"):
        return text or name
    return f"{name}: {text}" if text else name
