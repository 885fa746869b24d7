"""The access use case (nexus.core.access) in virtual time: header parsing, the caches
of identities and decisions and their expiry, and the 401/403/503 it raises."""

from __future__ import annotations

import asyncio
import base64
import json

import msgspec
import pytest

from nexus._rust_queue import KeyedTokenBucket
from nexus.core.access import (
    READ_GROUPS,
    RUN_GROUPS,
    Access,
    OpenAccess,
    Principal,
    Rule,
    RuleAuthorizer,
    TtlCache,
    Verb,
    bearer_token,
    unverified_expiry,
)
from nexus.core.models import AlgorithmSpec, LifecycleStage, Run, Template
from nexus.errors import BackendUnavailable, BadRequest, Forbidden, RateLimited, Unauthenticated

WALL_START = 1_800_000_000.0
SPEC = msgspec.convert(
    {"container": {"image": "i", "registry": "r", "versionTag": "1"}, "command": "c"},
    AlgorithmSpec,
)


class Clocks:
    """A monotonic and a wall clock that move together, by hand."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = WALL_START

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Checks:
    """Authenticator and Authorizer that count their calls."""

    def __init__(self) -> None:
        self.tokens = {"good": Principal(user="alice", groups=("team-a",))}
        self.grants = {("alice", Verb.CREATE, "a"), ("alice", Verb.GET, "a")}
        self.authentications = 0
        self.authorizations = 0
        self.down = False

    async def authenticate(self, token: str) -> Principal:
        self.authentications += 1
        if self.down:
            raise BackendUnavailable("API server down")
        if token not in self.tokens:
            raise Unauthenticated("Invalid bearer token: unknown")
        return self.tokens[token]

    async def allowed(self, principal: Principal, verb: Verb, algorithm: str) -> bool:
        self.authorizations += 1
        if self.down:
            raise BackendUnavailable("API server down")
        return (principal.user, verb, algorithm) in self.grants


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def checks() -> Checks:
    return Checks()


@pytest.fixture
def access(checks: Checks, clocks: Clocks) -> Access:
    return Access(checks, checks, 10.0, clock=lambda: clocks.mono, wall=lambda: clocks.wall)


def jwt_like(exp: float) -> str:
    body = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{body}.sig"


@pytest.mark.parametrize(
    "header", [None, "", "   ", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"]
)
def test_headers_without_a_bearer_token_are_401_with_a_challenge(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer_token(header)
    assert caught.value.status == 401
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="nexus"'}
    assert "Bearer" in caught.value.message
    assert "dXNlcjpwYXNz" not in caught.value.message


@pytest.mark.parametrize("header", ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"])
def test_the_bearer_scheme_is_case_insensitive(header: str) -> None:
    assert bearer_token(header) == "abc"


async def test_a_known_token_with_the_right_verb_passes(access: Access) -> None:
    principal = await access.check("Bearer good", Verb.CREATE, "a")
    assert principal.user == "alice"


async def test_a_refused_verb_is_403_naming_caller_verb_and_algorithm(access: Access) -> None:
    with pytest.raises(Forbidden) as caught:
        await access.check("Bearer good", Verb.DELETE, "a")
    assert caught.value.status == 403
    assert caught.value.message == "Forbidden: alice may not delete runs of algorithm 'a'"
    with pytest.raises(Forbidden, match="algorithm 'b'"):
        await access.check("Bearer good", Verb.CREATE, "b")
    with pytest.raises(Forbidden) as long:  # a hostile name is not echoed whole
        await access.check("Bearer good", Verb.CREATE, "x" * 5000 + "\n")
    assert len(long.value.message) < 200 and "\n" not in long.value.message


async def test_an_unknown_token_is_401_marked_invalid_token(access: Access) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await access.check("Bearer s3cr3t-garbage", Verb.GET, "a")
    assert caught.value.headers["WWW-Authenticate"] == (
        'Bearer realm="nexus", error="invalid_token"'
    )
    assert "s3cr3t-garbage" not in caught.value.message


async def test_an_outage_is_503_never_a_pass(access: Access, checks: Checks) -> None:
    checks.down = True
    with pytest.raises(BackendUnavailable):
        await access.check("Bearer good", Verb.GET, "a")
    checks.down = False
    await access.check("Bearer good", Verb.GET, "a")
    checks.down = True  # cached now: an outage within the TTL goes unnoticed
    await access.check("Bearer good", Verb.GET, "a")
    with pytest.raises(BackendUnavailable):  # but a decision not made yet cannot be made
        await access.check("Bearer good", Verb.CREATE, "a")


async def test_answers_are_reused_within_the_ttl_and_asked_again_after(
    access: Access, checks: Checks, clocks: Clocks
) -> None:
    for _ in range(5):
        await access.check("Bearer good", Verb.GET, "a")
    assert (checks.authentications, checks.authorizations) == (1, 1)
    clocks.advance(9.9)
    await access.check("Bearer good", Verb.GET, "a")
    assert (checks.authentications, checks.authorizations) == (1, 1)
    clocks.advance(0.2)
    await access.check("Bearer good", Verb.GET, "a")
    assert (checks.authentications, checks.authorizations) == (2, 2)


async def test_a_revoked_token_is_refused_once_the_ttl_has_passed(
    access: Access, checks: Checks, clocks: Clocks
) -> None:
    await access.check("Bearer good", Verb.GET, "a")
    del checks.tokens["good"]
    await access.check("Bearer good", Verb.GET, "a")  # still cached
    clocks.advance(10.0)
    with pytest.raises(Unauthenticated):
        await access.check("Bearer good", Verb.GET, "a")


async def test_concurrent_requests_with_one_new_token_check_it_once(
    access: Access, checks: Checks
) -> None:
    release = asyncio.Event()
    authenticate = checks.authenticate

    async def slow(token: str) -> Principal:
        await release.wait()
        return await authenticate(token)

    checks.authenticate = slow  # type: ignore[method-assign]
    waiting = [asyncio.ensure_future(access.check("Bearer good", Verb.GET, "a")) for _ in range(5)]
    bad = [asyncio.ensure_future(access.check("Bearer bad", Verb.GET, "a")) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # one caller going away does not fail the others
    release.set()
    done = await asyncio.gather(*waiting[1:])
    assert {principal.user for principal in done} == {"alice"}
    for task in bad:
        with pytest.raises(Unauthenticated):
            await task
    assert checks.authentications == 2
    with pytest.raises(Unauthenticated):  # a refusal is not kept: the next try asks again
        await access.check("Bearer bad", Verb.GET, "a")
    assert checks.authentications == 3


async def test_refusals_of_tokens_are_not_cached(access: Access, checks: Checks) -> None:
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await access.check("Bearer nope", Verb.GET, "a")
    assert checks.authentications == 3


async def test_a_denial_is_cached_like_a_grant(
    access: Access, checks: Checks, clocks: Clocks
) -> None:
    for _ in range(3):
        with pytest.raises(Forbidden):
            await access.check("Bearer good", Verb.CREATE, "b")
    assert checks.authorizations == 1
    checks.grants.add(("alice", Verb.CREATE, "b"))
    clocks.advance(10.0)
    await access.check("Bearer good", Verb.CREATE, "b")


async def test_an_identity_is_never_reused_beyond_its_expiry(
    access: Access, checks: Checks, clocks: Clocks
) -> None:
    checks.tokens["short"] = Principal(user="bob", expires=WALL_START + 3)
    checks.grants.add(("bob", Verb.GET, "a"))
    await access.check("Bearer short", Verb.GET, "a")
    clocks.advance(2.9)
    await access.check("Bearer short", Verb.GET, "a")
    assert checks.authentications == 1
    clocks.advance(0.2)
    await access.check("Bearer short", Verb.GET, "a")
    assert checks.authentications == 2


async def test_a_jwt_exp_caps_the_cache_even_when_the_checker_says_nothing(
    access: Access, checks: Checks, clocks: Clocks
) -> None:
    token = jwt_like(WALL_START + 2)
    checks.tokens[token] = Principal(user="alice")
    await access.check(f"Bearer {token}", Verb.GET, "a")
    clocks.advance(2.0)
    await access.check(f"Bearer {token}", Verb.GET, "a")
    assert checks.authentications == 2


def test_unverified_expiry_reads_exp_or_nothing() -> None:
    assert unverified_expiry(jwt_like(12.5)) == 12.5
    for token in ("opaque", "a.b", "a.!!!.c", "a.bnVsbA.c", "a.eyJleHAiOnRydWV9.c"):
        assert unverified_expiry(token) is None, token


async def test_listing_keeps_only_readable_runs_and_asks_once_per_algorithm(
    access: Access, checks: Checks
) -> None:
    runs = [
        Run(algorithm=name, id=str(n), lifecycle_stage=LifecycleStage.NEW)
        for n, name in enumerate(["a", "b", "a", "b", "a"])
    ]

    async def load() -> list[Run]:
        return runs

    readable = await access.readable("Bearer good", load)
    assert [run.id for run in readable] == ["0", "2", "4"]
    assert checks.authorizations == 2


async def test_listing_checks_the_caller_before_looking_anything_up(access: Access) -> None:
    looked = []

    async def load() -> list[Run]:
        looked.append(True)
        return []

    with pytest.raises(Unauthenticated):
        await access.readable(None, load)
    assert looked == []


async def test_open_access_lets_everything_through_unread() -> None:
    open_access = OpenAccess()
    assert not open_access.enforced
    assert (await open_access.check(None, Verb.DELETE, "x")).user == "system:anonymous"
    runs = [Run(algorithm="x", id="1", lifecycle_stage=LifecycleStage.NEW)]

    async def load() -> list[Run]:
        return runs

    assert await open_access.readable("garbage", load) == runs


async def test_a_ttl_of_zero_caches_nothing(checks: Checks) -> None:
    access = Access(checks, checks, 0.0)
    for _ in range(3):
        await access.check("Bearer good", Verb.GET, "a")
    assert (checks.authentications, checks.authorizations) == (3, 3)


def test_the_cache_is_bounded_and_drops_the_oldest_entry() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(lambda: now[0], max_entries=3)
    cache.put("first", 1, 100)
    cache.put("second", 2, 5)
    cache.put("third", 3, 50)
    cache.put("first", 10, 100)  # renewed: now the newest
    cache.put("fourth", 4, 10)
    assert len(cache) == 3
    assert cache.get("second") is None
    assert (cache.get("first"), cache.get("third"), cache.get("fourth")) == (10, 3, 4)
    now[0] = 50.0
    assert cache.get("third") is None and cache.get("first") == 10


async def test_rules_grant_groups_verbs_on_matching_algorithms() -> None:
    rules = RuleAuthorizer(
        [
            Rule(frozenset({"team-a"}), ("algo-a", "team-a-*"), frozenset(Verb)),
            Rule(frozenset({"auditors"}), ("*",), frozenset({Verb.GET})),
        ]
    )
    alice = Principal(user="alice", groups=("team-a",))
    audrey = Principal(user="audrey", groups=("auditors", "other"))
    nobody = Principal(user="nobody")
    assert await rules.allowed(alice, Verb.CREATE, "algo-a")
    assert await rules.allowed(alice, Verb.DELETE, "team-a-etl")
    assert not await rules.allowed(alice, Verb.GET, "algo-b")
    assert not await rules.allowed(alice, Verb.GET, "ALGO-A")  # names are case-sensitive
    assert await rules.allowed(audrey, Verb.GET, "algo-b")
    assert not await rules.allowed(audrey, Verb.CREATE, "algo-b")
    assert not await rules.allowed(nobody, Verb.GET, "algo-a")


async def test_the_group_star_is_every_caller_with_a_valid_token() -> None:
    rules = RuleAuthorizer([Rule(frozenset({"*"}), ("public-*",), frozenset({Verb.GET}))])
    assert await rules.allowed(Principal(user="x"), Verb.GET, "public-data")
    assert not await rules.allowed(Principal(user="x"), Verb.CREATE, "public-data")
    assert not await RuleAuthorizer([]).allowed(Principal(user="x"), Verb.GET, "anything")


class Templates:
    """A template source with annotated templates (and one that does not decode)."""

    def __init__(self) -> None:
        self.down = False

    async def template(self, name: str) -> Template | None:
        if self.down:
            raise BackendUnavailable("templates not loaded")
        if name == "broken":
            raise BadRequest("NexusAlgorithmTemplate 'broken' cannot be used")
        annotations = {
            "team-b-job": {RUN_GROUPS: "team-b, ops", READ_GROUPS: "auditors"},
            "open-job": {RUN_GROUPS: "*"},
        }.get(name)
        if annotations is None:
            return None
        return Template(name, SPEC, annotations=annotations)


async def test_template_annotations_grant_their_groups() -> None:
    templates = Templates()
    rules = RuleAuthorizer([Rule(frozenset({"team-a"}), ("a",), frozenset(Verb))], templates)
    bob = Principal(user="bob", groups=("team-b",))
    audrey = Principal(user="audrey", groups=("auditors",))
    alice = Principal(user="alice", groups=("team-a",))
    assert await rules.allowed(bob, Verb.DELETE, "team-b-job")
    assert not await rules.allowed(bob, Verb.GET, "a")
    assert await rules.allowed(audrey, Verb.GET, "team-b-job")
    assert not await rules.allowed(audrey, Verb.CREATE, "team-b-job")
    assert not await rules.allowed(alice, Verb.GET, "team-b-job")
    assert await rules.allowed(alice, Verb.CREATE, "a")  # the settings' rule
    assert await rules.allowed(Principal(user="anyone"), Verb.CREATE, "open-job")
    assert not await rules.allowed(bob, Verb.GET, "unknown")
    assert not await rules.allowed(bob, Verb.GET, "broken")
    templates.down = True
    assert await rules.allowed(alice, Verb.CREATE, "a")  # decided without the templates
    with pytest.raises(BackendUnavailable):  # not decidable now: never a pass
        await rules.allowed(bob, Verb.GET, "team-b-job")


async def test_a_caller_over_its_rate_is_429_and_others_are_not(checks: Checks) -> None:
    """A real KeyedTokenBucket: 2 at once, then one per 1000 s (no refill during a test)."""
    checks.tokens["other"] = Principal(user="bob")
    checks.grants.add(("bob", Verb.GET, "a"))
    limited = Access(checks, checks, 10.0, limiter=KeyedTokenBucket(0.001, 2))
    for _ in range(2):
        await limited.check("Bearer good", Verb.GET, "a")
    with pytest.raises(RateLimited) as caught:
        await limited.check("Bearer good", Verb.GET, "a")
    assert caught.value.status == 429
    assert "alice is over its limit" in caught.value.message
    assert 990 <= int(caught.value.headers["Retry-After"]) <= 1000
    with pytest.raises(RateLimited):  # every route counts, the tag lookup too
        await limited.readable("Bearer good", lambda: asyncio.sleep(0, result=[]))
    authorizations = checks.authorizations
    with pytest.raises(RateLimited):  # refused before anything is decided
        await limited.check("Bearer good", Verb.DELETE, "a")
    assert checks.authorizations == authorizations
    assert (await limited.check("Bearer other", Verb.GET, "a")).user == "bob"
    with pytest.raises(Unauthenticated):  # an unknown token takes no caller's tokens
        await limited.check("Bearer unknown", Verb.GET, "a")
