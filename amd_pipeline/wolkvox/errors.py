"""One exception tree for everything the Wolkvox API can do to us.

    WolkvoxError
    ├── FatalError               never retried: the request or the setup is wrong
    │   ├── BadRequestError      400: unknown api, missing parameter, window too long
    │   ├── MissingTokenError    401: no wolkvox-token header
    │   ├── InvalidTokenError    403 PLEASE VALIDATE TOKEN: wrong or expired token
    │   ├── UnexpectedResponseError  404 that is not a Wolkvox envelope, other 4xx
    │   ├── StoppedError         the load the client served ended: no attempt after that, no retry wait
    │   └── CallLimitError       the load already made every call its plan allows: no further call
    ├── QuotaExhaustedError      403 TOKEN LIMIT EXCEEDED: stop calling until the quota resets
    ├── BudgetExhaustedError     our own daily call budget is spent: no call is made (not an answer)
    └── RetryableError           retried with exponential backoff and jitter
        ├── TokenBusyError       403 EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS
        ├── MaintenanceError     403 with any other text (backups disable the API for a while)
        ├── ServerError          5xx
        ├── BadBodyError         HTML, truncated or non-JSON body, unexpected envelope
        └── TransportError       connection refused/reset, connect or read timeout

The mapping from an HTTP answer to this tree lives in ``client.map_response`` and nowhere else.
Messages name the request (campaign and window), never the token.
"""

from __future__ import annotations


class WolkvoxError(Exception):
    """Base of every error the client raises.

    Attributes:
        request: what was asked, e.g. ``campaign 101, window 2026-11-25 (...)``.
        status: the HTTP status, when there was an answer.
        vendor_msg: the ``msg`` of the Wolkvox envelope, when there was one.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        request: str = "",
        status: int | None = None,
        vendor_msg: str = "",
        token_env: str = "WOLKVOX_TOKEN",
    ):
        self.request = request
        self.status = status
        self.vendor_msg = vendor_msg
        self.detail = message
        self.attempts = 1
        self.token_env = token_env  # the variable the token came from (an operation names its own)
        super().__init__(f"{request}: {message}" if request else message)


class FatalError(WolkvoxError):
    """The request or the configuration is wrong; retrying cannot help."""


class BadRequestError(FatalError):
    """HTTP 400: the API name or a parameter is wrong (a bug, or a window over 31 days)."""


class MissingTokenError(FatalError):
    """HTTP 401: the token header was not sent. Set WOLKVOX_TOKEN."""


class InvalidTokenError(FatalError):
    """HTTP 403 PLEASE VALIDATE TOKEN: the token is wrong or expired."""


class UnexpectedResponseError(FatalError):
    """An answer the API does not document (a 404 page that is not Wolkvox's, other 4xx)."""


class StoppedError(FatalError):
    """The client was told to stop (the load it served ended): no attempt after that, no retry wait."""


class CallLimitError(FatalError):
    """The client already made as many HTTP attempts as the load's plan allows (plan calls x attempts).

    A guard against any loop that would otherwise spend the operation's daily quota.
    """


class QuotaExhaustedError(WolkvoxError):
    """HTTP 403 TOKEN LIMIT EXCEEDED: the daily quota is spent; no further call is made."""


class BudgetExhaustedError(WolkvoxError):
    """This pipeline's daily call budget (a share of the token's quota) is spent; the call was not made.

    Attributes:
        limit: calls per day this pipeline may make.
        used: calls made today (all processes).
    """

    def __init__(self, message: str, *, limit: int, used: int, **kwargs):
        super().__init__(message, **kwargs)
        self.limit = limit
        self.used = used


class RetryableError(WolkvoxError):
    """A transient failure; the client retries it with backoff."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class TokenBusyError(RetryableError):
    """HTTP 403: another request with the same token is in flight."""


class MaintenanceError(RetryableError):
    """HTTP 403 with an undocumented message: the API is disabled for a while (backups)."""


class ServerError(RetryableError):
    """HTTP 5xx."""


class BadBodyError(RetryableError):
    """An HTML error page, a truncated or non-JSON body, or JSON that is not a Wolkvox envelope."""


class TransportError(RetryableError):
    """No answer: connection refused or reset, connect or read timeout.

    A connect timeout is also what a host whose IP is not on the operation's allow-list looks like.

    Attributes:
        host: the base URL that could not be reached.
        reason: what happened, in words (``connection refused``, ``no answer within 75 s``).
    """

    def __init__(self, message: str, *, host: str = "", reason: str = "", **kwargs):
        super().__init__(message, **kwargs)
        self.host = host
        self.reason = reason or message
