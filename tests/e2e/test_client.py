"""The Python client against a running nexus on embedded defaults (one per module), plus
its retry and error mapping against a scripted transport where a real server cannot be
made to answer that way on demand (429, 500, 401, 417)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from conftest import NexusProcess, free_port

from nexus_run_client import (
    AsyncNexusClient,
    BadRequest,
    Conflict,
    NexusClient,
    NexusClientError,
    NoPayload,
    NotFound,
    ParentRequest,
    PayloadTooLarge,
    QueueFull,
    RetryPolicy,
    RunResult,
    ServerError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)

ALG = "behave"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> NexusProcess:
    proc = NexusProcess(
        tmp_path_factory.mktemp("client") / "data",
        env={"NEXUS__MAX_PAYLOAD_SIZE": "256Ki", "NEXUS__LOG_LEVEL": "DEBUG"},
    ).start()
    yield proc
    proc.stop()
    proc.kill_algorithms()  # local processes outlive a stopped nexus


@pytest.fixture
def nexus(server: NexusProcess) -> NexusClient:
    with NexusClient(server.url, token="secret") as client:
        yield client


def unique_tag() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# --- the happy paths, every endpoint -------------------------------------------------


def test_create_await_and_read_back(nexus: NexusClient, server: NexusProcess) -> None:
    tag = unique_tag()
    run_id = nexus.create_run(
        ALG, {"sleep": 0.2, "n": 1}, tag=tag, payload_valid_for="90m", request_api_version="1.2"
    )
    first = nexus.get_run(ALG, run_id)
    assert first.request_id == run_id and first.status in {
        "NEW",
        "BUFFERED",
        "RUNNING",
        "COMPLETED",
    }
    result = nexus.await_run(ALG, run_id, timeout=30)
    assert result.succeeded and result.finished and not result.failed
    assert httpx.get(result.result_uri).json()["echo"] == {"sleep": 0.2, "n": 1}

    meta = nexus.get_metadata(ALG, run_id)
    assert meta["lifecycle_stage"] == "COMPLETED" and meta["tag"] == tag
    assert meta["payload_valid_for"] == "90m" and meta["api_version"] == "1.2"
    job = nexus.get_buffered_job(ALG, run_id)
    assert job["kind"] == "Job" and job["metadata"]["name"] == run_id
    payload_url = nexus.get_payload_url(ALG, run_id)
    assert payload_url.startswith(server.url) and httpx.get(payload_url).json()["n"] == 1
    assert nexus.check_run(ALG, run_id) is True

    tagged = nexus.runs_by_tag(tag)
    assert [(r.request_id, r.algorithm_name, r.status) for r in tagged] == [
        (run_id, ALG, "COMPLETED")
    ]
    new_tag = unique_tag()
    nexus.update_tag(ALG, run_id, new_tag)
    assert nexus.runs_by_tag(tag) == [] and nexus.runs_by_tag(new_tag)[0].request_id == run_id


@pytest.mark.parametrize(
    "text",
    ["ünïcødé-✓", "🚀 launch", "a/b", "a?b#c", "100%", "%2F", "..", "."],
    ids=["accents", "emoji", "slash", "query-hash", "percent", "encoded", "dots", "dot"],
)
def test_runs_by_a_tag_that_needs_percent_encoding(nexus: NexusClient, text: str) -> None:
    """The client percent-encodes the tag as one path segment; the server decodes it."""
    tag = text if text.strip(".") == "" else f"{text}-{uuid.uuid4().hex[:8]}"
    run_id = nexus.create_run(ALG, {}, tag=tag, dry_run=True)
    assert run_id in [r.request_id for r in nexus.runs_by_tag(tag)]
    new_tag = f"re {text} ✓"
    nexus.update_tag(ALG, run_id, new_tag)
    assert run_id in [r.request_id for r in nexus.runs_by_tag(new_tag)]
    assert nexus.get_metadata(ALG, run_id)["tag"] == new_tag
    nexus.await_run(ALG, run_id, timeout=15)


def test_a_tag_with_a_control_character_is_a_bad_request(nexus: NexusClient) -> None:
    with pytest.raises(BadRequest, match="printable Unicode"):
        nexus.create_run(ALG, {}, tag="bell\x07", dry_run=True)


def test_bytes_payload_custom_configuration_and_dry_run(nexus: NexusClient) -> None:
    run_id = nexus.create_run(
        ALG,
        b'{"raw": true}',
        dry_run=True,
        custom_configuration={"runtimeEnvironment": {"deadlineSeconds": 7}},
    )
    result = nexus.await_run(ALG, run_id, timeout=15)
    assert result.status == "COMPLETED"
    meta = nexus.get_metadata(ALG, run_id)
    assert meta["job_uid"] == "dry-run"
    assert meta["configuration_overrides"]["runtimeEnvironment"]["deadlineSeconds"] == 7
    assert meta["applied_configuration"]["runtimeEnvironment"]["deadlineSeconds"] == 7


def test_idempotency_key_returns_the_first_run(nexus: NexusClient) -> None:
    key = uuid.uuid4().hex
    first = nexus.create_run(ALG, {"n": 1}, idempotency_key=key, dry_run=True)
    assert nexus.create_run(ALG, {"n": 2}, idempotency_key=key, dry_run=True) == first
    assert nexus.create_run(ALG, {"n": 3}, dry_run=True) != first


def test_cancel_parent_cancels_child(nexus: NexusClient) -> None:
    parent = nexus.create_run(ALG, {"sleep": 30})
    child = nexus.create_run(ALG, {"sleep": 30}, parent=(ALG, parent))
    other = nexus.create_run(
        ALG, {"sleep": 30}, parent=ParentRequest(request_id=parent, algorithm_name=ALG)
    )
    nexus.cancel_run(ALG, parent, reason="test", initiator="pytest", policy="Foreground")
    for run_id in (parent, child, other):
        result = nexus.await_run(ALG, run_id, timeout=15)
        assert result.status == "CANCELLED" and result.failed
    assert "pytest" in nexus.get_run(ALG, parent).run_error_message


def test_receiver_complete_and_check(nexus: NexusClient) -> None:
    run_id = nexus.create_run(ALG, {"sleep": 30})
    assert nexus.check_run(ALG, run_id) is False
    nexus.complete_run(ALG, run_id, result_uri="", error_cause="gave up", error_details="why")
    assert nexus.check_run(ALG, run_id) is True
    result = nexus.get_run(ALG, run_id)
    assert (result.status, result.run_error_message) == ("FAILED", "gave up")
    nexus.complete_run(ALG, run_id, result_uri="s3://late")  # first result wins, still 202
    assert nexus.get_run(ALG, run_id).status == "FAILED"


def test_long_poll_returns_as_soon_as_the_run_finishes(nexus: NexusClient) -> None:
    run_id = nexus.create_run(ALG, {"sleep": 1})
    started = time.monotonic()
    result = nexus.get_run(ALG, run_id, wait=20)
    assert result.finished and time.monotonic() - started < 15


# --- every error path against the real server ----------------------------------------


def test_unknown_template_is_bad_request_with_the_servers_message(nexus: NexusClient) -> None:
    with pytest.raises(BadRequest) as caught:
        nexus.create_run("no-such-algorithm", {"a": 1})
    assert caught.value.status == 400 and "no-such-algorithm" in caught.value.message
    assert isinstance(caught.value, NexusClientError)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"payload_valid_for": "forever"}, "payloadValidFor"),
        ({"parent": (ALG, UNKNOWN)}, "does not exist"),
    ],
)
def test_bad_requests(nexus: NexusClient, kwargs, words) -> None:
    with pytest.raises(BadRequest, match=words):
        nexus.create_run(ALG, {"a": 1}, **kwargs)


def test_payload_that_is_not_an_object_is_refused(nexus: NexusClient) -> None:
    with pytest.raises(BadRequest, match="algorithmParameters must be a JSON object"):
        nexus.create_run(ALG, b"[1, 2]")
    with pytest.raises(BadRequest, match="mapping or the bytes"):
        nexus.create_run(ALG, [1, 2])  # type: ignore[arg-type]


def test_oversized_body_is_payload_too_large(nexus: NexusClient) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        nexus.create_run(ALG, {"blob": "x" * (512 * 1024)})
    assert caught.value.status == 413 and "max-payload-size" in caught.value.message


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_run(ALG, UNKNOWN),
        lambda c: c.get_run(ALG, UNKNOWN, wait=1),
        lambda c: c.get_metadata(ALG, UNKNOWN),
        lambda c: c.get_buffered_job(ALG, UNKNOWN),
        lambda c: c.get_payload_url(ALG, UNKNOWN),
        lambda c: c.cancel_run(ALG, UNKNOWN),
        lambda c: c.update_tag(ALG, UNKNOWN, "x"),
        lambda c: c.complete_run(ALG, UNKNOWN, result_uri="s3://x"),
        lambda c: c.check_run(ALG, UNKNOWN),
        lambda c: c.await_run(ALG, UNKNOWN, timeout=5),
        lambda c: c.get_run(ALG, "../../etc/passwd"),
    ],
    ids=[
        "get",
        "get-wait",
        "metadata",
        "buffer",
        "payload",
        "cancel",
        "tag",
        "complete",
        "check",
        "await",
        "hostile-id",
    ],
)
def test_unknown_run_is_not_found(nexus: NexusClient, call) -> None:
    with pytest.raises(NotFound) as caught:
        call(nexus)
    assert caught.value.status == 404 and caught.value.message


def test_cancel_finished_run_is_conflict(nexus: NexusClient) -> None:
    run_id = nexus.create_run(ALG, {}, dry_run=True)
    nexus.await_run(ALG, run_id, timeout=15)
    with pytest.raises(Conflict, match="already finished"):
        nexus.cancel_run(ALG, run_id)
    with pytest.raises(ValueError):
        nexus.cancel_run(ALG, run_id, policy="Sideways")


def test_await_timeout_carries_the_last_result(nexus: NexusClient) -> None:
    run_id = nexus.create_run(ALG, {"sleep": 30})
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        nexus.await_run(ALG, run_id, timeout=1.5)
    assert 1.0 < time.monotonic() - started < 10
    assert isinstance(caught.value.last_result, RunResult)
    assert not caught.value.last_result.finished and caught.value.status is None
    nexus.cancel_run(ALG, run_id)


def test_unreachable_server_is_unavailable_after_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with NexusClient(url, retry=RetryPolicy(attempts=3, base_delay=0.05)) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            client.get_run(ALG, UNKNOWN)
    assert caught.value.status is None and "Cannot reach" in caught.value.message
    assert time.monotonic() - started < 5


# --- what operators see of those calls: request ids, JSON logs, metrics ---------------


def test_request_id_is_echoed_and_on_the_servers_json_log_lines(nexus, server) -> None:
    response = httpx.get(
        f"{server.url}/algorithm/v1/results/{ALG}/requests/{UNKNOWN}",
        headers={"X-Request-ID": "trace-4711"},
    )
    assert response.status_code == 404 and response.headers["x-request-id"] == "trace-4711"
    generated = httpx.get(f"{server.url}/health/live").headers["x-request-id"]
    assert len(generated) == 32
    hostile = httpx.get(f"{server.url}/health/live", headers={"X-Request-ID": 'a b"{}'})
    assert hostile.headers["x-request-id"] != 'a b"{}'
    deadline = time.monotonic() + 5
    while "trace-4711" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    traced = [entry for entry in lines if entry.get("request_id") == "trace-4711"]
    assert traced and traced[0]["logger"] == "nexus.access" and "404" in traced[0]["message"]


def test_text_log_format_carries_the_request_id_too() -> None:
    import io
    import logging

    from nexus import logs

    stream = io.StringIO()
    handler = logs.make_handler("text", stream)
    logger = logging.getLogger("nexus.test-text-format")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = logs.request_id.set("req-1")
        logger.warning("inside %s", "a request")
        logs.request_id.reset(token)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("WARNING nexus.test-text-format inside a request request_id=req-1")
    assert outside.endswith("outside") and "request_id" not in outside


def test_metrics_count_launches_by_shard_and_durations_by_final_stage(nexus, server) -> None:
    nexus.await_run(ALG, nexus.create_run(ALG, {}), timeout=30)
    failed = nexus.create_run(ALG, {"error": "nope"})
    nexus.await_run(ALG, failed, timeout=30)
    text = httpx.get(f"{server.url}/metrics").text
    for expected in (
        'nexus_job_launches_total{shard="local"}',
        'nexus_run_duration_seconds_bucket{le="+Inf",stage="COMPLETED"}',
        'nexus_run_duration_seconds_count{stage="FAILED"}',
        'nexus_runs_finished_total{stage="FAILED"}',
        "nexus_queue_depth ",
        (
            'nexus_http_requests_total{code="202",method="POST",'
            'route="/algorithm/v1/run/{algorithm}"}'
        ),
    ):
        assert expected in text, expected


# --- async client --------------------------------------------------------------------


async def test_async_client_end_to_end(server: NexusProcess) -> None:
    tag = unique_tag()
    async with AsyncNexusClient(server.url, token=lambda: "fresh") as client:
        ids = await asyncio.gather(
            *(client.create_run(ALG, {"sleep": 0.3, "i": i}, tag=tag) for i in range(4))
        )
        failing = await client.create_run(ALG, {"error": "bad input"}, tag=tag)
        seen: list[int] = []
        outcomes = await client.await_runs(
            [(ALG, i) for i in [*ids, failing, UNKNOWN]],
            timeout=60,
            on_result=lambda i, o: seen.append(i),
        )
        assert sorted(seen) == list(range(6))
        assert [o.status for o in outcomes[:4]] == ["COMPLETED"] * 4
        assert outcomes[4].status == "FAILED" and outcomes[4].run_error_message == "bad input"
        assert isinstance(outcomes[5], NotFound)
        assert len(await client.runs_by_tag(tag)) == 5
        assert (await client.get_metadata(ALG, ids[0]))["tag"] == tag
        assert (await client.get_buffered_job(ALG, ids[0]))["kind"] == "Job"
        assert (await client.get_payload_url(ALG, ids[0])).startswith(server.url)
        assert await client.check_run(ALG, ids[0]) is True
        await client.update_tag(ALG, ids[0], tag + "-x")
        with pytest.raises(Conflict):
            await client.cancel_run(ALG, ids[0])
        slow = await client.create_run(ALG, {"sleep": 30})
        with pytest.raises(WaitTimeout):
            await client.await_run(ALG, slow, timeout=1)
        late = await client.await_runs([(ALG, slow)], timeout=0.5)
        assert isinstance(late[0], RunResult) and not late[0].finished
        await client.complete_run(ALG, slow, result_uri="s3://done")
        assert (await client.get_run(ALG, slow)).result_uri == "s3://done"
        with pytest.raises(BadRequest):
            await client.create_run("no-such-algorithm", {})


# --- retries and error mapping (scripted transport) -------------------------------------


class Script:
    """Answers requests from a list of (status, headers, body) and records them."""

    def __init__(self, *answers: tuple[int, dict[str, str], str]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers, body = self.answers.pop(0)
        return httpx.Response(status, headers=headers, text=body)


def scripted(script: Script, **kwargs) -> NexusClient:
    return NexusClient("http://nexus.test", transport=httpx.MockTransport(script), **kwargs)


def test_retries_429_and_503_honouring_retry_after() -> None:
    script = Script(
        (429, {"Retry-After": "0.2"}, "queue full"),
        (503, {}, "store down"),
        (202, {}, '{"requestId": "abc"}'),
    )
    started = time.monotonic()
    client = scripted(script, retry=RetryPolicy(attempts=5, base_delay=0.01))
    assert client.create_run(ALG, {"a": 1}) == "abc"
    assert time.monotonic() - started >= 0.2
    assert len(script.requests) == 3


def test_retries_are_bounded_and_end_in_a_typed_error() -> None:
    script = Script(*[(429, {"Retry-After": "0"}, "The run queue is full")] * 3)
    with pytest.raises(QueueFull) as caught:
        scripted(script, retry=RetryPolicy(attempts=3)).create_run(ALG, {})
    assert caught.value.retry_after == 0 and "queue is full" in caught.value.message
    script = Script(*[(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, "down")] * 2)
    with pytest.raises(Unavailable):
        scripted(script, retry=RetryPolicy(attempts=2)).get_run(ALG, "x")
    policy = RetryPolicy(max_delay=2.0)
    assert policy.delay(0, 3600) == 2.0 and policy.delay(10, None) <= 2.0


@pytest.mark.parametrize(
    "status, error",
    [
        (401, Unauthorized),
        (417, NoPayload),
        (500, ServerError),
        (502, ServerError),
        (418, NexusClientError),
    ],
)
def test_status_maps_to_error_class(status, error) -> None:
    script = Script((status, {}, "  the server says why \n"))
    with pytest.raises(error) as caught:
        scripted(script).get_payload_url(ALG, "x")
    assert caught.value.status == status and caught.value.message == "the server says why"
    assert len(script.requests) == 1  # nothing but 429/503 is retried


def test_bearer_token_static_or_callable_and_path_encoding() -> None:
    tokens = iter(["one", "two"])
    script = Script((200, {}, "[]"), (200, {}, "[]"))
    client = scripted(script, token=lambda: next(tokens))
    client.runs_by_tag("a/b c")
    client.runs_by_tag("x")
    assert [r.headers["authorization"] for r in script.requests] == ["Bearer one", "Bearer two"]
    assert script.requests[0].url.raw_path == b"/algorithm/v1/results/tags/a%2Fb%20c"
    script = Script((200, {}, "[]"))
    scripted(script).runs_by_tag("x")
    assert "authorization" not in script.requests[0].headers


def test_malformed_success_body_is_a_server_error() -> None:
    with pytest.raises(ServerError, match="Unexpected answer"):
        scripted(Script((200, {}, "<html>"))).get_run(ALG, "x")
