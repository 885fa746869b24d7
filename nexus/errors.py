"""One exception hierarchy for the whole service.

Every class knows the HTTP status it maps to, so a single Sanic error handler can render
any of them as the plain-text body the Go clients expect. Backends translate library
exceptions into these (chained with ``from``) and nothing else leaks out of them.
"""

from __future__ import annotations


class NexusError(Exception):
    """Base of every error nexus raises on purpose."""

    status: int = 500
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if headers:
            self.headers = headers


class BadRequest(NexusError):
    """The caller sent something we cannot act on; nothing was changed."""

    status = 400


class NotFound(NexusError):
    status = 404


class Unauthenticated(NexusError):
    """No usable credentials (auth.mode kubernetes or oidc): a missing, malformed, expired
    or unverifiable bearer token. The answer carries ``WWW-Authenticate`` (RFC 6750);
    the message says why without ever repeating the token."""

    status = 401

    def __init__(self, message: str, *, token_given: bool = True) -> None:
        challenge = 'Bearer realm="nexus"' + (', error="invalid_token"' if token_given else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(NexusError):
    """The caller may not do this: a signed URL that is tampered with or expired, or an
    authenticated caller without the right to act on an algorithm."""

    status = 403


class Conflict(NexusError):
    """The run is in a stage where the requested change is not allowed."""

    status = 409


class PayloadTooLarge(NexusError):
    status = 413


class NoPayload(NexusError):
    """The run exists but carries no stored payload (417, as in the Go system)."""

    status = 417


class QueueFull(NexusError):
    """Back-pressure: the virtual queue is full; the client should retry later."""

    status = 429


class RateLimited(NexusError):
    """A caller over its own rate (``auth.caller-rate``); ``Retry-After`` says when its
    next request fits. Nothing was done."""

    status = 429


class BackendUnavailable(NexusError):
    """A store, buffer or cluster did not answer; the request was not accepted.

    The answer asks the caller to come back in a second: an outage of one backend is
    usually short, and nexus's own client retries a 503, honouring ``Retry-After``.
    """

    status = 503
    headers = {"Retry-After": "1"}


class SyncFailed(NexusError):
    """The configuration controller left a shard out of step (a shard did not answer,
    an object there is not its own, a source is missing); it retries with backoff."""

    status = 503


class ConfigError(NexusError):
    """Settings that cannot be used; raised at start-up, never at request time."""

    status = 500


class InvalidTransition(NexusError):
    """A lifecycle change that the state machine refuses (e.g. leaving a terminal stage)."""

    status = 409


class LaunchError(NexusError):
    """Creating a Job failed. ``retryable`` tells the pipeline whether to back off and retry."""

    status = 503

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
