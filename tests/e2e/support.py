"""Helpers shared by the e2e suites: calls of the v1 API and waits on a run's stage."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
TEST_TEMPLATES = REPO / "tests" / "e2e" / "templates"
API = "/algorithm/v1"
TERMINAL = {"COMPLETED", "FAILED", "SCHEDULING_FAILED", "DEADLINE_EXCEEDED", "CANCELLED"}
ZERO_TIME = "0001-01-01T00:00:00Z"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# SPEC §2 says uuid4; the scheduler now mints version 7 (time-ordered) ids: both are UUIDs.
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def create(
    client: httpx.Client,
    payload: dict[str, Any] | None = None,
    *,
    algorithm: str = "behave",
    dry_run: bool = False,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> str:
    """POST run/{algorithm}; assert the 202 and return the request id."""
    params = {"dryRun": "true"} if dry_run else None
    response = client.post(
        f"{API}/run/{algorithm}",
        params=params,
        headers=headers,
        json={"algorithmParameters": payload or {}, **body},
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    assert UUID.match(request_id), request_id
    return request_id


def result(
    client: httpx.Client, request_id: str, algorithm: str = "behave", wait: float | None = None
) -> dict[str, Any]:
    params = {"wait": str(wait)} if wait is not None else None
    response = client.get(
        f"{API}/results/{algorithm}/requests/{request_id}", params=params, timeout=(wait or 0) + 30
    )
    assert response.status_code == 200, response.text
    return response.json()


def metadata(client: httpx.Client, request_id: str, algorithm: str = "behave") -> dict[str, Any]:
    response = client.get(f"{API}/metadata/{algorithm}/requests/{request_id}")
    assert response.status_code == 200, response.text
    return response.json()


def history(client: httpx.Client, request_id: str, algorithm: str = "behave") -> list[Any]:
    """The run's stored history (GET runs/{algorithm}/requests/{id}/events)."""
    response = client.get(f"{API}/runs/{algorithm}/requests/{request_id}/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def wait_terminal(
    client: httpx.Client, request_id: str, algorithm: str = "behave", timeout: float = 45.0
) -> dict[str, Any]:
    """The RequestResult once the run is finished (long-polls the results route)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        body = result(client, request_id, algorithm, wait=max(min(remaining, 10.0), 0.1))
        if body["status"] in TERMINAL:
            return body
        if remaining <= 0:
            raise AssertionError(
                f"{algorithm}/{request_id} still {body['status']} after {timeout}s"
            )


def wait_stage(
    client: httpx.Client,
    request_id: str,
    stages: set[str] | str,
    algorithm: str = "behave",
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The checkpoint once its stage is one of ``stages``."""
    wanted = {stages} if isinstance(stages, str) else set(stages)
    deadline = time.monotonic() + timeout
    while True:
        body = metadata(client, request_id, algorithm)
        if body["lifecycle_stage"] in wanted:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{algorithm}/{request_id} is {body['lifecycle_stage']}, "
                f"expected one of {sorted(wanted)}"
            )
        time.sleep(0.05)


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """An error answer: the status, a plain-text body, and the fragments in its message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    message = response.text
    assert message.strip(), "an error body must say what was wrong"
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def cancel(
    client: httpx.Client,
    request_id: str,
    algorithm: str = "behave",
    policy: str | None = None,
    reason: str = "test",
    initiator: str = "pytest",
) -> httpx.Response:
    body: dict[str, Any] = {"reason": reason, "initiator": initiator}
    if policy is not None:
        body["cancellationPolicy"] = policy
    return client.post(f"{API}/cancel/{algorithm}/requests/{request_id}", json=body)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"  # a zombie is dead
    except (FileNotFoundError, ProcessLookupError, IndexError):  # ESRCH: reaped after open
        return False
