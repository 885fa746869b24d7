"""``/openapi.json``: it lists exactly the routes each role serves, and a schemathesis fuzz
run driven by it finds no 5xx on a running nexus."""

from __future__ import annotations

import httpx
import pytest
from conftest import NexusProcess

from nexus.api.openapi import OPERATIONS, openapi_path, operation_key
from nexus.app import create_app
from nexus.settings import load_settings


def _routes(app) -> set[tuple[str, str]]:
    return {(openapi_path(route.path), method.lower())
            for route in app.router.routes for method in route.methods}


def _documented(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


@pytest.mark.parametrize("role", ["scheduler", "receiver", "all"])
def test_document_lists_exactly_the_routes_of_the_role(role: str) -> None:
    from nexus.api.openapi import build_document

    settings = load_settings(environ={}, executor="kubernetes")
    app = create_app(settings, role, name=f"openapi-{role}")
    document = build_document(app)
    assert _documented(document) == _routes(app)
    undocumented = [f"{m.upper()} {p}" for p, item in document["paths"].items()
                    for m, op in item.items() if op.get("x-undocumented")]
    assert undocumented == [], "describe these routes in nexus.api.openapi.OPERATIONS"
    assert document["openapi"].startswith("3.")
    for name in ("RunRequest", "RunCreated", "RequestResult", "TaggedRequestResult"):
        assert name in document["components"]["schemas"] or role == "receiver"


def test_every_described_operation_is_served_by_some_role() -> None:
    settings = load_settings(environ={}, executor="kubernetes")
    app = create_app(settings, "all", name="openapi-every")
    served = {operation_key(route.name) for route in app.router.routes}
    assert set(OPERATIONS) == served


def test_supervisor_serves_no_document() -> None:
    app = create_app(load_settings(environ={}, executor="kubernetes"), "supervisor",
                     name="openapi-supervisor")
    assert ("/openapi.json", "get") not in _routes(app)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> NexusProcess:
    proc = NexusProcess(tmp_path_factory.mktemp("openapi") / "data",
                        env={"NEXUS__MAX_WAIT": "2s"}).start()
    yield proc
    proc.stop()
    proc.kill_algorithms()  # local processes outlive a stopped nexus


def test_served_document_matches_the_live_routes(server: NexusProcess) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    settings = load_settings(environ={}, executor="kubernetes")
    assert _documented(document) == _routes(create_app(settings, "all", name="openapi-live"))
    # Every documented operation answers on the live server from a route, not the
    # router's "no such path"/"method not allowed" fallback.
    for path, item in document["paths"].items():
        url = server.url + path.replace("{algorithm}", "behave").replace(
            "{request_id}", "00000000-0000-4000-8000-000000000000").replace("{tag}", "t")
        for method in item:
            response = httpx.request(method.upper(), url, content=b"{}")
            assert response.status_code != 405, (method, path)
            assert "Requested URL" not in response.text, (method, path)


schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")


@pytest.mark.slow
def test_fuzz_finds_no_server_errors(server: NexusProcess) -> None:
    """Up to 30 generated requests per operation (schemathesis driven by hand: its pytest
    plugin does not work with this pytest), none answered with a 5xx."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.base_url = server.url
    failures: list[str] = []
    sent: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=30, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        def probe(case) -> None:
            response = case.call(timeout=30)
            sent.append(case.method)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} query={case.query} "
                                f"body={str(case.body)[:200]} -> {response.status_code} "
                                f"{response.text[:200]}")

        probe()
    assert failures == [], "\n".join(failures[:20])
    assert len(sent) > 5 * len(OPERATIONS)  # really generated requests for every operation
