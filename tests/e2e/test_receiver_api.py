"""The receiver routes (SPEC §2): algorithms report their outcome, or ask if they are done."""

from __future__ import annotations

import uuid

import httpx
import pytest
from support import (
    API,
    assert_error,
    create,
    metadata,
    result,
    wait_stage,
    wait_terminal,
)

# Runs that stay RUNNING (no report) until the test reports for them.
SILENT = {"sleep": 60, "report": False}


@pytest.fixture
def running(api):
    run_id = create(api, SILENT)
    wait_stage(api, run_id, "RUNNING")
    return run_id


def complete(api, run_id, body, algorithm="behave"):
    return api.post(f"{API}/complete/{algorithm}/requests/{run_id}", json=body)


def check(api, run_id, algorithm="behave"):
    return api.get(f"{API}/check/{algorithm}/requests/{run_id}")


def test_complete_with_success(api, running):
    response = complete(api, running, {"resultUri": "https://results.example/r1"})
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}
    assert result(api, running) == {
        "requestId": running,
        "status": "COMPLETED",
        "resultUri": "https://results.example/r1",
        "runErrorMessage": "",
    }


@pytest.mark.parametrize("cause", [None, ""])
def test_an_empty_or_absent_error_cause_means_success(api, running, cause):
    body = {"resultUri": "s3://bucket/out"}
    if cause is not None:
        body["errorCause"] = cause
        body["errorDetails"] = ""
    assert complete(api, running, body).status_code == 202
    assert result(api, running)["status"] == "COMPLETED"


def test_complete_with_failure(api, running):
    response = complete(
        api,
        running,
        {"resultUri": "", "errorCause": "Input is empty", "errorDetails": "Traceback: ..."},
    )
    assert response.status_code == 202
    body = result(api, running)
    assert body == {
        "requestId": running,
        "status": "FAILED",
        "resultUri": "",
        "runErrorMessage": "Input is empty",
    }
    checkpoint = metadata(api, running)
    assert checkpoint["algorithm_failure_cause"] == "Input is empty"
    assert checkpoint["algorithm_failure_details"] == "Traceback: ..."


def test_first_result_wins(api, running):
    assert complete(api, running, {"resultUri": "first"}).status_code == 202
    assert (
        complete(api, running, {"resultUri": "", "errorCause": "late failure"}).status_code == 202
    )
    assert complete(api, running, {"resultUri": "second"}).status_code == 202
    assert result(api, running) == {
        "requestId": running,
        "status": "COMPLETED",
        "resultUri": "first",
        "runErrorMessage": "",
    }


def test_first_failure_wins_too(api, running):
    assert complete(api, running, {"errorCause": "first cause"}).status_code == 202
    assert complete(api, running, {"resultUri": "late success"}).status_code == 202
    body = result(api, running)
    assert body["status"] == "FAILED" and body["runErrorMessage"] == "first cause"


def test_a_cancelled_run_stays_cancelled(api, running):
    response = api.post(
        f"{API}/cancel/behave/requests/{running}", json={"reason": "r", "initiator": "i"}
    )
    assert response.status_code == 200
    assert complete(api, running, {"resultUri": "too late"}).status_code == 202
    assert result(api, running)["status"] == "CANCELLED"


def test_complete_unknown_run_is_404(api):
    assert_error(complete(api, str(uuid.uuid4()), {"resultUri": "x"}), 404, "not found")
    assert_error(complete(api, "not-a-run-id", {"resultUri": "x"}), 404)


def test_complete_under_another_algorithm_is_404(api, running):
    assert_error(complete(api, running, {"resultUri": "x"}, algorithm="short-deadline"), 404)
    assert metadata(api, running)["lifecycle_stage"] == "RUNNING"


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[1]", b'{"resultUri": 5}', b'{"errorCause": ["a"]}', b"\xff\xfe"]
)
def test_complete_bad_body_is_400_and_changes_nothing(api, running, body):
    response = api.post(
        f"{API}/complete/behave/requests/{running}",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "Submitted result is invalid")
    assert metadata(api, running)["lifecycle_stage"] == "RUNNING"


def test_complete_with_a_bad_algorithm_name_is_400(api):
    assert_error(
        complete(api, str(uuid.uuid4()), {"resultUri": "x"}, algorithm="Bad_Name"),
        400,
        "Invalid algorithm name",
    )


def test_check_reports_whether_the_run_is_processed(api, running):
    response = check(api, running)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"is_processed": False}
    complete(api, running, {"resultUri": "done"})
    assert check(api, running).json() == {"is_processed": True}


def test_check_a_failed_run_is_processed(api):
    run_id = create(api, {"error": "nope"})
    wait_terminal(api, run_id)
    assert check(api, run_id).json() == {"is_processed": True}


def test_check_a_pending_run(api):
    run_id = create(api, {}, dry_run=True)
    assert check(api, run_id).json()["is_processed"] in (False, True)
    wait_terminal(api, run_id)
    assert check(api, run_id).json() == {"is_processed": True}


def test_check_unknown_run_is_404(api):
    assert_error(check(api, str(uuid.uuid4())), 404, "checkpoint not found")


def test_the_algorithm_itself_reports_through_the_receiver(api, server):
    run_id = create(api, {"value": 7})
    body = wait_terminal(api, run_id)
    assert body["status"] == "COMPLETED"
    assert httpx.get(body["resultUri"]).json() == {"echo": {"value": 7}, "attempt": 1}
    assert server.behave_starts(run_id) == 1
