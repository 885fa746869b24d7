"""HMAC-signed credentials: URLs for payloads and results, and per-run completion tokens.

The scheduler serves the embedded folder's URLs itself; their signature is an HMAC-SHA256
over the method, the path and the expiry, so a URL cannot be re-pointed at another run,
widened to another method, or used after it expires. A run's completion token
(:class:`RunTokens`) is the same construction over the run's algorithm, id and expiry,
with a key of its own: it lets that run, and no other, report to the receiver.
"""

from __future__ import annotations

import base64
import hmac
import time

from nexus.core.access import bearer_token
from nexus.errors import Forbidden, Unauthenticated


def _mac(secret: bytes, message: str) -> str:
    # One-shot hmac.digest runs in C without building an HMAC object: every accept
    # signs three URLs, so this is on the hot path.
    digest = hmac.digest(secret, message.encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_secret(secret: bytes, what: str) -> None:
    if len(secret) < 16:
        raise ValueError(f"the {what} secret must be at least 16 bytes")


class UrlSigner:
    def __init__(self, secret: bytes, base_url: str) -> None:
        _check_secret(secret, "URL signing")
        self._secret = secret
        self._base_url = base_url.rstrip("/")

    def _signature(self, method: str, path: str, expires: int) -> str:
        return _mac(self._secret, f"{method}\n{path}\n{expires}")

    def sign(self, method: str, path: str, valid_for: float, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + valid_for)
        # Digits and unpadded URL-safe base64 need no escaping, so the query is formatted
        # directly: the same text urlencode gives, at a fraction of its cost.
        return f"{self._base_url}{path}?exp={expires}&sig={self._signature(method, path, expires)}"

    def verify(
        self, method: str, path: str, exp: str | None, sig: str | None, now: float | None = None
    ) -> None:
        """Raise Forbidden unless ``sig`` signs (method, path, exp) and exp is in the future."""
        if not exp or not sig:
            raise Forbidden("Invalid payload address: the URL is not signed (exp and sig needed)")
        try:
            expires = int(exp)
        except ValueError:
            raise Forbidden("Invalid payload address: malformed expiry") from None
        expected = self._signature(method, path, expires)
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise Forbidden("Invalid payload address: the signature does not match")
        if (time.time() if now is None else now) > expires:
            raise Forbidden("Invalid payload address: the URL has expired")


RUN_TOKEN_ENV = "NEXUS__CLIENT__RECEIVER_ACCESS_TOKEN"
RUN_TOKEN_HEADER = "X-Nexus-Run-Token"
_TOKEN_PREFIX = "nxr1"
_MAX_TOKEN = 128  # a real one is about 60 characters
_SIGNATURE_LENGTH = 43  # 32 bytes of HMAC-SHA256 in unpadded base64
_HOW = f"send it as Authorization: Bearer <token> or {RUN_TOKEN_HEADER}, from ${RUN_TOKEN_ENV}"


def presented_token(authorization: str | None, run_token: str | None) -> str | None:
    """The token a report carries: the dedicated header wins (so a mesh or proxy may own
    Authorization), else a Bearer credential; None when there is neither. Another
    Authorization scheme is Unauthenticated, as on the run API."""
    if run_token and run_token.strip():
        return run_token.strip()
    if not authorization or not authorization.strip():
        return None
    return bearer_token(authorization)


class RunTokens:
    """Completion tokens: ``nxr1.<expiry>.<HMAC of algorithm, run id and expiry>``.

    Nothing is stored: the receiver recomputes the MAC from the route's algorithm and id,
    so a token names its run by construction and another run's token does not match.
    """

    def __init__(self, secret: bytes) -> None:
        _check_secret(secret, "receiver token")
        self._secret = secret

    def _signature(self, algorithm: str, run_id: str, expires: int) -> str:
        return _mac(self._secret, f"complete\n{algorithm}\n{run_id}\n{expires}")

    def issue(self, algorithm: str, run_id: str, valid_for: float, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + valid_for)
        return f"{_TOKEN_PREFIX}.{expires}.{self._signature(algorithm, run_id, expires)}"

    def verify(
        self, token: str | None, algorithm: str, run_id: str, now: float | None = None
    ) -> None:
        """Raise Unauthenticated (no token, not a run token, expired) or Forbidden
        (another run's, or forged) unless ``token`` is this run's and still valid. The
        message never repeats the token."""
        if not token:
            raise Unauthenticated(
                f"Authentication required: reporting on a run needs its run token; {_HOW}",
                token_given=False,
            )
        prefix, _, rest = token.partition(".")
        exp, _, sig = rest.partition(".")
        if (
            len(token) > _MAX_TOKEN
            or prefix != _TOKEN_PREFIX
            or not (exp.isascii() and exp.isdigit())
            or len(sig) != _SIGNATURE_LENGTH
            or not sig.isascii()
        ):
            raise Unauthenticated(f"Invalid run token: it is not a nexus run token; {_HOW}")
        expected = self._signature(algorithm, run_id, int(exp))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise Forbidden(f"Forbidden: the token is not the run token of {algorithm}/{run_id}")
        if (time.time() if now is None else now) > int(exp):
            raise Unauthenticated("Invalid run token: it has expired (with its run's deadline)")
