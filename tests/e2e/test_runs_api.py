"""Every scheduler route of SPEC §2 against a real ``nexus --role all`` process."""

from __future__ import annotations

import base64
import http.client
import json
import sqlite3
import time
import uuid
import zlib
from contextlib import closing
from datetime import datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from support import (
    API,
    RFC3339,
    TERMINAL,
    UUID,
    ZERO_TIME,
    assert_error,
    cancel,
    create,
    metadata,
    pid_alive,
    result,
    wait_stage,
    wait_terminal,
)

CHECKPOINT_KEYS = {
    "algorithm",
    "id",
    "lifecycle_stage",
    "payload_uri",
    "result_uri",
    "algorithm_failure_cause",
    "algorithm_failure_details",
    "received_by_host",
    "received_at",
    "sent_at",
    "last_modified",
    "content_hash",
    "tag",
    "api_version",
    "job_uid",
}
# Token bucket so slow that, after the first launch, every run waits in the queue.
SLOW = {
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.02",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
}


@pytest.fixture(scope="module")
def slow_server(module_nexus_factory):
    """Runs stay NEW/BUFFERED here: one launch every 50 s, one launch worker."""
    proc = module_nexus_factory(env=SLOW)
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        warmup = create(http, {})  # takes the bucket's only token
        wait_terminal(http, warmup)
        # The single worker now holds this one, BUFFERED, waiting ~50 s for a token:
        # every run created after it stays NEW for the rest of the module.
        proc.holder = create(http, {})
        wait_stage(http, proc.holder, "BUFFERED")
    return proc


@pytest.fixture(scope="module")
def slow(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as http:
        yield http


# --- POST run ------------------------------------------------------------------------


def test_create_answers_202_with_a_uuid4_and_the_run_is_readable_at_once(api):
    response = api.post(f"{API}/run/behave", json={"algorithmParameters": {"x": 1}})
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"requestId"}
    assert uuid.UUID(body["requestId"]).version in (4, 7)
    assert UUID.match(body["requestId"])
    # durably recorded before the 202: readable right away, never a 404
    assert metadata(api, body["requestId"])["lifecycle_stage"] in {
        "NEW",
        "BUFFERED",
        "RUNNING",
        "COMPLETED",
    }
    assert wait_terminal(api, body["requestId"])["status"] == "COMPLETED"


def test_optional_fields_may_be_null(api):
    run_id = create(
        api,
        {},
        customConfiguration=None,
        requestApiVersion=None,
        tag=None,
        parentRequest=None,
        payloadValidFor=None,
    )
    assert wait_terminal(api, run_id)["status"] == "COMPLETED"


def test_unknown_top_level_fields_are_ignored(api):
    run_id = create(api, {}, somethingNew={"a": 1})
    assert wait_terminal(api, run_id)["status"] == "COMPLETED"


def test_authorization_header_with_an_empty_token_is_accepted(server):
    # httpx refuses to send a header value with trailing space; http.client sends it as is
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(
            "POST",
            f"{API}/run/behave?dryRun=true",
            body=b'{"algorithmParameters": {}}',
            headers={"Authorization": "Bearer ", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 202, response.read()
        run_id = json.loads(response.read())["requestId"]
        conn.request(
            "GET", f"{API}/results/behave/requests/{run_id}", headers={"Authorization": "Bearer "}
        )
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("header", ["Bearer", "Bearer some.jwt.token", "Basic Zm9vOmJhcg=="])
def test_authorization_header_is_accepted_empty_or_not(api, header):
    headers = {"Authorization": header}
    response = api.post(
        f"{API}/run/behave",
        json={"algorithmParameters": {}},
        headers=headers,
        params={"dryRun": "true"},
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["requestId"]
    assert api.get(f"{API}/results/behave/requests/{run_id}", headers=headers).status_code == 200
    assert api.get(f"{API}/metadata/behave/requests/{run_id}", headers=headers).status_code == 200


def test_dry_run_completes_without_launching(api, server):
    run_id = create(api, {"sleep": 5}, dry_run=True)
    body = wait_terminal(api, run_id, timeout=15)
    assert body["status"] == "COMPLETED"
    checkpoint = metadata(api, run_id)
    assert checkpoint["job_uid"] == "dry-run"
    assert checkpoint["sent_at"] != ZERO_TIME
    assert server.behave_starts(run_id) == 0
    assert not (server.data_dir / "logs" / f"{run_id}.log").exists()
    # the Job it would have submitted is still there to inspect
    job = api.get(f"{API}/buffer/behave/requests/{run_id}").json()
    assert job["metadata"]["name"] == run_id


@pytest.mark.parametrize("value", ["false", "TRUE", "1", "yes", ""])
def test_only_the_literal_true_means_dry_run(api, value):
    response = api.post(
        f"{API}/run/behave", params={"dryRun": value}, json={"algorithmParameters": {}}
    )
    assert response.status_code == 202
    run_id = response.json()["requestId"]
    assert wait_terminal(api, run_id)["status"] == "COMPLETED"
    assert metadata(api, run_id)["job_uid"] == run_id  # really launched


def test_idempotency_key_returns_the_first_run_and_creates_nothing(api, server):
    key = f"key-{uuid.uuid4()}"
    first = create(api, {"n": 1}, dry_run=True, headers={"Idempotency-Key": key})
    wait_terminal(api, first)  # its Job row is written by the BUFFERED step, after the 202
    before = server.written()
    again = create(api, {"n": 2}, dry_run=True, headers={"Idempotency-Key": key})
    assert again == first
    assert server.written() == before
    other = create(api, {"n": 3}, dry_run=True, headers={"Idempotency-Key": f"{key}-2"})
    assert other != first
    # the key is per algorithm
    elsewhere = create(
        api, {}, algorithm="short-deadline", dry_run=True, headers={"Idempotency-Key": key}
    )
    assert elsewhere != first


def test_child_run_with_a_parent(api):
    parent = create(api, {"sleep": 30, "report": False})
    wait_stage(api, parent, "RUNNING")
    child = create(
        api, {}, dry_run=True, parentRequest={"requestId": parent, "algorithmName": "behave"}
    )
    checkpoint = metadata(api, child)
    assert checkpoint["parent"] == {"requestId": parent, "algorithmName": "behave"}
    job = api.get(f"{API}/buffer/behave/requests/{child}").json()
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": parent, "uid": parent}
    ]
    env = {
        item["name"]: item.get("value")
        for item in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NEXUS__PARENT_REQUEST_ID"] == parent
    assert env["NEXUS__PARENT_ALGORITHM_NAME"] == "behave"
    assert cancel(api, parent).status_code == 200


def test_a_dry_runs_parent_need_not_exist(api):
    """As in the Go system, whose SDK's remote dry runs rely on it: the rendered Job gets
    a stand-in owner named after the parent. A real run with that parent is refused."""
    missing = str(uuid.uuid4())
    ref = {"requestId": missing, "algorithmName": "behave"}
    child = create(api, {}, dry_run=True, parentRequest=ref)
    job = api.get(f"{API}/buffer/behave/requests/{child}").json()
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": missing, "uid": missing}
    ]
    assert metadata(api, child)["parent"] == ref
    wait_terminal(api, child)
    real = api.post(f"{API}/run/behave", json={"algorithmParameters": {}, "parentRequest": ref})
    assert_error(real, 400, "does not exist")
    not_an_id = {"requestId": "../etc", "algorithmName": "behave"}
    dry = api.post(
        f"{API}/run/behave",
        params={"dryRun": "true"},
        json={"algorithmParameters": {}, "parentRequest": not_an_id},
    )
    assert_error(dry, 400, "does not exist")


# --- GET results ---------------------------------------------------------------------


def test_results_of_a_completed_run(api):
    run_id = create(api, {"k": "v"})
    body = wait_terminal(api, run_id)
    assert set(body) == {"requestId", "status", "resultUri", "runErrorMessage"}
    assert body["requestId"] == run_id
    assert body["status"] == "COMPLETED"
    assert body["runErrorMessage"] == ""
    downloaded = httpx.get(body["resultUri"], timeout=10)
    assert downloaded.status_code == 200
    assert downloaded.json() == {"echo": {"k": "v"}, "attempt": 1}


def test_results_of_a_failed_run_carry_the_cause_and_no_uri(api):
    run_id = create(api, {"error": "the input was empty"})
    body = wait_terminal(api, run_id)
    assert body == {
        "requestId": run_id,
        "status": "FAILED",
        "resultUri": "",
        "runErrorMessage": "the input was empty",
    }


def test_results_of_an_unfinished_run_have_empty_strings(slow):
    run_id = create(slow, {})
    body = result(slow, run_id)
    assert body == {"requestId": run_id, "status": "NEW", "resultUri": "", "runErrorMessage": ""}


def test_results_unknown_run_is_404(api):
    assert_error(api.get(f"{API}/results/behave/requests/{uuid.uuid4()}"), 404)
    known = create(api, {}, dry_run=True)
    # the run exists, but under another algorithm name
    assert_error(api.get(f"{API}/results/short-deadline/requests/{known}"), 404)
    assert_error(api.get(f"{API}/results/behave/requests/not-a-request-id"), 404)


def test_wait_returns_as_soon_as_the_run_finishes(api):
    run_id = create(api, {"sleep": 1})
    started = time.monotonic()
    body = result(api, run_id, wait=30)
    elapsed = time.monotonic() - started
    assert body["status"] == "COMPLETED"
    assert elapsed < 25  # well before the wait ran out


def test_wait_on_a_finished_run_answers_at_once(api):
    run_id = create(api, {}, dry_run=True)
    wait_terminal(api, run_id)
    started = time.monotonic()
    assert result(api, run_id, wait=30)["status"] == "COMPLETED"
    assert time.monotonic() - started < 10


def test_wait_runs_out_with_the_current_state(slow):
    run_id = create(slow, {})
    started = time.monotonic()
    body = result(slow, run_id, wait=1.5)
    elapsed = time.monotonic() - started
    assert body["status"] == "NEW"
    assert elapsed >= 1.4


@pytest.mark.parametrize("wait", ["soon", "-1", "inf", "nan"])
def test_wait_must_be_a_number_of_seconds(api, wait):
    run_id = create(api, {}, dry_run=True)
    assert_error(
        api.get(f"{API}/results/behave/requests/{run_id}", params={"wait": wait}), 400, "wait"
    )


# --- GET results/tags ----------------------------------------------------------------


def test_results_by_tag(api):
    tag = f"tag-{uuid.uuid4()}"
    done = create(api, {}, tag=tag)
    failed = create(api, {"error": "boom"}, tag=tag)
    create(api, {}, dry_run=True, tag=f"{tag}-other")
    wait_terminal(api, done)
    wait_terminal(api, failed)
    response = api.get(f"{API}/results/tags/{tag}")
    assert response.status_code == 200
    body = sorted(response.json(), key=lambda item: item["requestId"] != done)
    assert [item["requestId"] for item in body] == [done, failed]
    for item in body:
        assert set(item) == {"requestId", "algorithmName", "status", "resultUri", "runErrorMessage"}
        assert item["algorithmName"] == "behave"
    assert body[0]["status"] == "COMPLETED" and body[0]["resultUri"]
    assert body[1]["status"] == "FAILED" and body[1]["runErrorMessage"] == "boom"


def test_results_by_unknown_tag_is_an_empty_list(api):
    response = api.get(f"{API}/results/tags/no-such-tag-{uuid.uuid4()}")
    assert response.status_code == 200
    assert response.json() == []


# --- GET metadata --------------------------------------------------------------------


def test_metadata_of_a_finished_run(api):
    raw = (
        b'{"algorithmParameters":  {"b": [1, 2], "a": "x"} , "tag": "meta", '
        b'"requestApiVersion": "1.2", "customConfiguration": '
        b'{"runtimeEnvironment": {"deadlineSeconds": 20}}}'
    )
    response = api.post(
        f"{API}/run/behave", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202
    run_id = response.json()["requestId"]
    wait_terminal(api, run_id)
    body = metadata(api, run_id)
    assert CHECKPOINT_KEYS <= set(body)
    assert all(key == key.lower() for key in body)  # snake_case keys
    assert body["algorithm"] == "behave" and body["id"] == run_id
    assert body["lifecycle_stage"] == "COMPLETED"
    assert body["received_by_host"] == "test-host"
    assert body["tag"] == "meta" and body["api_version"] == "1.2"
    assert body["job_uid"] == run_id
    assert body["result_uri"] and body["payload_uri"]
    for key in ("received_at", "sent_at", "last_modified"):
        assert RFC3339.match(body[key]), body[key]
        assert body[key] != ZERO_TIME
    received = datetime.fromisoformat(body["received_at"])
    assert received <= datetime.fromisoformat(body["sent_at"])
    assert received <= datetime.fromisoformat(body["last_modified"])
    # the payload's own bytes, hashed as the Go system does (base64 of hex CRC-32)
    params = b'{"b": [1, 2], "a": "x"}'
    expected_hash = base64.b64encode(f"{zlib.crc32(params):08x}".encode()).decode()
    assert body["content_hash"] == expected_hash
    applied = body["applied_configuration"]
    assert applied["container"] == {"image": "behave", "registry": "test.local", "versionTag": "1"}
    assert applied["runtimeEnvironment"]["deadlineSeconds"] == 20
    assert applied["runtimeEnvironment"]["maximumRetries"] == 2
    assert body["configuration_overrides"] == {"runtimeEnvironment": {"deadlineSeconds": 20}}


def test_metadata_unset_times_are_the_zero_time(slow):
    run_id = create(slow, {})
    body = metadata(slow, run_id)
    assert body["lifecycle_stage"] == "NEW"
    assert body["sent_at"] == ZERO_TIME
    assert RFC3339.match(body["received_at"]) and body["received_at"] != ZERO_TIME
    assert body["job_uid"] == "" and body["result_uri"] == ""


def test_metadata_unknown_run_is_404(api):
    assert_error(api.get(f"{API}/metadata/behave/requests/{uuid.uuid4()}"), 404)


# --- GET buffer ----------------------------------------------------------------------


def test_buffer_is_the_job_manifest(api):
    run_id = create(
        api,
        {},
        customConfiguration={
            "container": {"versionTag": "2"},
            "computeResources": {"limits": {"cpu": "2", "memory": "256Mi"}},
            "runtimeEnvironment": {"maximumRetries": 1},
        },
    )
    response = api.get(f"{API}/buffer/behave/requests/{run_id}")
    assert response.status_code == 200
    # text/plain as the Go server answers it; the Go SDK refuses any other type
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    job = response.json()
    checkpoint = metadata(api, run_id)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == run_id
    labels = {
        "science.sneaksanddata.com/algorithm-template-name": "behave",
        "science.sneaksanddata.com/nexus-component": "algorithm-run",
    }
    assert labels.items() <= job["metadata"]["labels"].items()
    assert labels.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert "science.sneaksanddata.com/nexus-version" in job["metadata"]["labels"]
    assert job["metadata"]["annotations"] == {"example.com/team": "testing"}
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 30
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["image"] == "test.local/behave:2"
    assert container["command"] == ["python", "tests/e2e/algorithms/behave.py"]
    assert container["args"] == [
        f"--sas-uri={checkpoint['payload_uri']}",
        f"--request-id={run_id}",
        "--patience=30",
    ]
    assert container["resources"] == {
        "limits": {"cpu": "2", "memory": "256Mi"},
        "requests": {"cpu": "200m", "memory": "256Mi"},
    }
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["NEXUS__ALGORITHM_NAME"] == "behave"
    assert env["NEXUS__SHARD_NAME"] == "local"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}} in rules
    assert {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [75]}} in rules
    wait_terminal(api, run_id)


def test_buffer_of_a_pending_run_is_the_job_it_will_submit(slow):
    run_id = create(slow, {})
    job = slow.get(f"{API}/buffer/behave/requests/{run_id}").json()
    assert job["metadata"]["name"] == run_id
    assert metadata(slow, run_id)["lifecycle_stage"] == "NEW"


def test_buffer_unknown_run_is_404(api):
    assert_error(api.get(f"{API}/buffer/behave/requests/{uuid.uuid4()}"), 404)


# --- GET payload ---------------------------------------------------------------------


def test_payload_redirects_to_a_url_that_downloads_it(api):
    raw = b'{"algorithmParameters": {"z": [1, 2.5, "\\u00e9"],  "a": null}}'
    response = api.post(
        f"{API}/run/behave",
        content=raw,
        params={"dryRun": "true"},
        headers={"Content-Type": "application/json"},
    )
    run_id = response.json()["requestId"]
    redirect = api.get(f"{API}/payload/behave/requests/{run_id}")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location == metadata(api, run_id)["payload_uri"]
    downloaded = httpx.get(location, timeout=10)
    assert downloaded.status_code == 200
    assert downloaded.content == b'{"z": [1, 2.5, "\\u00e9"],  "a": null}'  # the exact bytes
    followed = api.get(f"{API}/payload/behave/requests/{run_id}", follow_redirects=True)
    assert followed.status_code == 200 and followed.json() == {"z": [1, 2.5, "é"], "a": None}


def test_payload_unknown_run_is_404(api):
    assert_error(api.get(f"{API}/payload/behave/requests/{uuid.uuid4()}"), 404)


def test_payload_417_when_the_run_has_no_payload(api, server):
    # Every accepted run has a stored payload, so this cannot happen through the API: the
    # row is changed behind nexus's back to reach the branch the Go clients know.
    run_id = create(api, {}, dry_run=True)
    wait_terminal(api, run_id)
    with closing(sqlite3.connect(server.db_path, timeout=10)) as conn:
        conn.execute(
            "UPDATE checkpoints SET payload_uri = '' WHERE algorithm = ? AND id = ?",
            ("behave", run_id),
        )
        conn.commit()
    assert_error(
        api.get(f"{API}/payload/behave/requests/{run_id}"),
        417,
        run_id,
        "does not have a serialized payload",
    )


# --- signed payload and result URLs ----------------------------------------------------


def _with_query(url: str, **changes: str | None) -> str:
    split = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return split._replace(query=urlencode(query)).geturl()


def test_signed_url_checks(api):
    run_id = create(api, {"secret": 1}, dry_run=True)
    url = metadata(api, run_id)["payload_uri"]
    assert httpx.get(url).status_code == 200
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    tampered_sig = _with_query(url, sig=("A" if sig[0] != "A" else "B") + sig[1:])
    assert_error(httpx.get(tampered_sig), 403, "Invalid payload address")
    other = create(api, {"other": 2}, dry_run=True)
    assert_error(httpx.get(url.replace(run_id, other)), 403, "signature")
    later = _with_query(url, exp=str(int(parse_qs(urlsplit(url).query)["exp"][0]) + 10))
    assert_error(httpx.get(later), 403)
    assert_error(httpx.get(_with_query(url, sig=None)), 403, "not signed")
    assert_error(httpx.get(_with_query(url, exp=None)), 403, "not signed")
    assert_error(httpx.get(_with_query(url, exp=None, sig=None)), 403)
    assert_error(httpx.get(_with_query(url, exp="tomorrow")), 403)


def test_signed_url_of_a_payload_that_is_gone_is_404(api, server):
    run_id = create(api, {}, dry_run=True)
    url = metadata(api, run_id)["payload_uri"]
    (server.data_dir / "payloads" / "algorithm=behave" / run_id).unlink()
    assert_error(httpx.get(url), 404, "No payload stored")


def test_signed_result_url_is_bound_to_its_method(api, server):
    run_id = create(api, {})
    body = wait_terminal(api, run_id)
    download = body["resultUri"]
    assert httpx.get(download).status_code == 200
    # the download URL (signed for GET) cannot be used to overwrite the result
    assert_error(httpx.put(download, content=b'{"forged": true}'), 403, "signature")
    assert httpx.get(download).json()["echo"] == {}
    # nor the payload's URL to fetch the result
    payload_url = metadata(api, run_id)["payload_uri"]
    assert_error(httpx.get(payload_url.replace("/payloads/", "/results/")), 403)


def test_signed_url_expires_with_payload_valid_for(api):
    run_id = create(api, {}, dry_run=True, payloadValidFor="1s")
    url = metadata(api, run_id)["payload_uri"]
    assert metadata(api, run_id)["payload_valid_for"] == "1s"
    time.sleep(2.1)
    assert_error(httpx.get(url), 403, "expired")


# --- POST cancel ---------------------------------------------------------------------


def _pid(server, run_id: str, timeout: float = 15.0) -> int:
    path = server.data_dir / "behave" / f"{run_id}.pid"
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, "the algorithm never started"
        time.sleep(0.05)
    return int(path.read_text())


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.05)


@pytest.mark.parametrize("policy", [None, "Background", "Foreground"])
def test_cancel_a_running_run_stops_its_job(api, server, policy):
    run_id = create(api, {"sleep": 60})
    wait_stage(api, run_id, "RUNNING")
    pid = _pid(server, run_id)
    response = cancel(api, run_id, policy=policy, reason="no longer needed", initiator="alice")
    assert response.status_code == 200
    assert response.text == ""
    assert response.headers["content-type"].startswith("text/plain")
    body = result(api, run_id)
    assert body["status"] == "CANCELLED"
    assert body["runErrorMessage"] == "Cancelled by 'alice'"
    assert (
        metadata(api, run_id)["algorithm_failure_details"]
        == "Run cancelled, reason: 'no longer needed'"
    )
    _wait_dead(pid)


def test_cancel_orphan_leaves_the_process_but_the_run_stays_cancelled(api, server):
    run_id = create(api, {"sleep": 2})
    wait_stage(api, run_id, "RUNNING")
    pid = _pid(server, run_id)
    assert cancel(api, run_id, policy="Orphan").status_code == 200
    assert pid_alive(pid)
    _wait_dead(pid, timeout=30)  # it finished and reported...
    time.sleep(0.5)
    assert result(api, run_id)["status"] == "CANCELLED"  # ...but the first outcome stays


def test_cancel_unknown_run_is_404(api):
    assert_error(cancel(api, str(uuid.uuid4())), 404, "not found")


def test_cancel_a_finished_run_is_409_and_changes_nothing(api):
    run_id = create(api, {}, dry_run=True)
    wait_terminal(api, run_id)
    assert_error(cancel(api, run_id), 409, "COMPLETED")
    assert result(api, run_id)["status"] == "COMPLETED"
    cancelled = create(api, {"sleep": 60})
    assert cancel(api, cancelled).status_code == 200
    assert_error(cancel(api, cancelled, initiator="bob"), 409, "CANCELLED")
    assert result(api, cancelled)["runErrorMessage"] == "Cancelled by 'pytest'"


def test_cancel_with_an_unknown_policy_is_400_and_changes_nothing(api):
    run_id = create(api, {"sleep": 60})
    assert_error(cancel(api, run_id, policy="Immediately"), 400, "CancellationPolicy", "Background")
    assert result(api, run_id)["status"] != "CANCELLED"
    assert cancel(api, run_id).status_code == 200


def test_cancel_pending_runs_before_they_are_launched(nexus_factory):
    # One launch every 2 s: W launches at once, X waits BUFFERED for its token, Y waits NEW.
    server = nexus_factory(
        env={
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.5",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
        }
    )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        first = create(http, {})
        buffered = create(http, {})
        new = create(http, {})
        last = create(http, {})
        wait_stage(http, buffered, "BUFFERED", timeout=5)
        assert metadata(http, new)["lifecycle_stage"] == "NEW"
        assert cancel(http, buffered, reason="changed my mind").status_code == 200
        assert cancel(http, new).status_code == 200
        for run_id in (buffered, new):
            body = result(http, run_id)
            assert body["status"] == "CANCELLED"
            assert body["runErrorMessage"] == "Cancelled by 'pytest'"
        # Once the runs behind them have launched, the cancelled ones never were.
        assert wait_terminal(http, first)["status"] == "COMPLETED"
        assert wait_terminal(http, last)["status"] == "COMPLETED"
        for run_id in (buffered, new):
            assert server.behave_starts(run_id) == 0
            assert metadata(http, run_id)["job_uid"] == ""
            assert not (server.data_dir / "logs" / f"{run_id}.log").exists()
            assert result(http, run_id)["status"] == "CANCELLED"


def test_cancelling_a_parent_cancels_its_unfinished_children(slow):
    parent = create(slow, {})
    children = [
        create(slow, {}, parentRequest={"requestId": parent, "algorithmName": "behave"})
        for _ in range(2)
    ]
    grandchild = create(
        slow, {}, parentRequest={"requestId": children[0], "algorithmName": "behave"}
    )
    finished_child = create(
        slow, {}, parentRequest={"requestId": parent, "algorithmName": "behave"}
    )
    assert cancel(slow, finished_child, initiator="earlier").status_code == 200
    unrelated = create(slow, {})
    assert cancel(slow, parent, initiator="carol").status_code == 200
    for run_id in (parent, *children, grandchild):
        body = result(slow, run_id)
        assert body["status"] == "CANCELLED", run_id
        assert body["runErrorMessage"] == "Cancelled by 'carol'"
    assert parent in metadata(slow, children[0])["algorithm_failure_details"]
    assert result(slow, finished_child)["runErrorMessage"] == "Cancelled by 'earlier'"
    assert result(slow, unrelated)["status"] == "NEW"


def test_cancelling_a_running_parent_stops_its_running_child(api, server):
    parent = create(api, {"sleep": 60})
    wait_stage(api, parent, "RUNNING")
    child = create(
        api, {"sleep": 60}, parentRequest={"requestId": parent, "algorithmName": "behave"}
    )
    wait_stage(api, child, "RUNNING")
    child_pid = _pid(server, child)
    assert cancel(api, parent).status_code == 200
    assert result(api, child)["status"] == "CANCELLED"
    _wait_dead(child_pid)


# --- POST metadata/tags ----------------------------------------------------------------


def test_update_tag(api):
    old, new = f"old-{uuid.uuid4()}", f"new-{uuid.uuid4()}"
    run_id = create(api, {}, dry_run=True, tag=old)
    wait_terminal(api, run_id)
    response = api.post(f"{API}/metadata/tags/behave/requests/{run_id}", json={"newTag": new})
    assert response.status_code == 200
    assert response.json() == {}
    assert api.get(f"{API}/results/tags/{old}").json() == []
    assert [item["requestId"] for item in api.get(f"{API}/results/tags/{new}").json()] == [run_id]
    assert metadata(api, run_id)["tag"] == new
    assert result(api, run_id)["status"] == "COMPLETED"  # nothing else changed


def test_update_tag_unknown_run_is_404(api):
    assert_error(
        api.post(f"{API}/metadata/tags/behave/requests/{uuid.uuid4()}", json={"newTag": "x"}), 404
    )


@pytest.mark.parametrize("body", [b"", b"{", b"{}", b'{"newTag": 5}', b"[]"])
def test_update_tag_bad_body_is_400_and_changes_nothing(api, body):
    run_id = create(api, {}, dry_run=True, tag="keep")
    response = api.post(
        f"{API}/metadata/tags/behave/requests/{run_id}",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "Tag update request")
    assert metadata(api, run_id)["tag"] == "keep"


# --- back-pressure -------------------------------------------------------------------


def test_queue_full_is_429_with_retry_after_and_writes_nothing(nexus_factory):
    server = nexus_factory(
        env={
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__QUEUE_CAPACITY": "1",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.02",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
        }
    )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        accepted = []
        refused = None

        def records() -> tuple:
            # Not submission_buffer: the runs accepted before write their Job rows in
            # the background (the BUFFERED step), whatever this request gets.
            rows, files = server.written()
            return rows["checkpoints"], rows["idempotency_keys"], files

        for _ in range(10):
            before = records()
            response = http.post(f"{API}/run/behave", json={"algorithmParameters": {}})
            if response.status_code == 429:
                refused = response
                assert records() == before
                break
            assert response.status_code == 202, response.text
            accepted.append(response.json()["requestId"])
        assert refused is not None, "the queue never filled"
        assert_error(refused, 429, "queue is full")
        assert int(refused.headers["retry-after"]) >= 1
        # every run accepted before the refusal is durably recorded and still pending or done
        for run_id in accepted:
            assert metadata(http, run_id)["lifecycle_stage"] in {
                "NEW",
                "BUFFERED",
                "RUNNING",
                "COMPLETED",
            }
        # the refusal is about the queue only: reads and cancels still work
        assert cancel(http, accepted[-1]).status_code == 200


def test_every_route_answers_json_or_plain_text(api):
    run_id = create(api, {}, dry_run=True)
    wait_terminal(api, run_id)
    for path, media in (
        (f"results/behave/requests/{run_id}", "application/json"),
        ("results/tags/x", "application/json"),
        (f"metadata/behave/requests/{run_id}", "application/json"),
        # the Job's JSON as text/plain, as the Go server sends it (its SDK requires that)
        (f"buffer/behave/requests/{run_id}", "text/plain"),
    ):
        response = api.get(f"{API}/{path}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        json.loads(response.content)
    assert result(api, run_id)["status"] in TERMINAL
