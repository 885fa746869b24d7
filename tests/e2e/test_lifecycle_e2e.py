"""Every end stage of SPEC §5, reached through the local executor running ``behave``.

All scenarios are submitted at once when the module starts (they run side by side), then
each test waits for its own run. The supervisor's graces are short (conftest: success
grace 1 s), and the local executor retries failed attempts after 0.5 s, 1 s, 2 s ...
"""

from __future__ import annotations

import httpx
import pytest
from support import (
    API,
    assert_error,
    cancel,
    create,
    metadata,
    wait_stage,
    wait_terminal,
)

from nexus.core.launching import LAUNCH_FAILED_CAUSE
from nexus.core.supervision import (
    DEADLINE_CAUSE,
    FATAL_CAUSE,
    NO_REPORT_CAUSE,
    START_CAUSE,
)

SCENARIOS = {
    "completed": ("behave", {"value": 1}, {}),
    "reported_failure": ("behave", {"error": "Input has no rows"}, {}),
    "fatal_exit": ("behave", {"exit": 42}, {}),
    "transient_exit": ("behave", {"transient_attempts": 3}, {}),
    "retried_failure": ("behave", {"fail_attempts": 2}, {}),
    "deadline": ("short-deadline", {"sleep": 30}, {}),
    "deadline_override": (
        "behave",
        {"sleep": 30},
        {"customConfiguration": {"runtimeEnvironment": {"deadlineSeconds": 1}}},
    ),
    "backoff_limit": ("behave", {"fail_attempts": 5}, {}),
    "backoff_limit_override": (
        "behave",
        {"fail_attempts": 1},
        {"customConfiguration": {"runtimeEnvironment": {"maximumRetries": 0}}},
    ),
    "no_report": ("behave", {"report": False}, {}),
    "missing_binary": ("missing-binary", {}, {}),
    "launch_refused": ("empty-command", {}, {}),
    "cancelled": ("behave", {"sleep": 60}, {}),
    "dry_run": ("behave", {"sleep": 60}, {"dry_run": True}),
}


@pytest.fixture(scope="module")
def runs(api) -> dict[str, tuple[str, str]]:
    """Scenario name -> (algorithm, request id), all submitted up front."""
    submitted = {}
    for name, (algorithm, payload, extra) in SCENARIOS.items():
        submitted[name] = (algorithm, create(api, payload, algorithm=algorithm, **extra))
    return submitted


def finish(api, runs, name: str, timeout: float = 45.0) -> tuple[str, dict, dict]:
    algorithm, run_id = runs[name]
    body = wait_terminal(api, run_id, algorithm, timeout=timeout)
    return run_id, body, metadata(api, run_id, algorithm)


def test_completed(api, runs, server):
    run_id, body, checkpoint = finish(api, runs, "completed")
    assert body["status"] == "COMPLETED" and body["runErrorMessage"] == ""
    assert httpx.get(body["resultUri"]).json() == {"echo": {"value": 1}, "attempt": 1}
    assert checkpoint["job_uid"] == run_id
    assert server.behave_starts(run_id) == 1


def test_failed_by_the_reported_error_cause(api, runs):
    _, body, checkpoint = finish(api, runs, "reported_failure")
    assert body["status"] == "FAILED"
    assert body["runErrorMessage"] == "Input has no rows"
    assert body["resultUri"] == ""
    assert checkpoint["algorithm_failure_details"] == "details"


def test_failed_by_a_fatal_exit_code(api, runs, server):
    run_id, body, checkpoint = finish(api, runs, "fatal_exit")
    assert body["status"] == "FAILED"
    assert body["runErrorMessage"] == FATAL_CAUSE
    assert "42" in checkpoint["algorithm_failure_details"]
    assert server.behave_starts(run_id) == 1  # never retried


def test_transient_exit_code_is_retried_beyond_the_retry_limit(api, runs, server):
    # maximumRetries is 2, yet three transient exits (75) do not count against it
    run_id, body, _ = finish(api, runs, "transient_exit")
    assert body["status"] == "COMPLETED"
    assert server.behave_starts(run_id) == 4
    assert httpx.get(body["resultUri"]).json()["attempt"] == 4


def test_failures_within_the_retry_limit_still_complete(api, runs, server):
    run_id, body, _ = finish(api, runs, "retried_failure")
    assert body["status"] == "COMPLETED"
    assert server.behave_starts(run_id) == 3


def test_deadline_exceeded_by_the_template_deadline(api, runs):
    _, body, checkpoint = finish(api, runs, "deadline")
    assert body["status"] == "DEADLINE_EXCEEDED"
    assert body["runErrorMessage"] == DEADLINE_CAUSE
    assert "deadline" in checkpoint["algorithm_failure_details"]


def test_deadline_exceeded_by_an_overridden_deadline(api, runs):
    _, body, checkpoint = finish(api, runs, "deadline_override")
    assert body["status"] == "DEADLINE_EXCEEDED"
    assert checkpoint["applied_configuration"]["runtimeEnvironment"]["deadlineSeconds"] == 1


def test_deadline_exceeded_by_the_retry_limit(api, runs, server):
    run_id, body, checkpoint = finish(api, runs, "backoff_limit")
    assert body["status"] == "DEADLINE_EXCEEDED"
    assert body["runErrorMessage"] == DEADLINE_CAUSE
    assert "backoff limit (2)" in checkpoint["algorithm_failure_details"]
    assert server.behave_starts(run_id) == 3  # the first try and maximumRetries=2 retries


def test_deadline_exceeded_by_an_overridden_retry_limit(api, runs, server):
    run_id, body, _ = finish(api, runs, "backoff_limit_override")
    assert body["status"] == "DEADLINE_EXCEEDED"
    assert server.behave_starts(run_id) == 1


def test_failed_when_the_job_succeeds_without_a_report(api, runs):
    _, body, _ = finish(api, runs, "no_report")
    assert body["status"] == "FAILED"
    assert body["runErrorMessage"] == NO_REPORT_CAUSE


def test_scheduling_failed_when_the_command_cannot_start(api, runs):
    _, body, checkpoint = finish(api, runs, "missing_binary")
    assert body["status"] == "SCHEDULING_FAILED"
    assert body["runErrorMessage"] == START_CAUSE
    assert "/nonexistent/algorithm-binary" in checkpoint["algorithm_failure_details"]


def test_scheduling_failed_when_the_cluster_refuses_the_job(api, runs):
    """A launch error that retrying cannot fix ends the run at once, with the reason."""
    _, body, checkpoint = finish(api, runs, "launch_refused")
    assert body["status"] == "SCHEDULING_FAILED"
    assert body["runErrorMessage"] == LAUNCH_FAILED_CAUSE + "the template's command is empty"
    assert "1 attempt" in checkpoint["algorithm_failure_details"]
    assert checkpoint["job_uid"] == ""


def test_cancelled(api, runs):
    _, run_id = runs["cancelled"]
    wait_stage(api, run_id, "RUNNING")
    assert cancel(api, run_id, initiator="lifecycle").status_code == 200
    _, body, _ = finish(api, runs, "cancelled")
    assert body["status"] == "CANCELLED"
    assert body["runErrorMessage"] == "Cancelled by 'lifecycle'"


def test_dry_run_completes(api, runs, server):
    run_id, body, checkpoint = finish(api, runs, "dry_run")
    assert body["status"] == "COMPLETED"
    assert checkpoint["job_uid"] == "dry-run"
    assert server.behave_starts(run_id) == 0


def test_stages_pass_through_running(api, runs):
    """A launched run records when it was sent and by which Job."""
    for name in ("completed", "reported_failure", "fatal_exit", "no_report"):
        run_id, _, checkpoint = finish(api, runs, name)
        assert checkpoint["job_uid"] == run_id
        assert checkpoint["sent_at"] != "0001-01-01T00:00:00Z"


def test_terminal_stages_are_final(api, runs):
    """Nothing leaves a terminal stage: not a late report, not a cancel."""
    for name in (
        "completed",
        "reported_failure",
        "fatal_exit",
        "deadline",
        "missing_binary",
        "cancelled",
        "no_report",
    ):
        algorithm, run_id = runs[name]
        before = finish(api, runs, name)[1]
        late = api.post(f"{API}/complete/{algorithm}/requests/{run_id}", json={"resultUri": "late"})
        assert late.status_code == 202
        assert_error(cancel(api, run_id, algorithm=algorithm), 409)
        assert wait_terminal(api, run_id, algorithm) == before, name


def test_unknown_workgroup_is_refused_at_submission(api):
    response = api.post(f"{API}/run/orphan-workgroup", json={"algorithmParameters": {}})
    assert_error(response, 400, "no-such-workgroup")
