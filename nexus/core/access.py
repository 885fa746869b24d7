"""Who may call the run API: a bearer token names a caller, the caller may act on an
algorithm or not (docs/auth.md).

:class:`Access` is the use case the run routes call. It reads the ``Authorization``
header (Bearer only), asks an :class:`Authenticator` who the token belongs to and an
:class:`Authorizer` whether that caller may use a verb on an algorithm, and reuses both
answers for ``ttl`` seconds (an identity never beyond the expiry of its token). A token
that does not check out is :class:`~nexus.errors.Unauthenticated` (401), a refused verb
:class:`~nexus.errors.Forbidden` (403); when the check itself cannot be made (the API
server or the issuer's keys do not answer) the backend raises BackendUnavailable (503):
a request is never let through because nobody could be asked.

:class:`OpenAccess` is ``auth.mode: none``: every request passes, headers unread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import fnmatch
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

import msgspec

from nexus._rust_queue import KeyedTokenBucket
from nexus.core.models import Run
from nexus.core.ports import TemplateSource
from nexus.errors import BadRequest, Forbidden, RateLimited, Unauthenticated

Clock = Callable[[], float]
RunLoader = Callable[[], Awaitable[Sequence[Run]]]
DEFAULT_MAX_ENTRIES = 10_000


class Verb(enum.Enum):
    """What a caller does with an algorithm's runs; Kubernetes' verbs of the same name."""

    CREATE = "create"
    GET = "get"
    UPDATE = "update"
    DELETE = "delete"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A caller, as its token's checker names it. ``expires`` (Unix time): when the
    token stops being valid, if known; the identity is not reused beyond it."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = msgspec.field(default_factory=dict)
    expires: float | None = None


ANONYMOUS = Principal(user="system:anonymous")


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal:
        """The token's caller; raise Unauthenticated when the token is not valid and
        BackendUnavailable when it cannot be checked now."""


class Authorizer(Protocol):
    async def allowed(self, principal: Principal, verb: Verb, algorithm: str) -> bool:
        """Whether ``principal`` may ``verb`` runs of ``algorithm``; raise
        BackendUnavailable when that cannot be decided now."""


class AccessPolicy(Protocol):
    """What the run routes call: :class:`Access` or :class:`OpenAccess`."""

    enforced: bool

    async def check(self, authorization: str | None, verb: Verb, algorithm: str) -> Principal:
        """The caller, if it may ``verb`` runs of ``algorithm``; else raise."""

    async def readable(self, authorization: str | None, load: RunLoader) -> list[Run]:
        """The runs ``load`` finds that the caller may read; the caller is checked first
        (401 before anything is looked up)."""

    async def caller(self, authorization: str | None) -> Principal:
        """Who calls (401 unless known), for the routes about no one algorithm."""

    async def readable_algorithms(
        self, authorization: str | None, algorithms: Iterable[str]
    ) -> set[str]:
        """Those of ``algorithms`` whose runs the caller may read (``get``)."""


class OpenAccess:
    """``auth.mode: none``: anyone may do anything; the Authorization header is ignored."""

    enforced = False

    async def check(self, authorization: str | None, verb: Verb, algorithm: str) -> Principal:
        return ANONYMOUS

    async def readable(self, authorization: str | None, load: RunLoader) -> list[Run]:
        return list(await load())

    async def caller(self, authorization: str | None) -> Principal:
        return ANONYMOUS

    async def readable_algorithms(
        self, authorization: str | None, algorithms: Iterable[str]
    ) -> set[str]:
        return set(algorithms)


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values kept until their deadline on ``clock``, at most ``max_entries`` of them:
    when it is full the oldest entry goes (one step, whatever the size), so a flood of
    distinct tokens costs memory up to the bound and no more time per request."""

    def __init__(self, clock: Clock, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._clock = clock
        self._max = max_entries
        self._items: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V, seconds: float) -> None:
        if seconds <= 0:
            return
        self._items.pop(key, None)  # re-inserted: it is the newest now
        while len(self._items) >= self._max:
            del self._items[next(iter(self._items))]
        self._items[key] = (self._clock() + seconds, value)


def bearer_token(authorization: str | None) -> str:
    """The token of ``Authorization: Bearer <token>``; Unauthenticated otherwise."""
    if not authorization or not authorization.strip():
        raise Unauthenticated(
            "Authentication required: send Authorization: Bearer <token>", token_given=False
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(
            f"Authentication required: the Authorization scheme {scheme[:20]!r} is not "
            "accepted; send Authorization: Bearer <token>",
            token_given=False,
        )
    token = token.strip()
    if not token:
        raise Unauthenticated(
            "Authentication required: the Bearer token is empty", token_given=False
        )
    return token


def unverified_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without checking anything: used only to cut how
    long a checked identity is reused, never to accept a token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class Access:
    """The checks of ``auth.mode`` kubernetes and oidc, with their answers cached.

    With a ``limiter`` (``auth.caller-rate``), each request of a known caller takes a
    token from that caller's bucket, before the authorisation is decided: a caller over
    its rate gets 429 with ``Retry-After`` whatever it asks, and other callers are not
    slowed. Unknown tokens are refused (401) before they could fill the limiter."""

    enforced = True

    def __init__(
        self,
        authenticator: Authenticator,
        authorizer: Authorizer,
        ttl: float,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        limiter: KeyedTokenBucket | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._authorizer = authorizer
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._identities: TtlCache[bytes, Principal] = TtlCache(clock, max_entries)
        self._decisions: TtlCache[tuple[bytes, Verb, str], bool] = TtlCache(clock, max_entries)
        # Checks under way, by token: a burst of requests with one new token (a client
        # starting many runs at once) costs one TokenReview, not one each.
        self._checking: dict[bytes, asyncio.Future[Principal]] = {}

    async def _principal(self, token: str) -> tuple[bytes, Principal]:
        key, principal = await self._identify(token)
        if self._limiter is not None:
            wait = self._limiter.try_acquire(principal.user)
            if wait > 0:
                raise RateLimited(
                    f"Too many requests: {principal.user} is over its limit of "
                    f"{self._limiter.rate:g} requests per second (burst "
                    f"{self._limiter.burst}); retry in {wait:.1f}s",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return key, principal

    async def _identify(self, token: str) -> tuple[bytes, Principal]:
        key = hashlib.sha256(token.encode()).digest()  # the cache holds no token
        principal = self._identities.get(key)
        if principal is not None:
            return key, principal
        checking = self._checking.get(key)
        if checking is None:
            checking = asyncio.ensure_future(self._authenticate(key, token))
            self._checking[key] = checking
            checking.add_done_callback(lambda done: self._checked(key, done))
        # Shielded: a caller that goes away does not cancel the others' check.
        return key, await asyncio.shield(checking)

    def _checked(self, key: bytes, done: asyncio.Future[Principal]) -> None:
        self._checking.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: when every caller went away, nobody else does

    async def _authenticate(self, key: bytes, token: str) -> Principal:
        principal = await self._authenticator.authenticate(token)
        expires = principal.expires or unverified_expiry(token)
        keep = self._ttl if expires is None else min(self._ttl, expires - self._wall())
        self._identities.put(key, principal, keep)
        return principal

    async def _allowed(self, key: bytes, principal: Principal, verb: Verb, algorithm: str) -> bool:
        decision = self._decisions.get((key, verb, algorithm))
        if decision is None:
            decision = await self._authorizer.allowed(principal, verb, algorithm)
            self._decisions.put((key, verb, algorithm), decision, self._ttl)
        return decision

    async def check(self, authorization: str | None, verb: Verb, algorithm: str) -> Principal:
        key, principal = await self._principal(bearer_token(authorization))
        if not await self._allowed(key, principal, verb, algorithm):
            raise Forbidden(
                # repr, and cut: the name comes from the URL, unchecked yet
                f"Forbidden: {principal.user} may not {verb.value} runs of algorithm "
                f"{algorithm[:100]!r}"
            )
        return principal

    async def readable(self, authorization: str | None, load: RunLoader) -> list[Run]:
        key, principal = await self._principal(bearer_token(authorization))
        runs = await load()
        allowed = await self._readable(key, principal, (run.algorithm for run in runs))
        return [run for run in runs if run.algorithm in allowed]

    async def readable_algorithms(
        self, authorization: str | None, algorithms: Iterable[str]
    ) -> set[str]:
        key, principal = await self._principal(bearer_token(authorization))
        return await self._readable(key, principal, algorithms)

    async def _readable(
        self, key: bytes, principal: Principal, algorithms: Iterable[str]
    ) -> set[str]:
        names = list(dict.fromkeys(algorithms))
        decisions = await asyncio.gather(
            *(self._allowed(key, principal, Verb.GET, name) for name in names)
        )
        return {name for name, allowed in zip(names, decisions, strict=True) if allowed}

    async def caller(self, authorization: str | None) -> Principal:
        return (await self._principal(bearer_token(authorization)))[1]


RUN_GROUPS = "science.sneaksanddata.com/run-groups"
READ_GROUPS = "science.sneaksanddata.com/read-groups"
ANY_GROUP = "*"


class Rule(msgspec.Struct, frozen=True):
    """Callers in any of ``groups`` (``*``: every caller with a valid token) may use
    ``verbs`` on algorithms matching a pattern (a name, or a glob such as ``team-a-*``)."""

    groups: frozenset[str]
    algorithms: tuple[str, ...]
    verbs: frozenset[Verb]


def _groups(annotation: str) -> set[str]:
    return {group.strip() for group in annotation.split(",") if group.strip()}


class RuleAuthorizer:
    """``auth.mode: oidc``: a caller may use a verb on an algorithm when a rule of the
    settings allows it, or the algorithm's template names one of the caller's groups in
    its annotation ``run-groups`` (every verb) or ``read-groups`` (``get``), as a
    comma-separated list. Nothing else grants anything."""

    def __init__(self, rules: Iterable[Rule], templates: TemplateSource | None = None) -> None:
        self._rules = tuple(rules)
        self._templates = templates

    async def allowed(self, principal: Principal, verb: Verb, algorithm: str) -> bool:
        groups = {*principal.groups, ANY_GROUP}
        if any(
            verb in rule.verbs
            and not groups.isdisjoint(rule.groups)
            and any(fnmatch.fnmatchcase(algorithm, pattern) for pattern in rule.algorithms)
            for rule in self._rules
        ):
            return True
        if self._templates is None:
            return False
        try:
            template = await self._templates.template(algorithm)
        except BadRequest:  # a template that does not decode grants nothing
            return False
        if template is None:
            return False
        granted = _groups(template.annotations.get(RUN_GROUPS, ""))
        if verb is Verb.GET:
            granted |= _groups(template.annotations.get(READ_GROUPS, ""))
        return not granted.isdisjoint(groups)
