"""``auth.mode: oidc``: a bearer token is a JWT from one issuer, checked with PyJWT
against the keys the issuer publishes (its JWKS).

Checked: the signature with a published key (by ``kid``), the algorithm against
``auth.oidc.algorithms`` (``none`` and shared-secret HS* are refused at start-up, and the
key's own type must match the token's algorithm), ``iss``, ``aud``, ``exp`` (required),
``nbf`` and ``iat`` with ``leeway``. The caller is the ``user-claim`` and its groups the
``groups-claim`` (a list, or one string).

Keys: the JWKS URL is ``auth.oidc.jwks-url``, or ``jwks_uri`` of the issuer's
``/.well-known/openid-configuration``; it is fetched at the first token, again when a
token names a key not seen yet (key rotation; at most once a second), and when the copy
is older than ten minutes. A fetch that fails while the token's key is unknown is
BackendUnavailable (503); a stale copy that still holds the key keeps serving. The
fetches block, so they run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from typing import Any

import jwt

from nexus.core.access import Principal
from nexus.errors import BackendUnavailable, Unauthenticated
from nexus.settings import Oidc

log = logging.getLogger("nexus.auth")

REFETCH_AT_MOST_EVERY = 1.0  # seconds between fetches caused by unknown key ids
MAX_KEY_AGE = 600.0  # seconds a fetched key set is used before it is fetched again
MAX_DOCUMENT = 1 << 20  # bytes of a discovery document or key set


def _get_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read(MAX_DOCUMENT))


class JwksKeys:
    """The issuer's signing keys by ``kid``, fetched when needed."""

    def __init__(self, settings: Oidc, clock: Any = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._url = settings.jwks_url
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched: float | None = None
        self._failure = ""  # why the last fetch failed, if it did
        self._lock = asyncio.Lock()

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        timeout = self._settings.fetch_timeout
        if not self._url:
            discovery = self._settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = _get_json(discovery, timeout)
            url = document.get("jwks_uri") if isinstance(document, dict) else None
            if not isinstance(url, str) or not url:
                raise ValueError(f"{discovery} names no jwks_uri")
            self._url = url
        document = _get_json(self._url, timeout)
        if not isinstance(document, dict):
            raise ValueError(f"{self._url} is not a JSON Web Key Set")
        keys: dict[str, jwt.PyJWK] = {}
        for number, data in enumerate(jwt.PyJWKSet.from_dict(document).keys):
            keys[data.key_id or f"#{number}"] = data
        return keys

    async def _refresh(self) -> None:
        try:
            self._keys = await asyncio.to_thread(self._fetch)
            self._failure = ""
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            self._failure = (
                f"Cannot check tokens: the OIDC issuer's keys "
                f"({self._url or self._settings.issuer}) could not be fetched: {exc}"
            )
            raise BackendUnavailable(self._failure) from exc
        finally:
            self._fetched = self._clock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key named ``kid`` (the only key when the token names none)."""
        async with self._lock:
            age = None if self._fetched is None else self._clock() - self._fetched
            found = self._pick(kid)
            if age is None or (found is None and age >= REFETCH_AT_MOST_EVERY):
                await self._refresh()
            elif found is None and self._failure:  # the last fetch failed a moment ago
                raise BackendUnavailable(self._failure)
            elif age >= MAX_KEY_AGE:
                try:
                    await self._refresh()
                except BackendUnavailable as exc:
                    if found is None:
                        raise
                    log.warning("using the keys fetched %.0fs ago: %s", age, exc.message)
            return self._pick(kid)

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None


class OidcAuthenticator:
    def __init__(self, settings: Oidc) -> None:
        self._settings = settings
        self._keys = JwksKeys(settings)

    async def open(self) -> None:
        """Nothing to open: keys are fetched at the first token, so nexus starts (and its
        open routes answer) while the issuer is unreachable."""

    async def close(self) -> None:
        pass

    async def authenticate(self, token: str) -> Principal:
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("Invalid bearer token: it is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise Unauthenticated(
                f"Invalid bearer token: algorithm {str(algorithm)[:20]!r} is not accepted "
                f"(accepted: {', '.join(settings.algorithms)})"
            )
        kid = header.get("kid")
        key = await self._keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise Unauthenticated(
                "Invalid bearer token: it is signed with a key the issuer does not publish"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=settings.algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("Invalid bearer token: it has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"Invalid bearer token: its audience is not {settings.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                f"Invalid bearer token: it was not issued by {settings.issuer!r}"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"Invalid bearer token: {exc}") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        settings = self._settings
        user = claims.get(settings.user_claim)
        if not isinstance(user, str) or not user:
            raise Unauthenticated(
                f"Invalid bearer token: it has no {settings.user_claim!r} claim naming the caller"
            )
        groups = claims.get(settings.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            groups = []
        return Principal(
            user=user,
            groups=tuple(group for group in groups if isinstance(group, str)),
            expires=float(claims["exp"]),
        )
