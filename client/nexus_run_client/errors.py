"""The client's one exception hierarchy.

Every failure the client reports is a :class:`NexusClientError`. An HTTP error carries the
status and the server's plain-text message (nexus always answers errors in plain text,
saying what was wrong and how to fix it); a failure to reach the server at all is an
:class:`Unavailable` with ``status`` None.
"""

from __future__ import annotations

_CLASS_STATUS: object = object()


class NexusClientError(Exception):
    """Base of every error the nexus client raises.

    ``status`` is the HTTP status, or None when no answer came (connection failure);
    ``retry_after`` the server's Retry-After in seconds, when it sent one.
    """

    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None | object = _CLASS_STATUS,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not _CLASS_STATUS:
            self.status = status  # type: ignore[assignment]
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.message}" if self.status else self.message


class BadRequest(NexusClientError):
    """400: the request cannot be acted on (bad payload, unknown template, ...)."""

    status = 400


class Unauthorized(NexusClientError):
    status = 401


class Forbidden(NexusClientError):
    status = 403


class NotFound(NexusClientError):
    """404: no such run (or no such route on this server)."""

    status = 404


class Conflict(NexusClientError):
    """409: the run is in a stage that does not allow the change (e.g. already finished)."""

    status = 409


class PayloadTooLarge(NexusClientError):
    status = 413


class NoPayload(NexusClientError):
    """417: the run exists but has no stored payload."""

    status = 417


class QueueFull(NexusClientError):
    """429: the scheduler's queue stayed full through every retry."""

    status = 429


class ServerError(NexusClientError):
    """500 or another 5xx the client does not retry."""

    status = 500


class Unavailable(NexusClientError):
    """503 through every retry, or the server could not be reached (``status`` None)."""

    status = 503


class WaitTimeout(NexusClientError):
    """A run was still unfinished when the client-side wait ran out."""

    status = None

    def __init__(self, message: str, last_result: object = None) -> None:
        super().__init__(message)
        self.last_result = last_result


_BY_STATUS: dict[int, type[NexusClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    417: NoPayload,
    429: QueueFull,
    503: Unavailable,
}


def error_for_status(
    status: int, message: str, retry_after: float | None = None
) -> NexusClientError:
    """The exception class for an HTTP status (ServerError for other 5xx)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else NexusClientError
    return cls(message, status=status, retry_after=retry_after)


__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NexusClientError",
    "NoPayload",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "error_for_status",
]
