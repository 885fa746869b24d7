"""Bad and hostile input: a clear 4xx in plain text, and nothing written.

"Nothing written" is checked on disk: the rows of the embedded store (checkpoints,
submission_buffer, idempotency_keys in <data_dir>/nexus.db) and the payload files under
<data_dir>/payloads, before and after each refused request.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from urllib.parse import quote, urlsplit

import httpx
import pytest
from support import API, assert_error, create, history, metadata, wait_stage, wait_terminal

MAX = 1024  # NEXUS__MAX_PAYLOAD_SIZE=1Ki


@pytest.fixture(scope="module")
def server(module_nexus_factory):
    return module_nexus_factory(env={"NEXUS__MAX_PAYLOAD_SIZE": "1Ki"})


def http_client(proc):
    with httpx.Client(base_url=proc.url, timeout=60) as http:
        yield http


def unchanged(proc):
    """Asserts, after the test, that the store and payload folder did not change."""
    before = proc.written()
    yield
    assert proc.written() == before


@pytest.fixture(scope="module")
def api(server):
    yield from http_client(server)


@pytest.fixture(scope="module")
def parent(api):
    """A finished run, to point children at."""
    run_id = create(api, {}, dry_run=True)
    wait_terminal(api, run_id)
    return run_id


@pytest.fixture
def nothing_written(server):
    yield from unchanged(server)


def post_run(api, body: bytes, algorithm: str = "behave", **kwargs) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return api.post(f"{API}/run/{algorithm}", content=body, headers=headers, **kwargs)


def test_the_server_accepts_a_good_request(api, server):
    """The control: the same server writes a row and a payload for a good request."""
    rows, files = server.written()
    run_id = create(api, {"ok": True})
    rows_after, files_after = server.written()
    assert rows_after["checkpoints"] == rows["checkpoints"] + 1
    assert len(files_after) == len(files) + 1
    assert any(run_id in name for name in files_after)
    wait_terminal(api, run_id)
    # The Job row is written by the BUFFERED step, after the 202.
    assert server.written()[0]["submission_buffer"] == rows["submission_buffer"] + 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{", "Algorithm payload is invalid"),
        (b'{"algorithmParameters": {"a": 1}', "Algorithm payload is invalid"),
        (b'{"algorithmParameters": {"a": 1}}}', "Algorithm payload is invalid"),
        (b"{'algorithmParameters': {}}", "Algorithm payload is invalid"),
        (b"not json", "Algorithm payload is invalid"),
        (b"\xff\xfe\x00{", "Algorithm payload is invalid"),
        (b'{"algorithmParameters": NaN}', "Algorithm payload is invalid"),
        (b'{"algorithmParameters": {"a": "\xff\xfe"}}', "not valid UTF-8"),
        (b'{"algorithmParameters": {"a": "\xc0\xaf"}}', "not valid UTF-8"),  # overlong '/'
        (b'{"algorithmParameters": {"\xed\xa0\x80": 1}}', "not valid UTF-8"),  # surrogate
        (b'{"algorithmParameters": {"a": "caf\xc3"}}', "not valid UTF-8"),  # cut short
    ],
    ids=[
        "empty",
        "truncated",
        "unclosed",
        "trailing",
        "single-quotes",
        "text",
        "binary",
        "nan",
        "bad-utf8-string",
        "overlong-utf8",
        "surrogate-utf8",
        "truncated-utf8",
    ],
)
def test_malformed_json(api, nothing_written, body, fragment):
    assert_error(post_run(api, body), 400, fragment)


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"tag": "x"}', b'{"AlgorithmParameters": {}}', b"[]", b'"text"', b"42", b"null"],
    ids=["empty-object", "only-tag", "wrong-case", "array", "string", "number", "null"],
)
def test_missing_algorithm_parameters(api, nothing_written, body):
    assert_error(post_run(api, body), 400, "Algorithm payload is invalid")


@pytest.mark.parametrize(
    "params",
    [b"null", b"[]", b"[1, 2]", b'"a string"', b"7", b"true"],
    ids=["null", "empty-array", "array", "string", "number", "bool"],
)
def test_algorithm_parameters_must_be_an_object(api, nothing_written, params):
    body = b'{"algorithmParameters": ' + params + b"}"
    assert_error(post_run(api, body), 400, "Algorithm payload is invalid")


@pytest.mark.parametrize(
    "extra",
    [
        {"tag": 5},
        {"tag": ["a"]},
        {"requestApiVersion": {"v": 1}},
        {"payloadValidFor": 3600},
        {"parentRequest": "some-id"},
        {"parentRequest": {"requestId": "x"}},
        {"parentRequest": {"requestId": 1, "algorithmName": "behave"}},
        {"customConfiguration": []},
        {"customConfiguration": "big"},
        {"customConfiguration": {"runtimeEnvironment": {"maximumRetries": "three"}}},
        {"customConfiguration": {"runtimeEnvironment": {"deadlineSeconds": 1.5}}},
        {"customConfiguration": {"computeResources": {"limits": {"cpu": 2}}}},
        {"customConfiguration": {"container": {"versionTag": 2}}},
        {"customConfiguration": {"workgroupRef": "local"}},
    ],
    ids=lambda extra: str(extra)[:60],
)
def test_wrong_types(api, nothing_written, extra):
    response = api.post(f"{API}/run/behave", json={"algorithmParameters": {}, **extra})
    message = assert_error(response, 400, "Algorithm payload is invalid")
    assert "$." in message  # msgspec names the offending field


@pytest.mark.parametrize(
    "override, field",
    [
        ({"computeResources": {"cpuLimit": "lots"}}, "cpuLimit: invalid quantity 'lots'"),
        ({"computeResources": {"memoryLimit": "huge"}}, "memoryLimit: invalid quantity 'huge'"),
        ({"computeResources": {"limits": {"memory": "1Zi"}}}, "limits.memory: invalid quantity"),
        ({"computeResources": {"requests": {"cpu": "-1"}}}, "requests.cpu: invalid quantity"),
        (
            {"computeResources": {"customResources": {"nvidia.com/gpu": "x"}}},
            "customResources.nvidia.com/gpu",
        ),
        ({"runtimeEnvironment": {"deadlineSecs": 3}}, "unknown field `deadlineSecs`"),
        ({"containr": {"image": "x"}}, "unknown field `containr`"),
        ({"runtimeEnvironment": {"maximumRetries": -1}}, "maximumRetries"),
        ({"runtimeEnvironment": {"deadlineSeconds": 2**31}}, "deadlineSeconds"),
    ],
    ids=lambda value: str(value)[:50],
)
def test_a_bad_override_is_refused_with_its_field(api, nothing_written, override, field):
    """A quantity Kubernetes would refuse, an unknown key or a value out of range: a 400
    that names the field at submission, not a run that fails (or a Job written) later."""
    response = api.post(
        f"{API}/run/behave", json={"algorithmParameters": {}, "customConfiguration": override}
    )
    message = assert_error(response, 400, "Algorithm payload is invalid")
    assert field in message and "$.customConfiguration" in message, message


def test_an_override_as_the_go_sdk_sends_it_is_accepted(api):
    """The Go SDK sends a whole spec: empty strings, nulls and every field of its CRD."""
    override = {
        "container": None,
        "command": "",
        "args": None,
        "computeResources": {
            "cpuLimit": "",
            "memoryLimit": "",
            "defaultResourceQuota": "",
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "runtimeEnvironment": {"configurationFileMounts": {}, "deadlineSeconds": 20},
        "payloadConfiguration": {"payloadValidFor": "1h"},
        "datadogIntegrationSettings": {"mountDatadogSocket": False},
    }
    run_id = create(api, {}, customConfiguration=override)
    job = api.get(f"{API}/buffer/behave/requests/{run_id}").json()
    assert job["spec"]["activeDeadlineSeconds"] == 20
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "1Gi"}
    # finished, so its later writes (the Job row at BUFFERED) cannot land inside the
    # next test's nothing_written window on this shared server
    assert wait_terminal(api, run_id)["status"] == "COMPLETED"


def test_unknown_algorithm(api, nothing_written):
    assert_error(
        api.post(f"{API}/run/no-such-algorithm", json={"algorithmParameters": {}}),
        400,
        "No valid configuration found for: no-such-algorithm",
    )


def test_unknown_workgroup_in_the_template(api, nothing_written):
    assert_error(
        api.post(f"{API}/run/orphan-workgroup", json={"algorithmParameters": {}}),
        400,
        "Cannot assign requested workgroup 'no-such-workgroup'",
    )


def test_unknown_workgroup_by_override(api, nothing_written):
    response = api.post(
        f"{API}/run/behave",
        json={
            "algorithmParameters": {},
            "customConfiguration": {"workgroupRef": {"name": "elsewhere"}},
        },
    )
    assert_error(response, 400, "elsewhere")


@pytest.mark.parametrize("duration", ["forever", "1 h", "-1h", "0s", "0", "1y", "h"])
def test_bad_payload_valid_for(api, nothing_written, duration):
    response = api.post(
        f"{API}/run/behave", json={"algorithmParameters": {}, "payloadValidFor": duration}
    )
    assert_error(response, 400, "payloadValidFor")


@pytest.mark.parametrize(
    "duration",
    [
        "inf",
        "Infinity",
        "-inf",
        "nan",
        "1e309",
        "999999999999",
        "99999999999999999999h",
        "366d",
        "8761h",
    ],
)
def test_payload_valid_for_out_of_range(api, nothing_written, duration):
    """Not finite, or past what a timestamp (and a sane URL lifetime) holds: a 400 that
    names the field and the allowed range, not a 500 from the signer."""
    response = api.post(
        f"{API}/run/behave", json={"algorithmParameters": {}, "payloadValidFor": duration}
    )
    assert_error(response, 400, "Invalid payloadValidFor", "at most 8760h (365 days)")


def test_payload_valid_for_of_a_year_is_accepted(api):
    response = api.post(
        f"{API}/run/behave",
        params={"dryRun": "true"},
        json={"algorithmParameters": {}, "payloadValidFor": "365d"},
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["requestId"]
    assert metadata(api, run_id)["payload_valid_for"] == "8760h"
    wait_terminal(api, run_id)


@pytest.mark.parametrize("wait", ["inf", "Infinity", "-inf", "nan", "1e309", "-1", "soon"])
def test_bad_wait(api, parent, wait):
    response = api.get(f"{API}/results/behave/requests/{parent}", params={"wait": wait})
    assert_error(response, 400, f"Invalid wait={wait!r}", "finite number of seconds >= 0")


def test_a_huge_wait_is_cut_to_max_wait(api, parent):
    """A finished run answers at once whatever the wait; a long one is capped, not refused."""
    assert (
        api.get(f"{API}/results/behave/requests/{parent}", params={"wait": "999999999999"}).json()[
            "status"
        ]
        == "COMPLETED"
    )


@pytest.mark.parametrize("duration", ["24", ""])
def test_lenient_payload_valid_for(api, duration):
    """A bare number is seconds (as in settings); an empty string means the default."""
    response = api.post(
        f"{API}/run/behave",
        params={"dryRun": "true"},
        json={"algorithmParameters": {}, "payloadValidFor": duration},
    )
    assert response.status_code == 202
    expected = "24s" if duration == "24" else "24h"
    run_id = response.json()["requestId"]
    assert metadata(api, run_id)["payload_valid_for"] == expected
    wait_terminal(api, run_id)  # no write of it may land in the next test's window


@pytest.mark.parametrize(
    "parent_ref",
    [
        lambda p: {"requestId": str(uuid.uuid4()), "algorithmName": "behave"},
        lambda p: {"requestId": p, "algorithmName": "short-deadline"},
        lambda p: {"requestId": "../../etc/passwd", "algorithmName": "behave"},
        lambda p: {"requestId": p, "algorithmName": "../behave"},
    ],
    ids=["unknown-id", "wrong-algorithm", "path-id", "path-algorithm"],
)
def test_a_parent_that_does_not_exist(api, server, parent, parent_ref):
    before = server.written()
    response = api.post(
        f"{API}/run/behave", json={"algorithmParameters": {}, "parentRequest": parent_ref(parent)}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert server.written() == before


def test_body_over_the_size_limit(api, nothing_written):
    body = b'{"algorithmParameters": {"blob": "' + b"x" * MAX + b'"}}'
    message = assert_error(post_run(api, body), 413, "max-payload-size")
    assert str(MAX) in message


def test_chunked_body_over_the_size_limit(api, nothing_written):
    def chunks():
        yield b'{"algorithmParameters": {"blob": "'
        for _ in range(8):
            yield b"x" * 256
        yield b'"}}'

    assert_error(post_run(api, chunks()), 413)


def test_body_just_under_the_size_limit_is_accepted(api):
    head, tail = b'{"algorithmParameters": {"blob": "', b'"}}'
    body = head + b"x" * (MAX - len(head) - len(tail)) + tail
    assert len(body) == MAX
    response = post_run(api, body, params={"dryRun": "true"})
    assert response.status_code == 202, response.text
    wait_terminal(api, response.json()["requestId"])  # its Job row is written after the 202


def test_headers_over_the_size_limit_are_431(server, nothing_written):
    """Too large a header section is not a body problem: 431, naming the headers and the
    limit (Sanic's default 8192 bytes), not the 413 body message."""
    response = httpx.post(
        f"{server.url}{API}/run/behave",
        json={"algorithmParameters": {}},
        headers={"X-Padding": "x" * 9000},
        timeout=30,
    )
    message = assert_error(response, 431, "Request Header Fields Too Large", "headers", "8192")
    assert "max-payload-size" not in message


def test_many_headers_over_the_size_limit_are_431(server, nothing_written):
    headers = {f"X-Header-{i}": "y" * 100 for i in range(100)}
    response = httpx.get(f"{server.url}{API}/results/tags/x", headers=headers, timeout=30)
    assert_error(response, 431, "headers")


def test_a_lying_content_length_is_refused(server, nothing_written):
    """A declared length over the limit is refused before the body is read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /algorithm/v1/run/behave HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n"
            b'{"algorithmParameters": {}}'
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# --- path tricks in names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Behave",
        "be_have",
        "..",
        "...",
        "a..b",
        ".hidden",
        "-dash",
        "dash-",
        "%2e%2e",
        "%2E%2E%2Fetc",
        "..%2F..%2Fetc%2Fpasswd",
        "behave%00",
        "behave%0A",
        "a%20b",
        "x" * 300,
        "%C3%A9t%C3%A9",
    ],
)
def test_hostile_algorithm_names_on_create(api, nothing_written, name):
    response = api.post(f"{API}/run/{name}", json={"algorithmParameters": {}})
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain")


def raw_request(server, method: str, path: str, body: bytes = b"") -> tuple[int, str, bytes]:
    """Send ``path`` exactly as written (httpx would remove the dot segments first)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "run/../run/behave",
        "run/./behave",
        "run/behave/../../x",
        "run/behave/..",
        "run/a/b",
        "run/%2Fetc%2Fpasswd",
        "run/",
        "run",
        "run/..%2Fbehave",
        "run/%2e%2e%2fbehave",
    ],
)
def test_paths_that_are_not_a_run_route(server, nothing_written, path):
    status, content_type, body = raw_request(
        server, "POST", f"{API}/{path}", b'{"algorithmParameters": {}}'
    )
    assert 400 <= status < 500, (status, body)
    assert content_type.startswith("text/plain")


@pytest.mark.parametrize(
    "request_id",
    [
        "..",
        "..%2F..%2Fnexus.db",
        "%2e%2e%2f%2e%2e%2fnexus.db",
        "nexus.db",
        "x" * 100,
        "00000000-0000-0000-0000-000000000000%00",
        "*",
        "%25",
    ],
)
@pytest.mark.parametrize("route", ["results", "metadata", "buffer", "payload"])
def test_hostile_request_ids_on_reads(api, nothing_written, route, request_id):
    response = api.get(f"{API}/{route}/behave/requests/{request_id}")
    assert response.status_code in (400, 404), (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("request_id", ["..", "..%2Fnexus.db", "x" * 100])
def test_hostile_request_ids_on_writes(api, nothing_written, request_id):
    for path, body in (
        (f"cancel/behave/requests/{request_id}", {"reason": "", "initiator": ""}),
        (f"metadata/tags/behave/requests/{request_id}", {"newTag": "x"}),
        (f"complete/behave/requests/{request_id}", {"resultUri": "x"}),
    ):
        response = api.post(f"{API}/{path}", json=body)
        assert response.status_code in (400, 404), (path, response.status_code, response.text)


@pytest.mark.parametrize(
    "path",
    [
        "/data/v1/payloads/behave/requests/..%2F..%2Fnexus.db",
        "/data/v1/payloads/..%2F..%2F/requests/nexus.db",
        "/data/v1/payloads/behave/requests/%2e%2e",
        "/data/v1/results/behave/requests/..%2F.sign-secret",
    ],
)
def test_hostile_paths_on_the_data_routes(server, nothing_written, path):
    status, _, body = raw_request(server, "GET", path)
    assert status in (400, 403, 404), (status, body)
    assert (server.data_dir / ".sign-secret").read_bytes() not in body
    assert b"SQLite format" not in body


def test_a_signed_url_cannot_be_redirected_to_another_file(api, server):
    run_id = create(api, {"mine": 1}, dry_run=True)
    wait_terminal(api, run_id)
    url = urlsplit(metadata(api, run_id)["payload_uri"])
    for trick in ("/../../nexus.db", "%2F..%2F..%2Fnexus.db", "/..", "/../.sign-secret"):
        path = url.path.replace(run_id, run_id + trick) + "?" + url.query
        status, _, body = raw_request(server, "GET", path)
        assert status in (400, 403, 404), (trick, status, body)
        assert b"SQLite format" not in body


# --- other routes ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{", b'{"cancellationPolicy": 5}', b"[]"])
def test_bad_cancel_body_changes_nothing(api, server, body):
    run_id = create(api, {"sleep": 30, "report": False})
    wait_stage(api, run_id, "RUNNING")  # its Job row is written by then
    before, events = server.written(), history(api, run_id)
    response = api.post(
        f"{API}/cancel/behave/requests/{run_id}",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "Cancellation payload is invalid")
    assert server.written() == before
    assert history(api, run_id) == events
    assert metadata(api, run_id)["lifecycle_stage"] != "CANCELLED"
    api.post(f"{API}/cancel/behave/requests/{run_id}", json={"reason": "", "initiator": ""})


def test_bad_input_with_an_idempotency_key_does_not_burn_the_key(api, server):
    key = f"key-{uuid.uuid4()}"
    before = server.written()
    assert_error(post_run(api, b"{", headers={"Idempotency-Key": key}), 400)
    assert_error(
        api.post(
            f"{API}/run/no-such-algorithm",
            json={"algorithmParameters": {}},
            headers={"Idempotency-Key": key},
        ),
        400,
    )
    assert server.written() == before
    first = create(api, {}, dry_run=True, headers={"Idempotency-Key": key})
    assert create(api, {}, dry_run=True, headers={"Idempotency-Key": key}) == first
    wait_terminal(api, first)  # no write of it may land in the next test's window


def test_unknown_routes_and_methods_are_plain_text(api, nothing_written):
    assert_error(api.get("/algorithm/v1/nothing-here"), 404)
    assert_error(api.get(f"{API}/run/behave"), 405)
    assert_error(api.delete(f"{API}/results/behave/requests/{uuid.uuid4()}"), 405)


# --- deep nesting (a server that takes bodies of a few megabytes) ------------------------


@pytest.fixture(scope="module")
def roomy(module_nexus_factory):
    return module_nexus_factory(env={"NEXUS__MAX_PAYLOAD_SIZE": "16Mi"})


@pytest.fixture(scope="module")
def roomy_api(roomy):
    yield from http_client(roomy)


@pytest.fixture
def roomy_unchanged(roomy):
    yield from unchanged(roomy)


def nested(depth: int, open_: bytes = b'{"a":', close: bytes = b"}", inner: bytes = b"1") -> bytes:
    return open_ * depth + inner + close * depth


DEEP = 100_000


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b'{"algorithmParameters": ' + nested(DEEP) + b"}", "Algorithm payload"),
        (b'{"algorithmParameters": {"a": ' + nested(DEEP, b"[", b"]") + b"}}", "Algorithm payload"),
        (
            b'{"algorithmParameters": {}, "customConfiguration": {"runtimeEnvironment": '
            b'{"environmentVariables": [' + nested(DEEP) + b"]}}}",
            "Algorithm payload",
        ),
        (
            b'{"algorithmParameters": {}, "customConfiguration": {"runtimeEnvironment": '
            b'{"storageMounts": {"m": {"x": ' + nested(DEEP, b"[", b"]", b"[]") + b"}}}}}",
            "Algorithm payload",
        ),
        (
            b'{"algorithmParameters": {}, "unknownField": ' + nested(DEEP, b"[", b"]") + b"}",
            "Algorithm payload",
        ),
        (b'{"algorithmParameters": ' + b"[" * 1_000_000, "Algorithm payload"),
        (b'{"algorithmParameters": {"a": ' + b'{"a":' * 1_000_000, "Algorithm payload"),
    ],
    ids=[
        "payload-objects",
        "payload-arrays",
        "override-objects",
        "override-arrays",
        "unknown-field",
        "unclosed-arrays",
        "unclosed-objects",
    ],
)
def test_deep_nesting_is_a_400(roomy_api, roomy_unchanged, body, what):
    """msgspec's RecursionError (it skips the payload, kept as Raw, recursively too) was a
    500; it is a 400 that says what is wrong."""
    response = roomy_api.post(
        f"{API}/run/behave", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(
        response, 400, f"{what} is invalid", "nests objects and arrays too deeply", "500 levels"
    )


@pytest.mark.parametrize(
    ("path", "body", "what"),
    [
        (
            "cancel/behave/requests/{id}",
            b'{"reason": "x", "extra": ' + nested(DEEP, b"[", b"]") + b"}",
            "Cancellation payload",
        ),
        (
            "metadata/tags/behave/requests/{id}",
            b'{"newTag": "x", "extra": ' + nested(DEEP) + b"}",
            "Tag update request",
        ),
        (
            "complete/behave/requests/{id}",
            b'{"resultUri": "x", "extra": ' + nested(DEEP, b"[", b"]") + b"}",
            "Submitted result",
        ),
    ],
    ids=["cancel", "tag", "complete"],
)
def test_deep_nesting_in_the_other_bodies_is_a_400(roomy, roomy_api, path, body, what):
    run_id = create(roomy_api, {"sleep": 30, "report": False})
    wait_stage(roomy_api, run_id, "RUNNING")
    before, events = roomy.written(), history(roomy_api, run_id)
    response = roomy_api.post(
        f"{API}/{path.format(id=run_id)}",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, f"{what} is invalid", "too deeply")
    assert roomy.written() == before
    assert history(roomy_api, run_id) == events
    assert metadata(roomy_api, run_id)["lifecycle_stage"] == "RUNNING"
    roomy_api.post(f"{API}/cancel/behave/requests/{run_id}", json={})


def test_a_payload_nested_400_deep_is_stored_as_sent(roomy, roomy_api):
    params = b'{"a": ' + nested(400, b'[{"b": ', b"}]", b"null") + b"}"
    response = roomy_api.post(
        f"{API}/run/behave",
        params={"dryRun": "true"},
        content=b'{"algorithmParameters": ' + params + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["requestId"]
    stored = [path for path in (roomy.data_dir / "payloads").rglob("*") if run_id in path.name]
    assert [path.read_bytes() for path in stored] == [params]
    wait_terminal(roomy_api, run_id)  # no write of it may land in the next test's window
    wait_terminal(roomy_api, run_id)


def test_an_override_nested_past_its_limit_is_refused_with_its_field(roomy_api, roomy_unchanged):
    """Free-form override parts are bounded (32 levels) well below the decoder's limit, so
    the stored override always decodes again when the run is read back."""
    response = roomy_api.post(
        f"{API}/run/behave",
        content=(
            b'{"algorithmParameters": {}, "customConfiguration": {"runtimeEnvironment": '
            b'{"environmentVariables": [{"name": "X", "extra": '
            + nested(40, b"[", b"]", b"[]")
            + b"}]}}}"
        ),
        headers={"Content-Type": "application/json"},
    )
    assert_error(
        response,
        400,
        "environmentVariables: nested more than 32 levels deep",
        "$.customConfiguration.runtimeEnvironment",
    )


# --- tags ------------------------------------------------------------------------------


def tag_path(tag: str) -> str:
    return f"{API}/results/tags/{quote(tag, safe='')}"


@pytest.mark.parametrize(
    "tag",
    [
        "ünïcødé-✓",
        "🚀 launch",
        "a b",
        "a/b",
        "a?b",
        "a#b",
        "100%",
        "%2F",
        "a+b",
        "日本語のタグ",
        "x" * 256,
    ],
    ids=[
        "accents",
        "emoji",
        "space",
        "slash",
        "question",
        "hash",
        "percent",
        "encoded",
        "plus",
        "cjk",
        "longest",
    ],
)
def test_a_tag_that_needs_percent_encoding_is_found(api, tag):
    run_id = create(api, {}, dry_run=True, tag=tag)
    wait_terminal(api, run_id)  # no write of it may land in the next test's window
    assert metadata(api, run_id)["tag"] == tag  # stored as sent
    found = api.get(tag_path(tag))
    assert found.status_code == 200, found.text
    assert run_id in [row["requestId"] for row in found.json()]
    assert all(row["requestId"] != run_id for row in api.get(tag_path(tag + "x")).json())
    wait_terminal(api, run_id)


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("\x01\x1f\x7f", "U+0001"),
        ("a\x00b", "U+0000"),
        ("line\nbreak", "U+000A"),
        ("tab\t", "U+0009"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("c1\x9f", "U+009F"),
    ],
    ids=["c0", "nul", "newline", "tab", "del", "nel", "c1"],
)
def test_a_tag_with_control_characters_is_refused(api, nothing_written, tag, code):
    response = api.post(f"{API}/run/behave", json={"algorithmParameters": {}, "tag": tag})
    assert_error(response, 400, "Invalid tag", code, "printable Unicode")


def test_a_tag_longer_than_256_characters_is_refused(api, nothing_written):
    response = api.post(f"{API}/run/behave", json={"algorithmParameters": {}, "tag": "é" * 257})
    assert_error(response, 400, "Invalid tag", "257 characters", "at most 256")


def test_retag_checks_the_new_tag_like_a_create(api, server, parent):
    before, events = server.written(), history(api, parent)
    for new_tag, fragment in (("bad\x00tag", "U+0000"), ("x" * 257, "at most 256")):
        response = api.post(
            f"{API}/metadata/tags/behave/requests/{parent}", json={"newTag": new_tag}
        )
        assert_error(response, 400, "Invalid newTag", fragment)
    assert server.written() == before
    assert history(api, parent) == events
    assert metadata(api, parent)["tag"] == ""
    retagged = "re-tag ✓/ok"
    assert (
        api.post(
            f"{API}/metadata/tags/behave/requests/{parent}", json={"newTag": retagged}
        ).status_code
        == 200
    )
    assert [row["requestId"] for row in api.get(tag_path(retagged)).json()] == [parent]
    api.post(f"{API}/metadata/tags/behave/requests/{parent}", json={"newTag": ""})


def test_a_tag_lookup_that_is_not_utf8_is_a_400(api):
    assert_error(api.get(f"{API}/results/tags/%FF%FE"), 400, "not UTF-8")


# --- a client that goes away ------------------------------------------------------------


def log_lines_since(server, offset: int) -> list[dict]:
    text = server.log_path.read_bytes()[offset:].decode(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_for_log(server, offset: int, fragment: str, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log_lines_since(server, offset)
        if any(fragment in line["message"] for line in lines):
            return lines
        time.sleep(0.1)
    raise AssertionError(f"no log line with {fragment!r}: {lines}")


def test_a_client_that_disconnects_mid_body_is_no_error(server, nothing_written):
    offset = server.log_path.stat().st_size
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /algorithm/v1/run/behave HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 900\r\n\r\n"
            b'{"algorithmParameters": {"a": "' + b"x" * 100
        )
        time.sleep(0.3)
    lines = wait_for_log(server, offset, "client went away during POST")
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    gone = [line for line in lines if "client went away" in line["message"]]
    assert {line["level"] for line in gone} == {"INFO"}


def test_a_client_that_leaves_a_long_poll_is_no_error(server, api):
    run_id = create(api, {"sleep": 30, "report": False})
    wait_stage(api, run_id, "RUNNING")  # its Job row is written by then
    offset = server.log_path.stat().st_size
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"GET {API}/results/behave/requests/{run_id}?wait=20 HTTP/1.1\r\n"
            "Host: x\r\n\r\n".encode()
        )
        time.sleep(0.5)
    lines = wait_for_log(server, offset, "client went away during GET")
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    api.post(f"{API}/cancel/behave/requests/{run_id}", json={})
