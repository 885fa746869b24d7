"""Completion webhooks end to end: a real nexus process, the test algorithm, and a real
HTTP receiver on loopback that the test starts, stops and starts again
(docs/webhooks.md); the deliveries' state kept in the embedded SQLite store and in the
real Cassandra."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.support import API, create, metadata, wait_terminal

SECRET = "e2e-webhook-secret-0123456789"
FAST_RETRIES = {
    "NEXUS__WEBHOOKS__SECRET": SECRET,
    "NEXUS__WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.0/8",
    "NEXUS__WEBHOOKS__RETRY_BASE": "200ms",
    "NEXUS__WEBHOOKS__RETRY_MAX": "1s",
    "NEXUS__WEBHOOKS__TIMEOUT": "2s",
    "NEXUS__WEBHOOKS__SWEEP_INTERVAL": "200ms",
}


class Receiver:
    """An HTTP server that records every POST it gets; ``start``/``stop`` at will, on one
    port, so a "receiver down for a while" is a closed port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/done"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None: ...

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait(self, count: int, timeout: float = 30.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} webhooks came"
            time.sleep(0.05)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    yield hooks
    hooks.stop()


def verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The body, once its signature checks out as a receiver would check it."""
    digest = hmac.new(
        SECRET.encode(), headers["x-nexus-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["x-nexus-signature"], f"sha256={digest}")
    return json.loads(body)


def wait_callback(client: httpx.Client, run_id: str, check, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = metadata(client, run_id).get("callback_state", {})
        if check(state):
            return state
        assert time.monotonic() < deadline, f"callback_state of {run_id}: {state}"
        time.sleep(0.1)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)]
)
def store_env(request) -> Iterator[dict[str, str]]:
    """The run store the webhooks' state lives in: embedded SQLite, or the test Cassandra
    (a keyspace of this module's own)."""
    if request.param == "sqlite":
        yield {}
        return
    from contract.servers import cassandra_settings_env, drop_keyspace, unique

    keyspace = unique("nexus_hooks_")
    try:
        yield cassandra_settings_env(keyspace)
    finally:
        drop_keyspace(keyspace)


def test_a_finished_run_is_posted_to_its_callback_signed(nexus_factory, receiver, store_env):
    receiver.start()
    nexus = nexus_factory(env={**FAST_RETRIES, **store_env})
    with httpx.Client(base_url=nexus.url, timeout=30) as client:
        ok = create(client, {"n": 1}, callbackUrl=receiver.url)
        failed = create(client, {"error": "bad input rows"}, callbackUrl=receiver.url)
        plain = create(client, {"n": 2})
        for run_id in (ok, failed, plain):
            wait_terminal(client, run_id)
        bodies = {b["requestId"]: b for b in (verified(*hook) for hook in receiver.wait(2))}
        assert set(bodies) == {ok, failed}
        assert bodies[ok]["status"] == "COMPLETED" and bodies[ok]["resultUri"]
        assert bodies[failed]["status"] == "FAILED"
        assert bodies[failed]["runErrorMessage"] == "bad input rows"
        assert bodies[ok]["algorithmName"] == "behave"
        state = wait_callback(client, ok, lambda s: s.get("delivered_at"))
        assert state["attempts"] == 1 and state["last_status"] == 204
        assert metadata(client, ok)["callback_url"] == receiver.url
        assert "callback_url" not in metadata(client, plain)
        time.sleep(1.0)  # several sweeps: a delivered webhook is never sent again
        assert len(receiver.received) == 2


def test_a_receiver_down_for_a_while_gets_it_once_back_even_across_a_restart(
    nexus_factory, receiver, tmp_path, store_env
):
    """The receiver's port is closed: attempts fail and back off (visible in the run's
    metadata). nexus is killed (-9) with the webhook pending and started again on the same
    data; then the receiver comes up and gets the notification, once."""
    data = tmp_path / "data"
    nexus = nexus_factory(env={**FAST_RETRIES, **store_env}, data_dir=data)
    with httpx.Client(base_url=nexus.url, timeout=30) as client:
        run_id = create(client, {"n": 1}, callbackUrl=receiver.url)
        assert wait_terminal(client, run_id)["status"] == "COMPLETED"
        state = wait_callback(client, run_id, lambda s: s.get("attempts", 0) >= 2)
        assert state["last_status"] == 0 and state["last_error"] and not state.get("gave_up")
    nexus.kill()
    nexus = nexus_factory(env={**FAST_RETRIES, **store_env}, data_dir=data, port=nexus.port)
    receiver.start()
    # An attempt the kill cut short keeps its claim for webhooks.timeout + 30 s (2 + 30
    # here) before the new process may make the next one: wait longer than that.
    (headers, body), *_ = receiver.wait(1, timeout=90)
    assert verified(headers, body)["requestId"] == run_id
    assert headers["x-nexus-delivery"] == f"behave/{run_id}"
    with httpx.Client(base_url=nexus.url, timeout=30) as client:
        state = wait_callback(client, run_id, lambda s: s.get("delivered_at"))
        assert state["attempts"] >= 2
        time.sleep(1.0)
        assert len(receiver.received) == 1
        # The attempts' outcomes are in the run's history, the delivery last (an attempt
        # the kill cut short has none: its claim just expired).
        events = client.get(f"{API}/runs/behave/requests/{run_id}/events").json()["events"]
        hooks = [event["cause"] for event in events if event["kind"] == "webhook"]
        assert 2 <= len(hooks) <= state["attempts"], hooks
        assert hooks[-1] == f"attempt {state['attempts']}: delivered (HTTP 204)"
        assert all("delivered" not in cause for cause in hooks[:-1])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",  # loopback: not in allowed-networks here
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/x",
        "file:///etc/passwd",
        "https://user:secret@example.com/x",
        "https://" + "a" * 3000 + ".example/x",
        "not a url",
    ],
)
def test_a_callback_url_that_may_not_be_called_is_a_400_and_writes_nothing(server, api, url):
    before = server.written()
    response = api.post(f"{API}/run/behave", json={"algorithmParameters": {}, "callbackUrl": url})
    assert response.status_code == 400, response.text
    assert "callbackUrl" in response.text
    assert server.written() == before


def test_a_callback_url_of_the_wrong_type_is_a_400(api):
    response = api.post(f"{API}/run/behave", json={"algorithmParameters": {}, "callbackUrl": 7})
    assert response.status_code == 400 and "callbackUrl" in response.text, response.text
