"""The official Python SDK, run for real against nexus with ``auth.receiver-tokens: true``.

PyPI's ``nexus-client-sdk`` (its version pinned in scripts/testenv.d/sdk-requirements.txt;
it calls the Go SDK, shipped inside it as a shared library) lives in a venv of its own,
testenv component ``sdk``; its interpreter (``NEXUS_TEST_SDK_PYTHON``) runs the algorithm
process of the template ``sdk-report`` (tests/e2e/algorithms/sdk_algorithm.py, which
reports through the SDK's ``NexusReceiverAsyncClient``) and the caller that creates and
awaits a run through the SDK's ``NexusSchedulerClient`` (sdk_caller.py). nexus runs on
embedded defaults with the local executor; nothing of nexus or the SDK is mocked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import NexusProcess
from support import REPO, create, history, metadata, result, wait_stage, wait_terminal

from nexus.core.signing import RunTokens

ALGORITHM = "sdk-report"
SCRIPTS = REPO / "tests" / "e2e" / "algorithms"
SECRET = "e2e-sdk-receiver-token-secret-0123456789"
KEPT = ("lifecycle_stage", "result_uri", "algorithm_failure_cause", "last_modified")
TIMEOUT = 240.0  # the SDK's own wait for an unprocessed report is about half a minute
REQUESTS = re.compile(
    r'^nexus_http_requests_total\{code="(\d+)",method="(\w+)",'
    r'route="/algorithm/v1/(complete|check)/\{algorithm\}/requests/\{request_id\}"\} (\S+)$',
    re.M,
)


def template(sdk_python: str) -> str:
    return f"""\
apiVersion: science.sneaksanddata.com/v1
kind: NexusAlgorithmWorkgroup
metadata:
  name: local
spec:
  description: the official SDK's test workgroup
  cluster: local
---
apiVersion: science.sneaksanddata.com/v1
kind: NexusAlgorithmTemplate
metadata:
  name: {ALGORITHM}
spec:
  container: {{registry: test.local, image: sdk-report, versionTag: "1"}}
  command: {json.dumps(sdk_python)}
  args: [{json.dumps(str(SCRIPTS / "sdk_algorithm.py"))}, "--sas-uri=%s", "--request-id=%s"]
  workgroupRef: {{name: local}}
  runtimeEnvironment: {{deadlineSeconds: 600, maximumRetries: 0}}
"""


@pytest.fixture(scope="module")
def sdk_python() -> str:
    from contract.servers import require

    python = require("sdk", ("NEXUS_TEST_SDK_PYTHON",))["NEXUS_TEST_SDK_PYTHON"]
    assert os.access(python, os.X_OK), f"NEXUS_TEST_SDK_PYTHON={python} is not executable"
    return python


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where sdk_algorithm.py writes what its reports came to, and waits for the test."""
    return tmp_path_factory.mktemp("sdk-state")


@pytest.fixture(scope="module")
def server(
    module_nexus_factory, sdk_python: str, state: Path, tmp_path_factory: pytest.TempPathFactory
) -> NexusProcess:
    templates = tmp_path_factory.mktemp("sdk-templates")
    (templates / "sdk.yaml").write_text(template(sdk_python))
    return module_nexus_factory(
        env={
            "NEXUS__AUTH__RECEIVER_TOKENS": "true",
            "NEXUS__AUTH__RECEIVER_TOKEN_SECRET": SECRET,
            "NEXUS__TEMPLATES_PATH": str(templates),
            "SDK_ALGORITHM_STATE": str(state),  # not a NEXUS__ setting: the process gets it
        }
    )


def receiver_calls(api: httpx.Client) -> Counter[tuple[str, str, str]]:
    """The receiver's answers so far, from /metrics: (route, method, status) -> count."""
    scrape = api.get("/metrics")
    assert scrape.status_code == 200, scrape.text
    found = REQUESTS.findall(scrape.text)
    return Counter({(route, method, code): int(float(n)) for code, method, route, n in found})


def wait_file(path: Path, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} not written in {timeout}s"
        time.sleep(0.1)
    return path.read_text()


def downloaded(uri: str) -> object:
    response = httpx.get(uri, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_sdk_completes_a_run_with_the_runs_token(
    api: httpx.Client, server: NexusProcess, state: Path
) -> None:
    """The SDK's receiver client, its token provider reading the run's variable, reports
    the result the process uploaded, and its own check finds the run processed."""
    before = receiver_calls(api)
    payload = {"value": 41, "words": ["official", "sdk"]}
    run_id = create(api, payload, algorithm=ALGORITHM)
    body = wait_terminal(api, run_id, ALGORITHM, timeout=TIMEOUT)
    assert body["status"] == "COMPLETED", (body, server.log())
    assert wait_file(state / f"{run_id}.reported") == "accepted"
    assert downloaded(body["resultUri"]) == {"echo": payload}
    calls = receiver_calls(api) - before
    assert calls[("complete", "POST", "202")] == 1, calls
    assert calls[("check", "GET", "200")] >= 1, calls  # complete_run's own check
    assert not [key for key in calls if key[2] in ("401", "403")], calls


@pytest.mark.slow
@pytest.mark.parametrize(
    ("refused", "status"), [("none", "401"), ("other", "403")], ids=["no-token", "other-run"]
)
def test_a_report_without_the_runs_token_is_refused_and_changes_nothing(
    api: httpx.Client, server: NexusProcess, state: Path, refused: str, status: str
) -> None:
    """The stock bootstrap's client (no token provider) and one given another run's
    token: nexus refuses both the report and the checks, the run stays as it was, and the
    SDK ends with its "not processed" error. The same process then completes the run with
    its own token."""
    other = create(api, {}, algorithm=ALGORITHM, dry_run=True)  # never launched
    wait_terminal(api, other, ALGORITHM, timeout=TIMEOUT)
    other_token = RunTokens(SECRET.encode()).issue(ALGORITHM, other, 600)
    payload = {"refused": refused, "other_token": other_token}
    run_id = create(api, payload, algorithm=ALGORITHM)
    wait_file(state / f"{run_id}.ready")
    wait_stage(api, run_id, "RUNNING", ALGORITHM, timeout=TIMEOUT)
    kept = {key: metadata(api, run_id, ALGORITHM)[key] for key in KEPT}
    events = history(api, run_id, ALGORITHM)
    others = (metadata(api, other, ALGORITHM), history(api, other, ALGORITHM))
    calls_before = receiver_calls(api)

    (state / f"{run_id}.try").touch()
    raised = wait_file(state / f"{run_id}.refused")

    # What the SDK 1.8.5 really does: its Python layer drops the Go client's error for the
    # refused report (it compares the error type, bytes, with str names), so complete_run
    # returns; the check that follows is refused too and reads as "not processed", retried
    # until the SDK gives up with NexusClientRuntimeError.
    assert raised.startswith(
        "nexus_client_sdk.clients.fault_tolerance.models._models.NexusClientRuntimeError: "
    ), raised
    assert f"{ALGORITHM}/{run_id} was not processed by the receiver" in raised, raised
    calls = receiver_calls(api) - calls_before
    assert calls[("complete", "POST", status)] == 1, calls
    assert calls[("check", "GET", status)] >= 1, calls
    assert not calls[("complete", "POST", "202")] and not calls[("check", "GET", "200")], calls
    assert {key: metadata(api, run_id, ALGORITHM)[key] for key in KEPT} == kept
    assert kept["lifecycle_stage"] == "RUNNING"
    assert history(api, run_id, ALGORITHM) == events, "a refused report adds no event"
    assert (metadata(api, other, ALGORITHM), history(api, other, ALGORITHM)) == others

    (state / f"{run_id}.go").touch()
    body = wait_terminal(api, run_id, ALGORITHM, timeout=TIMEOUT)
    assert body["status"] == "COMPLETED", (body, server.log())
    assert wait_file(state / f"{run_id}.reported") == "accepted"
    assert downloaded(body["resultUri"]) == {"echo": payload}


def test_the_sdk_scheduler_client_creates_awaits_and_reads_a_run(
    api: httpx.Client, server: NexusProcess, sdk_python: str, state: Path
) -> None:
    """NexusSchedulerClient: create_run, await_run, get_run_result, get_request_metadata
    and get_run_results(tag) against the same nexus; the run it created reports through
    the SDK's receiver client with its token."""
    payload = {"value": 7, "from": "the scheduler client"}
    tag = f"sdk-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
    done = subprocess.run(
        [
            sdk_python,
            str(SCRIPTS / "sdk_caller.py"),
            f"--url={server.url}",
            f"--algorithm={ALGORITHM}",
            f"--payload={json.dumps(payload)}",
            f"--tag={tag}",
            f"--timeout={int(TIMEOUT)}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT + 60,
    )
    assert done.returncode == 0, (done.stdout, done.stderr, server.log())
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    run_id = seen["request_id"]
    ours = result(api, run_id, ALGORITHM)
    assert ours["status"] == "COMPLETED", ours
    assert seen["awaited"] == {"status": "COMPLETED", "result_uri": ours["resultUri"]}
    assert seen["finished"] is True and seen["succeeded"] is True
    assert seen["again"] == seen["awaited"]
    assert seen["metadata"] == {
        "id": run_id,
        "lifecycle_stage": "COMPLETED",
        "tag": tag,
        "result_uri": ours["resultUri"],
    }
    assert seen["tagged"] == [run_id]
    assert seen["result"] == {"echo": payload}
    assert wait_file(state / f"{run_id}.reported") == "accepted"
