"""``auth.mode: oidc`` on a running nexus, against a real JWKS served by the test.

The test is the identity provider: it makes RSA and EC keys (cryptography), publishes
them over loopback HTTP as a discovery document and a JWKS, and signs tokens with PyJWT.
nexus finds the keys through ``<issuer>/.well-known/openid-configuration``. Group rules
give team-a the ``behave`` algorithm only, admins every algorithm and readers ``get`` on
every one; the ``noop`` template's annotation gives it to team-noop. Receiver tokens are
on: runs report with their own token (tests/e2e/test_receiver_tokens.py), not a JWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import NexusProcess, walk_routes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support import API, assert_error, create, wait_stage

from nexus.core.models import LifecycleStage
from nexus_run_client import Forbidden as ClientForbidden
from nexus_run_client import NexusClient, Unauthorized

AUDIENCE = "nexus-test"
A, B = "behave", "noop"
FINISHED = {s.value for s in LifecycleStage if s.is_terminal}


class Provider:
    """A small OIDC issuer: a discovery document, a JWKS that can change or fail."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[str] = []
        self.failing = False
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += self.path == "/jwks.json"
                if provider.failing:
                    self.send_error(500, "identity provider down")
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/jwks.json"}
                elif self.path == "/jwks.json":
                    body = {"keys": [provider.jwk(kid) for kid in provider.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kid: str, kind: str = "rsa", publish: bool = True) -> str:
        if kind == "rsa":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            self.published.append(kid)
        return kid

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
        if algorithm is None:
            data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        else:
            data = json.loads(algorithm.to_jwk(key.public_key()))
        return {**data, "kid": kid, "use": "sig"}

    def token(
        self, kid: str = "k1", *, groups: tuple[str, ...] = ("team-a",), **changes: Any
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "alice",
            "groups": list(groups),
            "iat": now,
            "exp": now + 600,
            **changes,
        }
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def part(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], kid: str = "k1") -> str:
    """An ``alg: none`` token: a header and claims, no signature."""
    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    idp = Provider()
    idp.add_key("k1")
    idp.add_key("e1", kind="ec")
    yield idp
    idp.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, provider: Provider) -> Iterator[NexusProcess]:
    folder = tmp_path_factory.mktemp("oidc")
    settings = folder / "settings.yaml"
    settings.write_text(
        json.dumps(
            {
                "auth": {
                    "mode": "oidc",
                    "cache-ttl": "10s",
                    "receiver-tokens": True,
                    "oidc": {"issuer": provider.issuer, "audience": AUDIENCE, "leeway": "5s"},
                    "rules": [
                        {"groups": ["team-a"], "algorithms": [A]},
                        {"groups": ["admins"], "algorithms": ["*"]},
                        {"groups": ["readers"], "algorithms": ["*"], "verbs": ["get"]},
                    ],
                }
            }
        )
    )
    proc = NexusProcess(folder / "data", config=settings).start()
    yield proc
    proc.stop()
    proc.kill_algorithms()


@pytest.fixture
def api(server: NexusProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def test_a_valid_token_creates_and_reads_runs_of_its_algorithm(
    api: httpx.Client, provider: Provider
) -> None:
    headers = bearer(provider.token())
    run_id = create(api, {"n": 1}, algorithm=A, headers=headers)
    for route in ("results", "metadata", "buffer"):
        response = api.get(f"{API}/{route}/{A}/requests/{run_id}", headers=headers)
        assert response.status_code == 200, (route, response.text)
    response = api.get(f"{API}/payload/{A}/requests/{run_id}", headers=headers)
    assert response.status_code == 302, response.text
    update = api.post(
        f"{API}/metadata/tags/{A}/requests/{run_id}", json={"newTag": "x"}, headers=headers
    )
    assert update.status_code == 200, update.text
    # An EC key (ES256) of the same issuer works as well.
    assert api.get(
        f"{API}/results/{A}/requests/{run_id}", headers=bearer(provider.token("e1"))
    ).is_success


def test_a_group_without_a_rule_for_the_algorithm_is_403(
    api: httpx.Client, provider: Provider
) -> None:
    headers = bearer(provider.token())
    response = api.post(f"{API}/run/{B}", json={"algorithmParameters": {}}, headers=headers)
    assert_error(response, 403, "alice may not create runs of algorithm 'noop'")
    run_id = create(api, algorithm=B, headers=bearer(provider.token(groups=("admins",))))
    response = api.get(f"{API}/results/{B}/requests/{run_id}", headers=headers)
    assert_error(response, 403, "alice may not get runs of algorithm 'noop'")
    reader = bearer(provider.token(groups=("readers",)))
    assert api.get(f"{API}/results/{B}/requests/{run_id}", headers=reader).is_success
    response = api.post(f"{API}/cancel/{B}/requests/{run_id}", json={}, headers=reader)
    assert_error(response, 403, "may not delete runs of algorithm 'noop'")


def test_a_template_annotation_grants_its_groups(api: httpx.Client, provider: Provider) -> None:
    """noop's template names team-noop in science.sneaksanddata.com/run-groups."""
    headers = bearer(provider.token(groups=("team-noop",), sub="nora"))
    run_id = create(api, algorithm=B, headers=headers)
    assert api.get(f"{API}/results/{B}/requests/{run_id}", headers=headers).is_success
    response = api.post(f"{API}/run/{A}", json={"algorithmParameters": {}}, headers=headers)
    assert_error(response, 403, "nora may not create runs of algorithm 'behave'")


def test_the_tag_lookup_listing_and_counts_show_only_what_the_caller_may_read(
    api: httpx.Client, provider: Provider
) -> None:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    admin = bearer(provider.token(groups=("admins",)))
    a_id = create(api, algorithm=A, headers=admin, tag=tag)
    b_id = create(api, algorithm=B, headers=admin, tag=tag)

    def listed(headers: dict[str, str]) -> set[str]:
        response = api.get(f"{API}/results/tags/{tag}", headers=headers)
        assert response.status_code == 200, response.text
        listing = api.get(f"{API}/runs", params={"tag": tag}, headers=headers)
        assert listing.status_code == 200, listing.text
        found = {run["requestId"] for run in response.json()}
        assert {run["requestId"] for run in listing.json()["runs"]} == found
        return found

    def counted(headers: dict[str, str]) -> set[str]:
        response = api.get(f"{API}/runs/counts", headers=headers)
        assert response.status_code == 200, response.text
        return {count["algorithm"] for count in response.json()["counts"]}

    team_a = bearer(provider.token())
    assert listed(admin) == {a_id, b_id} and counted(admin) >= {A, B}
    assert listed(team_a) == {a_id} and counted(team_a) == {A}
    assert listed(bearer(provider.token(groups=("nobody",)))) == set()
    response = api.get(f"{API}/runs", params={"algorithm": B}, headers=team_a)
    assert_error(response, 403, "may not get runs of algorithm 'noop'")
    events = api.get(f"{API}/runs/{B}/requests/{b_id}/events", headers=team_a)
    assert_error(events, 403, "may not get runs of algorithm 'noop'")
    reader = bearer(provider.token(groups=("readers",)))
    resubmit = api.post(f"{API}/resubmit/{B}/requests/{b_id}", headers=reader)
    assert_error(resubmit, 403, "may not create runs of algorithm 'noop'")
    for path in ("results/tags/{tag}", "runs", "runs/counts"):
        response = api.get(f"{API}/{path.format(tag=tag)}")
        assert_error(response, 401, "Authentication required")
    for path in ("runs", "runs/counts"):  # the caller is checked before the query
        response = api.get(f"{API}/{path}", params={"since": "garbage", "colour": "red"})
        assert_error(response, 401, "Authentication required")


def test_the_ui_overview_lists_only_readable_templates(
    api: httpx.Client, provider: Provider
) -> None:
    def templates(headers: dict[str, str]) -> set[str]:
        response = api.get(f"{API}/templates", headers=headers)
        assert response.status_code == 200, response.text
        return {template["name"] for template in response.json()["templates"]}

    everything = templates(bearer(provider.token(groups=("admins",))))
    assert {A, B} <= everything
    assert templates(bearer(provider.token())) == {A}  # team-a's rule names only A
    assert templates(bearer(provider.token(groups=("nobody",)))) == set()
    assert_error(api.get(f"{API}/templates"), 401, "Authentication required")
    assert_error(api.get(f"{API}/shards"), 401, "Authentication required")
    assert api.get(f"{API}/shards", headers=bearer(provider.token())).status_code == 200


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.token(aud="someone-else"), f"its audience is not '{AUDIENCE}'"),
        (lambda p: p.token(iss="https://other.example"), "it was not issued by"),
        (lambda p: p.token(exp=int(time.time()) - 3600), "it has expired"),
        (lambda p: p.token(nbf=int(time.time()) + 3600), "not yet valid"),
        (
            lambda p: unsigned({"iss": p.issuer, "aud": AUDIENCE, "sub": "x", "exp": 2**40}),
            "algorithm 'none' is not accepted",
        ),
        (lambda p: p.token(sub=""), "'sub' claim"),
        (lambda p: p.token()[:-8] + "AAAAAAAA", "Signature verification failed"),
        (lambda p: "not-a-jwt", "it is not a JWT"),
    ],
    ids=[
        "wrong-audience",
        "wrong-issuer",
        "expired",
        "not-yet-valid",
        "alg-none",
        "no-subject",
        "bad-signature",
        "garbage",
    ],
)
def test_tokens_that_do_not_check_out_are_401(
    api: httpx.Client, provider: Provider, make: Any, fragment: str
) -> None:
    token = make(provider)
    response = api.post(f"{API}/run/{A}", json={"algorithmParameters": {}}, headers=bearer(token))
    message = assert_error(response, 401, "Invalid bearer token", fragment)
    assert token not in message
    assert response.headers["www-authenticate"] == 'Bearer realm="nexus", error="invalid_token"'


def test_a_hs256_token_signed_with_the_public_key_is_refused(
    api: httpx.Client, provider: Provider
) -> None:
    """The classic key confusion: the published key used as an HMAC secret."""
    public = (
        provider.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": 2**40}
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    signing_input = f"{part(header)}.{part(claims)}"
    signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    response = api.get(f"{API}/results/{A}/requests/x", headers=bearer(token))
    assert_error(response, 401, "algorithm 'HS256' is not accepted")


def test_a_rotated_key_is_fetched_when_a_token_names_it(
    api: httpx.Client, provider: Provider
) -> None:
    provider.add_key("k2", publish=False)
    token = provider.token("k2")
    response = api.post(f"{API}/run/{A}", json={"algorithmParameters": {}}, headers=bearer(token))
    assert_error(response, 401, "signed with a key the issuer does not publish")
    provider.published = ["k2", "e1"]  # k1 retired, k2 in

    def accepted() -> int:
        return api.get(f"{API}/results/tags/rotation", headers=bearer(token)).status_code

    deadline = time.monotonic() + 30
    while accepted() != 200:  # unknown key ids refetch the JWKS at most once a second
        assert time.monotonic() < deadline, "the rotated key was never fetched"
        time.sleep(0.2)
    create(api, algorithm=A, headers=bearer(token))


def test_an_unreachable_jwks_is_503_for_an_unknown_key_never_a_pass(
    api: httpx.Client, provider: Provider
) -> None:
    known = provider.token(provider.published[0])
    assert api.get(f"{API}/results/tags/jwks-down", headers=bearer(known)).status_code == 200
    provider.add_key("k3", publish=False)
    unknown = provider.token("k3")
    provider.failing = True
    try:
        deadline = time.monotonic() + 30
        while True:
            response = api.get(f"{API}/results/tags/jwks-down", headers=bearer(unknown))
            if response.status_code == 503:
                break
            assert response.status_code == 401, response.text  # within a second of a fetch
            assert time.monotonic() < deadline, "an unreachable JWKS never turned into a 503"
            time.sleep(0.2)
        assert_error(response, 503, "OIDC issuer's keys", "could not be fetched")
        assert response.headers["retry-after"] == "1"
        again = api.get(f"{API}/results/tags/jwks-down", headers=bearer(unknown))
        assert_error(again, 503, "could not be fetched")  # never a 401 during the outage
        # A key fetched before the outage still verifies tokens meanwhile.
        fresh = provider.token(provider.published[0], sub="bob")
        assert api.get(f"{API}/results/tags/jwks-down", headers=bearer(fresh)).is_success
    finally:
        provider.failing = False


def test_the_official_client_sends_its_token_as_a_bearer(
    server: NexusProcess, provider: Provider
) -> None:
    kid = provider.published[0]
    with NexusClient(server.url, token=lambda: provider.token(kid)) as nexus:
        run_id = nexus.create_run(A, {"sleep": 0.1})
        assert nexus.await_run(A, run_id, timeout=60).succeeded
        with pytest.raises(ClientForbidden):
            nexus.create_run(B, {})
    with NexusClient(server.url, token="garbage") as nexus, pytest.raises(Unauthorized):
        nexus.get_run(A, run_id)


def test_every_route_without_credentials(server: NexusProcess) -> None:
    walk_routes(server.url, enforced=True, receiver_tokens=True)


def test_every_route_without_credentials_when_auth_is_off(nexus: NexusProcess) -> None:
    walk_routes(nexus.url, enforced=False)


def test_a_settings_file_refusing_oidc_without_issuer_stops_the_start(tmp_path: Path) -> None:
    proc = NexusProcess(tmp_path / "data", env={"NEXUS__AUTH__MODE": "oidc"})
    with pytest.raises(RuntimeError, match=r"auth\.oidc\.issuer"):
        proc.start(timeout=30)


@contextmanager
def oidc_nexus(
    folder: Path, provider: Provider, auth: dict[str, Any], **sections: Any
) -> Iterator[tuple[NexusProcess, httpx.Client]]:
    """A nexus of its own in oidc mode, with more ``auth`` keys and settings sections."""
    settings = folder / "settings.yaml"
    oidc = {"issuer": provider.issuer, "audience": AUDIENCE}
    settings.write_text(json.dumps({"auth": {"mode": "oidc", "oidc": oidc, **auth}, **sections}))
    proc = NexusProcess(folder / "data", config=settings).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            yield proc, http
    finally:
        proc.stop()
        proc.kill_algorithms()


def test_a_caller_over_its_rate_is_429_while_another_is_not(
    tmp_path: Path, provider: Provider
) -> None:
    """auth.caller-rate: a bucket per caller (the crate's KeyedTokenBucket)."""
    auth = {
        "rules": [{"groups": ["team-a"], "algorithms": [A]}],
        "caller-rate": 0.01,  # one request per 100 s: no refill during the test
        "caller-burst": 3,
    }
    kid = provider.published[0]
    alice, bob = (bearer(provider.token(kid, sub=name)) for name in ("alice", "bob"))
    with oidc_nexus(tmp_path, provider, auth) as (proc, http):
        for _ in range(3):
            assert http.get(f"{API}/results/tags/limits", headers=alice).status_code == 200
        before = proc.row_counts()
        response = http.post(f"{API}/run/{A}", json={"algorithmParameters": {}}, headers=alice)
        assert_error(response, 429, "Too many requests: alice is over its limit")
        assert 1 <= int(response.headers["retry-after"]) <= 100
        assert proc.row_counts() == before, "a limited create writes nothing"
        # Another caller has its own bucket; a fresh token of alice does not refill hers.
        create(http, algorithm=A, headers=bob)
        again = bearer(provider.token(kid, sub="alice", iat=int(time.time()) + 1))
        assert_error(http.get(f"{API}/results/tags/limits", headers=again), 429, "alice")
        # Unauthenticated requests are 401, never counted against anyone.
        assert_error(http.get(f"{API}/results/tags/limits"), 401, "Authentication required")


def test_the_caller_is_the_tenant_when_configured(tmp_path: Path, provider: Provider) -> None:
    """tenants.tenant-by: caller: each caller's runs are served in its own share of the
    lane, whatever the template (the queue's wait metric is labelled by tenant)."""
    auth = {"rules": [{"groups": ["team-a"], "algorithms": [B]}]}
    tenants = {"buffer-config": {"tenants": {"tenant-by": "caller"}}}
    kid = provider.published[0]
    counts = {"alice": 2, "bob": 1}
    with oidc_nexus(tmp_path, provider, auth, **{"s3-buffer": tenants}) as (_, http):
        for name, runs in counts.items():
            for _ in range(runs):
                create(http, algorithm=B, headers=bearer(provider.token(kid, sub=name)))
        wait_for_metrics(http, launched_per_tenant(counts))
        assert f'tenant="{B}"' not in http.get("/metrics").text  # not the template's


def launched_per_tenant(counts: dict[str, int]) -> list[str]:
    """The /metrics lines saying that many runs of each tenant left the queue."""
    return [f'nexus_queue_wait_seconds_count{{tenant="{n}"}} {c}.0' for n, c in counts.items()]


def wait_for_metrics(http: httpx.Client, wanted: list[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not all(line in (text := http.get("/metrics").text) for line in wanted):
        assert time.monotonic() < deadline, (wanted, text[-3000:])
        time.sleep(0.1)
    return text


def listing(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = http.get(f"{API}/runs", params={"algorithm": B}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["runs"]


def test_a_run_recovered_after_a_crash_is_served_as_its_creator(
    tmp_path: Path, provider: Provider
) -> None:
    """The creating caller is stored with the run (created_by): runs accepted and not yet
    launched when the scheduler is killed are queued again, by the next one, each in its
    creator's share, not its template's. The listing says who created each run, and a
    resubmitted run is the resubmitting caller's."""
    auth = {"rules": [{"groups": ["team-a"], "algorithms": [B]}]}
    by_caller = {"tenants": {"tenant-by": "caller"}}
    held = {  # one launch (carol's run takes it), then none for a long while
        **by_caller,
        "rate-limit-elements-per-second": 0.001,
        "rate-limit-elements-burst": 1,
        "workers": 1,
    }
    kid = provider.published[0]
    alice, bob, carol = (bearer(provider.token(kid, sub=n)) for n in ("alice", "bob", "carol"))
    with oidc_nexus(tmp_path, provider, auth, **{"s3-buffer": {"buffer-config": held}}) as (
        first,
        http,
    ):
        create(http, algorithm=B, headers=carol)
        wait_for_metrics(http, launched_per_tenant({"carol": 1}))
        created = {
            "alice": [create(http, algorithm=B, headers=alice) for _ in range(2)],
            "bob": [create(http, algorithm=B, headers=bob)],
        }
        # None launched: one may wait in a worker for the rate limiter, the rest queued.
        stages = {run["requestId"]: run["stage"] for run in listing(http, alice)}
        assert all(stages[i] in {"NEW", "BUFFERED"} for ids in created.values() for i in ids)
        first.kill()

    with oidc_nexus(tmp_path, provider, auth, **{"s3-buffer": {"buffer-config": by_caller}}) as (
        _,
        http,
    ):
        text = wait_for_metrics(http, launched_per_tenant({"alice": 2, "bob": 1}))
        assert f'tenant="{B}"' not in text  # recovered as their creators', not the template's
        creators = {run["requestId"]: run["createdBy"] for run in listing(http, alice)}
        for name, ids in created.items():
            assert all(creators[run_id] == name for run_id in ids), (name, creators)

        original = created["alice"][0]
        with httpx.Client(base_url=http.base_url, headers=alice, timeout=30) as reader:
            wait_stage(reader, original, FINISHED, algorithm=B, timeout=60)
        again = http.post(f"{API}/resubmit/{B}/requests/{original}", headers=bob)
        assert again.status_code == 202, again.text
        meta = http.get(f"{API}/metadata/{B}/requests/{again.json()['requestId']}", headers=bob)
        assert meta.status_code == 200, meta.text
        assert meta.json()["created_by"] == "bob" and meta.json()["resubmitted_from"] == original
