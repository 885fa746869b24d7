"""``auth.mode: kubernetes`` against the real test API server (scripts/testenv kube).

nexus runs as a real process on the embedded store, template folder and local executor,
and checks its callers with the test cluster (kube-config-path: the admin kubeconfig):
a TokenReview for the bearer token, a SubjectAccessReview of the verb on
``nexusalgorithmtemplates/runs`` named by the algorithm in the test's namespace. The
test makes ServiceAccounts with ordinary Roles and gets their tokens from the
TokenRequest API; forged tokens are signed with a key of its own and with the test
cluster's own service-account key (``pki/sa.key`` next to the kubeconfig).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from conftest import free_port, walk_routes
from control_plane import Kube, require_kubeconfig, wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = pytest.mark.kube

V1 = "/algorithm/v1"
A, B = "behave", "noop"  # two templates of tests/e2e/templates
CACHE_TTL = 3.0
RUNS = "nexusalgorithmtemplates/runs"


@pytest.fixture(scope="module")
def kube() -> Iterator[Kube]:
    client = Kube(require_kubeconfig())
    yield client
    client.close()


@pytest.fixture(scope="module")
def namespace(kube: Kube) -> Iterator[str]:
    name = kube.create_namespace(f"nexus-auth-{uuid.uuid4().hex[:8]}")
    yield name
    kube.delete_namespace(name)


def service_account(kube: Kube, namespace: str, name: str, names: list[str] | None) -> str:
    """A ServiceAccount bound to a Role allowing create and get on the runs of the
    templates ``names`` (every template when None); its token, from TokenRequest."""
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    kube.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    rule: dict[str, Any] = {
        "apiGroups": ["science.sneaksanddata.com"],
        "resources": [RUNS],
        "verbs": ["create", "get"],
    }
    if names is not None:
        rule["resourceNames"] = names
    kube.call(
        "POST",
        f"{base}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [rule],
        },
    )
    kube.call(
        "POST",
        f"{base}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    return token_of(kube, namespace, name)


def token_of(kube: Kube, namespace: str, name: str) -> str:
    answer = kube.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    return answer["status"]["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def resigned(token: str, key: Any, **changes: Any) -> str:
    """The claims and key id of a real token, changed and signed with ``key`` (ES256)."""
    header = jwt.get_unverified_header(token)
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": header.get("kid")})


def cluster_signing_key(kubeconfig: str) -> Any:
    path = Path(kubeconfig).parent / "pki" / "sa.key"
    assert path.is_file(), f"the test cluster's service-account key is not at {path}"
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


@pytest.fixture(scope="module")
def nexus(module_nexus_factory, namespace: str, kube: Kube):
    return module_nexus_factory(
        env={
            "NEXUS__AUTH__MODE": "kubernetes",
            "NEXUS__AUTH__NAMESPACE": namespace,
            "NEXUS__AUTH__CACHE_TTL": f"{CACHE_TTL}s",
            "NEXUS__AUTH__RECEIVER_TOKENS": "true",
            "NEXUS__KUBE_CONFIG_PATH": require_kubeconfig(),
        }
    )


@pytest.fixture(scope="module")
def api(nexus) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def team_a(kube: Kube, namespace: str) -> str:
    return service_account(kube, namespace, "team-a", [A])


def create(api: httpx.Client, algorithm: str, token: str, **body: Any) -> httpx.Response:
    return api.post(
        f"{V1}/run/{algorithm}",
        json={"algorithmParameters": {"n": 1}, **body},
        headers=bearer(token),
    )


def refused(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    for fragment in fragments:
        assert fragment in response.text, (fragment, response.text)
    return response.text


def test_a_role_for_template_a_allows_its_runs_and_refuses_b(
    api: httpx.Client, team_a: str, namespace: str
) -> None:
    response = create(api, A, team_a)
    assert response.status_code == 202, response.text
    run_id = response.json()["requestId"]
    for route in ("results", "metadata", "buffer"):
        answer = api.get(f"{V1}/{route}/{A}/requests/{run_id}", headers=bearer(team_a))
        assert answer.status_code == 200, (route, answer.text)
    who = f"system:serviceaccount:{namespace}:team-a"
    refused(
        create(api, B, team_a), 403, f"Forbidden: {who} may not create runs of algorithm 'noop'"
    )
    refused(
        api.get(f"{V1}/results/{B}/requests/{run_id}", headers=bearer(team_a)),
        403,
        f"{who} may not get runs of algorithm 'noop'",
    )
    # The Role grants create and get, not delete (cancel) nor update (tags).
    refused(
        api.post(f"{V1}/cancel/{A}/requests/{run_id}", json={}, headers=bearer(team_a)),
        403,
        "may not delete runs of algorithm 'behave'",
    )
    refused(
        api.post(
            f"{V1}/metadata/tags/{A}/requests/{run_id}",
            json={"newTag": "x"},
            headers=bearer(team_a),
        ),
        403,
        "may not update runs",
    )


def test_the_tag_lookup_lists_only_runs_the_caller_may_read(
    api: httpx.Client, team_a: str, kube: Kube, namespace: str
) -> None:
    everything = service_account(kube, namespace, "all-templates", None)
    tag = f"t-{uuid.uuid4().hex[:10]}"
    ids = {}
    for algorithm in (A, B):
        response = create(api, algorithm, everything, tag=tag)
        assert response.status_code == 202, response.text
        ids[algorithm] = response.json()["requestId"]

    def listed(token: str) -> set[str]:
        response = api.get(f"{V1}/results/tags/{tag}", headers=bearer(token))
        assert response.status_code == 200, response.text
        return {run["requestId"] for run in response.json()}

    assert listed(everything) == set(ids.values())
    assert listed(team_a) == {ids[A]}


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="nexus"'),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 'Bearer realm="nexus"'),
        ({"Authorization": "Bearer not-a-token"}, 'Bearer realm="nexus", error="invalid_token"'),
    ],
    ids=["no-token", "basic", "garbage"],
)
def test_no_or_a_garbage_token_is_401_with_a_challenge(
    api: httpx.Client, headers: dict[str, str], challenge: str
) -> None:
    response = api.post(f"{V1}/run/{A}", json={"algorithmParameters": {}}, headers=headers)
    refused(response, 401)
    assert response.headers["www-authenticate"] == challenge
    assert "not-a-token" not in response.text and "YWRtaW46" not in response.text


def test_a_token_of_another_signer_is_401(api: httpx.Client, team_a: str) -> None:
    """A token shaped like the cluster's, signed by another key: another API server."""
    forged = resigned(team_a, ec.generate_private_key(ec.SECP256R1()))
    refused(create(api, A, forged), 401, "Invalid bearer token")


def test_an_expired_token_signed_by_the_cluster_itself_is_401(
    api: httpx.Client, team_a: str
) -> None:
    key = cluster_signing_key(require_kubeconfig())
    now = int(time.time())
    # The same claims freshly re-signed are accepted: the key and claims are right ...
    fresh = resigned(team_a, key, iat=now, nbf=now, exp=now + 600)
    assert create(api, A, fresh).status_code == 202
    # ... so an expired one is refused for its expiry alone.
    expired = resigned(team_a, key, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    refused(create(api, A, expired), 401, "Invalid bearer token")


def test_an_identity_is_checked_again_once_the_cache_expires(
    api: httpx.Client, kube: Kube, namespace: str
) -> None:
    token = service_account(kube, namespace, "short-lived", [A])
    sent = time.monotonic()
    assert create(api, A, token).status_code == 202
    kube.call("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/short-lived")
    response = create(api, A, token)
    if time.monotonic() - sent < CACHE_TTL:  # surely within the cached answer's life
        assert response.status_code == 202, response.text
    # The API server no longer accepts the token; nexus notices within the cache's TTL.
    wait_for(
        lambda: create(api, A, token).status_code == 401,
        CACHE_TTL + 60,
        "the deleted ServiceAccount's token to be refused",
    )


def test_every_route_without_credentials(nexus) -> None:
    walk_routes(nexus.url, enforced=True, receiver_tokens=True)


def nexus_with_kubeconfig(factory, namespace: str, path: Path, change) -> Any:
    """A nexus in kubernetes mode whose own kubeconfig is the test's, changed by
    ``change(config)`` and written to ``path``."""
    config = yaml.safe_load(Path(require_kubeconfig()).read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    return factory(
        env={
            "NEXUS__AUTH__MODE": "kubernetes",
            "NEXUS__AUTH__NAMESPACE": namespace,
            "NEXUS__KUBE_CONFIG_PATH": str(path),
        }
    )


def test_an_unreachable_api_server_is_503_never_a_pass(
    module_nexus_factory, team_a: str, namespace: str, tmp_path: Path
) -> None:
    def close(config: dict) -> None:
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens

    nexus = nexus_with_kubeconfig(
        module_nexus_factory, namespace, tmp_path / "closed.kubeconfig", close
    )
    response = httpx.post(
        f"{nexus.url}{V1}/run/{A}",
        json={"algorithmParameters": {}},
        headers=bearer(team_a),
        timeout=60,
    )
    refused(response, 503, "did not answer")
    assert response.headers["retry-after"] == "1"
    assert team_a not in response.text
    assert httpx.get(f"{nexus.url}/health/live", timeout=30).status_code == 200


def test_nexus_not_allowed_to_ask_is_503_naming_the_review(
    module_nexus_factory, team_a: str, namespace: str, tmp_path: Path
) -> None:
    """nexus's own identity without create on tokenreviews (here: team-a's token, whose
    Role grants only runs) refuses every caller, saying why."""

    def weaken(config: dict) -> None:
        for user in config["users"]:
            user["user"] = {"token": team_a}

    nexus = nexus_with_kubeconfig(
        module_nexus_factory, namespace, tmp_path / "weak.kubeconfig", weaken
    )
    response = httpx.get(f"{nexus.url}{V1}/results/tags/t", headers=bearer(team_a), timeout=60)
    refused(response, 503, "refused a TokenReview (403")
    assert team_a not in response.text
