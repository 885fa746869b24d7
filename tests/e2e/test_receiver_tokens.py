"""``auth.receiver-tokens: true`` on embedded defaults: a run reports only with its token.

The behave algorithm sends the token its Job's env carries
($NEXUS__CLIENT__RECEIVER_ACCESS_TOKEN) as ``Authorization: Bearer``, as the official
SDK's receiver client sends the token of its token provider; the test knows the
deployment's secret, so it can mint the token of any run, and of none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import NexusProcess, walk_routes
from support import API, assert_error, create, metadata, wait_stage, wait_terminal

from nexus.core.signing import RUN_TOKEN_HEADER, RunTokens

SECRET = "e2e-receiver-token-secret-0123456789"
TOKENS = RunTokens(SECRET.encode())
RESULT = {"resultUri": "https://example.com/forged"}
KEPT = ("lifecycle_stage", "result_uri", "algorithm_failure_cause", "last_modified")


@pytest.fixture(scope="module")
def server(module_nexus_factory) -> NexusProcess:
    return module_nexus_factory(
        env={
            "NEXUS__AUTH__RECEIVER_TOKENS": "true",
            "NEXUS__AUTH__RECEIVER_TOKEN_SECRET": SECRET,
        }
    )


def complete(api: httpx.Client, run_id: str, headers: dict[str, str]) -> httpx.Response:
    return api.post(f"{API}/complete/behave/requests/{run_id}", json=RESULT, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_run_completes_with_its_own_token_and_checks_as_the_sdk_does(
    api: httpx.Client, server: NexusProcess
) -> None:
    """behave reports, then asks check/ as the SDK does: both with its token."""
    run_id = create(api, {"n": 1, "check": True})
    body = wait_terminal(api, run_id)
    assert body["status"] == "COMPLETED", body
    assert run_id in metadata(api, run_id)["result_uri"], "behave's own result"
    checked = server.data_dir / "behave" / f"{run_id}.checked"
    deadline = time.monotonic() + 30
    while not checked.exists():  # written just after the report
        assert time.monotonic() < deadline, "behave never checked its run"
        time.sleep(0.05)
    assert checked.read_text() == "True"


@pytest.fixture
def sleeping(api: httpx.Client, server: NexusProcess) -> Iterator[str]:
    """A run that is RUNNING and will not report for a while."""
    run_id = create(api, {"sleep": 25})
    wait_stage(api, run_id, "RUNNING")
    yield run_id
    server.kill_algorithms()


@pytest.mark.parametrize(
    ("headers", "status", "fragment"),
    [
        ({}, 401, "Authentication required"),
        (bearer(TOKENS.issue("behave", str(uuid.uuid4()), 600)), 403, "not the run token of"),
        ({RUN_TOKEN_HEADER: TOKENS.issue("noop", "x", 600)}, 403, "not the run token of"),
        (bearer("nxr1.garbage"), 401, "not a nexus run token"),
        (bearer("A" * 5000), 401, "not a nexus run token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "'Basic' is not accepted"),
        (bearer(RunTokens(b"someone-elses-secret!").issue("behave", "x", 60)), 403, "not the"),
    ],
    ids=["none", "another-run", "another-algorithm", "malformed", "oversized", "basic", "forged"],
)
def test_a_report_without_the_runs_token_is_refused_and_changes_nothing(
    api: httpx.Client, sleeping: str, headers: dict[str, str], status: int, fragment: str
) -> None:
    before = {key: metadata(api, sleeping)[key] for key in KEPT}
    response = complete(api, sleeping, headers)
    message = assert_error(response, status, fragment)
    for value in headers.values():
        assert value.split()[-1] not in message, "the token is never echoed"
    if status == 401:
        assert response.headers["www-authenticate"].startswith('Bearer realm="nexus"')
    check = api.get(f"{API}/check/behave/requests/{sleeping}", headers=headers)
    assert_error(check, status, fragment)
    after = {key: metadata(api, sleeping)[key] for key in KEPT}
    assert after["lifecycle_stage"] == "RUNNING" and after == before


def test_an_expired_token_of_the_run_is_401(api: httpx.Client, sleeping: str) -> None:
    expired = TOKENS.issue("behave", sleeping, -1)
    response = complete(api, sleeping, bearer(expired))
    assert_error(response, 401, "it has expired")
    assert metadata(api, sleeping)["lifecycle_stage"] == "RUNNING"


def test_the_runs_token_in_the_dedicated_header_completes_it(
    api: httpx.Client, sleeping: str
) -> None:
    """The header wins over an Authorization a proxy or mesh may set."""
    headers = {RUN_TOKEN_HEADER: TOKENS.issue("behave", sleeping, 600), **bearer("mesh")}
    assert complete(api, sleeping, headers).status_code == 202
    assert metadata(api, sleeping)["lifecycle_stage"] == "COMPLETED"
    checked = api.get(f"{API}/check/behave/requests/{sleeping}", headers=headers)
    assert checked.status_code == 200 and checked.json() == {"is_processed": True}


def test_an_unknown_run_is_refused_before_it_is_looked_up(api: httpx.Client) -> None:
    """Without the run's token nobody learns whether a run exists (401, not 404)."""
    unknown = str(uuid.uuid4())
    assert_error(complete(api, unknown, {}), 401, "Authentication required")
    own = TOKENS.issue("behave", unknown, 600)
    assert_error(complete(api, unknown, bearer(own)), 404, "not found")


def test_every_route_without_credentials(server: NexusProcess) -> None:
    seen = walk_routes(server.url, enforced=False, receiver_tokens=True)
    assert seen["POST /algorithm/v1/complete/{algorithm}/requests/{request_id}"] == 401


def test_a_short_secret_stops_the_start(tmp_path) -> None:
    proc = NexusProcess(tmp_path / "data", env={"NEXUS__AUTH__RECEIVER_TOKEN_SECRET": "short"})
    with pytest.raises(RuntimeError, match=r"auth\.receiver-token-secret"):
        proc.start(timeout=30)


def test_a_receiver_alone_without_a_shared_secret_warns(tmp_path) -> None:
    """Its random key would be its own: a scheduler elsewhere signs with another one."""
    env = {"NEXUS__AUTH__RECEIVER_TOKENS": "true", "NEXUS__LOG_FORMAT": "text"}
    proc = NexusProcess(tmp_path / "data", role="receiver", env=env).start()
    try:
        assert "without auth.receiver-token-secret" in proc.log()
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            assert_error(complete(http, str(uuid.uuid4()), {}), 401, "Authentication required")
    finally:
        proc.stop()
    shared = NexusProcess(
        tmp_path / "shared",
        role="receiver",
        env={**env, "NEXUS__AUTH__RECEIVER_TOKEN_SECRET": SECRET},
    ).start()
    try:
        assert "without auth.receiver-token-secret" not in shared.log()
    finally:
        shared.stop()
