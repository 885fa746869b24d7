"""nexus on a real Kubernetes control plane (scripts/testenv kube): kube-apiserver,
kube-controller-manager (the real Job and garbage-collector controllers), kube-scheduler,
and KWOK playing the kubelets of two fake nodes.

Each test starts ``nexus --role all`` with the Kubernetes executor and template source.
The test applies the CRDs and the NexusAlgorithmTemplate/Workgroup resources, submits
runs over HTTP and reads them back over HTTP; the Pods run on KWOK nodes, whose
behaviour the template's annotations choose (``nexus.test/*``, see
scripts/testenv.d/kube/kwok.yaml; nexus copies template annotations onto the Pod). Where a
run needs its algorithm to report, the test does what the algorithm would: it reads the
Job's args and env from the API server, fetches the payload, uploads a result and calls
the receiver.

Needs NEXUS_TEST_KUBECONFIG (``eval "$(scripts/testenv env kube)"``); without it the tests
are skipped, or fail when NEXUS_TEST_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from conftest import free_port
from control_plane import GROUP, REPO, Kube, wait_for

from nexus.core.jobs import JobContext, render_job
from nexus.core.models import AlgorithmSpec, WorkgroupSpec
from nexus.core.signing import RUN_TOKEN_ENV
from nexus.core.supervision import (
    DEADLINE_CAUSE,
    FATAL_CAUSE,
    IMAGE_CAUSE,
    LOST_CAUSE,
    NO_REPORT_CAUSE,
    OOM_CAUSE,
    START_CAUSE,
)

pytestmark = pytest.mark.kube

# --- resources ---------------------------------------------------------------------------


def workgroup(kube: Kube, namespace: str, name: str, cluster: str) -> None:
    kube.apply(
        f"/apis/{GROUP}/v1/namespaces/{namespace}/nexusalgorithmworkgroups",
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "NexusAlgorithmWorkgroup",
            "metadata": {"name": name},
            "spec": {
                "description": "integration test",
                "cluster": cluster,
                "capabilities": {"amd64": True},
                "tolerations": [
                    {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                ],
            },
        },
    )


def template(
    kube: Kube,
    namespace: str,
    name: str,
    annotations: dict[str, str],
    *,
    workgroup_name: str = "wg-a",
    deadline: int = 120,
    retries: int = 0,
    fatal: list[int] | None = None,
    service_account: str | None = None,
) -> None:
    container: dict[str, Any] = {"registry": "test.local", "image": "behave", "versionTag": "1"}
    if service_account:
        container["serviceAccountName"] = service_account
    spec: dict[str, Any] = {
        "container": container,
        "command": "python main.py",
        "args": ["--sas-uri=%s", "--request-id=%s"],
        "computeResources": {"cpuLimit": "100m", "memoryLimit": "64Mi"},
        "workgroupRef": {"name": workgroup_name},
        "runtimeEnvironment": {
            "annotations": annotations,
            "deadlineSeconds": deadline,
            "maximumRetries": retries,
            "environmentVariables": [{"name": "TEAM", "value": "integration"}],
        },
    }
    if fatal:
        spec["errorHandlingBehaviour"] = {"fatalExitCodes": fatal, "transientExitCodes": [75]}
    kube.apply(
        f"/apis/{GROUP}/v1/namespaces/{namespace}/nexusalgorithmtemplates",
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "NexusAlgorithmTemplate",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def shard_kubeconfig(source: str, target: Path, namespace: str | None = None) -> None:
    """A copy of ``source``; with ``namespace``, its current context points there."""
    if namespace is None:
        shutil.copyfile(source, target)
        return
    doc = yaml.safe_load(Path(source).read_text())
    for context in doc["contexts"]:
        if context["name"] == doc["current-context"]:
            context["context"]["namespace"] = namespace
    target.write_text(yaml.safe_dump(doc))


def kube_env(kubeconfig: str, namespace: str, shard_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "NEXUS__EXECUTOR": "kubernetes",
        "NEXUS__TEMPLATE_SOURCE": "kubernetes",
        "NEXUS__KUBE_CONFIG_PATH": kubeconfig,
        "NEXUS__SHARD_KUBE_CONFIG_PATH": str(shard_dir),
        "NEXUS__RUNTIME_NAMESPACE": namespace,
        **extra,
    }


def start(
    nexus_factory,
    kubeconfig: str,
    namespace: str,
    tmp_path: Path,
    shards: dict[str, str | None] | None = None,
    data_dir: Path | None = None,
    **extra: str,
):
    shard_dir = tmp_path / f"shards-{uuid.uuid4().hex[:6]}"
    shard_dir.mkdir()
    for name, shard_namespace in (shards or {"shard-a": None}).items():
        shard_kubeconfig(kubeconfig, shard_dir / f"{name}.kubeconfig", shard_namespace)
    return nexus_factory(env=kube_env(kubeconfig, namespace, shard_dir, **extra), data_dir=data_dir)


# --- the client and the algorithm --------------------------------------------------------

V1 = "/algorithm/v1"


def submit(http: httpx.Client, algorithm: str, payload: dict | None = None, **body: Any) -> str:
    response = http.post(
        f"{V1}/run/{algorithm}", json={"algorithmParameters": payload or {"n": 1}, **body}
    )
    assert response.status_code == 202, response.text
    return response.json()["requestId"]


def submit_when_known(http: httpx.Client, algorithm: str, **body: Any) -> str:
    """Submit once the template source has seen the template (a watch, so soon)."""

    def attempt() -> str | None:
        response = http.post(
            f"{V1}/run/{algorithm}", json={"algorithmParameters": {"n": 1}, **body}
        )
        if response.status_code == 400 and "No valid configuration" in response.text:
            return None
        assert response.status_code == 202, response.text
        return response.json()["requestId"]

    return wait_for(attempt, 20, f"template {algorithm} to reach nexus", every=0.3)


def result(http: httpx.Client, algorithm: str, run_id: str, wait: float = 30) -> dict:
    response = http.get(f"{V1}/results/{algorithm}/requests/{run_id}", params={"wait": wait})
    assert response.status_code == 200, response.text
    return response.json()


def metadata(http: httpx.Client, algorithm: str, run_id: str) -> dict:
    response = http.get(f"{V1}/metadata/{algorithm}/requests/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_stage(
    http: httpx.Client, algorithm: str, run_id: str, stages: set[str], timeout: float = 60
) -> dict:
    return wait_for(
        lambda: (m := metadata(http, algorithm, run_id))["lifecycle_stage"] in stages and m,
        timeout,
        f"run {algorithm}/{run_id} to reach {sorted(stages)}",
        every=0.3,
    )


def finished(http: httpx.Client, algorithm: str, run_id: str, timeout: float = 90) -> dict:
    """The run's result once it is terminal, with its metadata under ``meta``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = result(http, algorithm, run_id, wait=min(20, timeout))
        if body["status"] not in ("NEW", "BUFFERED", "RUNNING"):
            return {**body, "meta": metadata(http, algorithm, run_id)}
    pytest.fail(
        f"run {algorithm}/{run_id} did not finish in {timeout}s: "
        f"{metadata(http, algorithm, run_id)}",
        pytrace=False,
    )


def act_as_algorithm(kube: Kube, namespace: str, algorithm: str, run_id: str) -> bytes:
    """Do what the algorithm in the Job would: read the payload, upload a result, report."""
    job = wait_for(lambda: kube.job(namespace, run_id), 30, f"Job {run_id}")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    payload_url = next(arg.split("=", 1)[1] for arg in container["args"] if "sas-uri" in arg)
    assert f"--request-id={run_id}" in container["args"]
    payload = httpx.get(payload_url, timeout=10)
    assert payload.status_code == 200, payload.text
    result_body = json.dumps({"echo": payload.json(), "shard": env["NEXUS__SHARD_NAME"]}).encode()
    upload = httpx.put(env["NEXUS__RESULT_UPLOAD_URL"], content=result_body, timeout=10)
    assert upload.status_code in (200, 201), upload.text
    report = httpx.post(
        f"{env['NEXUS__CLIENT__RECEIVER']}{V1}/complete/{algorithm}/requests/{run_id}",
        json={"resultUri": env["NEXUS__RESULT_URL"]},
        headers={"Authorization": f"Bearer {env[RUN_TOKEN_ENV]}"},  # the run's own token
        timeout=10,
    )
    assert report.status_code == 202, report.text
    return result_body


def job_gone(kube: Kube, namespace: str, run_id: str, timeout: float = 30) -> None:
    wait_for(lambda: kube.job(namespace, run_id) is None, timeout, f"Job {run_id} to be deleted")


# --- tests -------------------------------------------------------------------------------


def test_run_goes_through_a_real_job_on_a_kwok_node(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    nexus = start(
        nexus_factory, kubeconfig, namespace, tmp_path, NEXUS__AUTH__RECEIVER_TOKENS="true"
    )
    # Applied after nexus started: the template source's watch must pick them up.
    workgroup(kube, namespace, "wg-a", "shard-a")
    template(kube, namespace, "hello", {"nexus.test/hold": "true"})
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        run_id = submit_when_known(http, "hello", tag="it")
        meta = wait_stage(http, "hello", run_id, {"RUNNING"})
        job = wait_for(lambda: kube.job(namespace, run_id), 30, "the Job")
        assert meta["job_uid"] == job["metadata"]["uid"]
        env = {
            e["name"]: e.get("value")
            for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["NEXUS__SHARD_NAME"] == "shard-a" and env["TEAM"] == "integration"
        # The Job as the API server keeps it carries the run's token, and nothing else
        # completes the run (auth.receiver-tokens is on).
        assert env[RUN_TOKEN_ENV].startswith("nxr1.")
        refused = http.post(f"{V1}/complete/hello/requests/{run_id}", json={"resultUri": "x"})
        assert refused.status_code == 401, refused.text
        labels = job["metadata"]["labels"]
        assert labels[f"{GROUP}/algorithm-template-name"] == "hello"
        assert labels[f"{GROUP}/nexus-component"] == "algorithm-run"
        assert job["spec"]["template"]["spec"]["tolerations"][0]["key"] == "kwok.x-k8s.io/node"
        [pod] = wait_for(
            lambda: [
                p for p in kube.pods(namespace, run_id) if p["status"].get("phase") == "Running"
            ],
            60,
            "a Running Pod",
        )
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert pod["metadata"]["annotations"]["nexus.test/hold"] == "true"

        sent = act_as_algorithm(kube, namespace, "hello", run_id)
        done = finished(http, "hello", run_id)
        assert done["status"] == "COMPLETED", done
        assert httpx.get(done["resultUri"], timeout=10).content == sent
        metrics = http.get("/metrics").text
        assert (
            'nexus_kube_api_responses_total{code="201",shard="shard-a",verb="create"} 1.0'
            in metrics
        )


FAILURES = {
    # name: (annotations, template options, stage, cause, words in the details)
    "fatal-exit": (
        {"nexus.test/exit-code": "42", "nexus.test/run-duration": "300ms"},
        {"fatal": [42], "retries": 3},
        "FAILED",
        FATAL_CAUSE,
        "exit code 42",
    ),
    "pull-back-off": (
        {"nexus.test/image-pull-backoff": "true"},
        {},
        "SCHEDULING_FAILED",
        IMAGE_CAUSE,
        "ImagePullBackOff",
    ),
    "deadline": (
        {"nexus.test/hold": "true"},
        {"deadline": 3},
        "DEADLINE_EXCEEDED",
        DEADLINE_CAUSE,
        "deadline",
    ),
    "retry-limit": (
        {"nexus.test/exit-code": "3", "nexus.test/run-duration": "300ms"},
        {"retries": 0},
        "DEADLINE_EXCEEDED",
        DEADLINE_CAUSE,
        "backoff limit",
    ),
    "no-report": (
        {"nexus.test/run-duration": "300ms"},
        {},
        "FAILED",
        NO_REPORT_CAUSE,
        "CompletionsReached",
    ),
    "failed-create": (
        {},
        {"service_account": "no-such-account"},
        "SCHEDULING_FAILED",
        START_CAUSE,
        "no-such-account",
    ),
    "oom-killed": (
        {
            "nexus.test/exit-code": "137",
            "nexus.test/terminated-reason": "OOMKilled",
            "nexus.test/run-duration": "300ms",
        },
        {"retries": 0},
        "FAILED",
        OOM_CAUSE,
        "OOM-killed",
    ),
    "cannot-start": (
        {"nexus.test/waiting-reason": "CreateContainerConfigError"},
        {},
        "SCHEDULING_FAILED",
        START_CAUSE,
        "CreateContainerConfigError",
    ),
}


def test_each_failure_ends_in_its_stage_with_its_cause(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    workgroup(kube, namespace, "wg-a", "shard-a")
    for name, (pod_annotations, options, *_) in FAILURES.items():
        template(kube, namespace, name, pod_annotations, **options)
    nexus = start(nexus_factory, kubeconfig, namespace, tmp_path)
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        runs = {name: submit(http, name) for name in FAILURES}
        problems = []
        for name, (_, _, stage, cause, detail) in FAILURES.items():
            done = finished(http, name, runs[name], timeout=120)
            meta = done["meta"]
            print(
                f"{name}: {done['status']} | {done['runErrorMessage']} | "
                f"{meta['algorithm_failure_details']}"
            )
            if (
                done["status"] != stage
                or cause not in done["runErrorMessage"]
                or detail.lower() not in meta["algorithm_failure_details"].lower()
            ):
                problems.append(
                    f"{name}: {done['status']} {done['runErrorMessage']!r} "
                    f"details {meta['algorithm_failure_details']!r}"
                )
        assert not problems, "\n".join(problems) + "\n" + nexus.log()
        # The supervisor deleted every Job that failed (not the one that succeeded silently).
        for name in FAILURES:
            if name != "no-report":
                job_gone(kube, namespace, runs[name])


def test_cancel_parent_cancels_children_and_deletes_their_jobs(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    workgroup(kube, namespace, "wg-a", "shard-a")
    template(kube, namespace, "tree", {"nexus.test/hold": "true"})
    nexus = start(nexus_factory, kubeconfig, namespace, tmp_path)
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        parent = submit(http, "tree")
        parent_uid = wait_stage(http, "tree", parent, {"RUNNING"})["job_uid"]
        children = [
            submit(http, "tree", parentRequest={"requestId": parent, "algorithmName": "tree"})
            for _ in range(2)
        ]
        for child in children:
            wait_stage(http, "tree", child, {"RUNNING"})
            owners = kube.job(namespace, child)["metadata"]["ownerReferences"]
            assert [(o["kind"], o["uid"]) for o in owners] == [("Job", parent_uid)]
        response = http.post(
            f"{V1}/cancel/tree/requests/{parent}",
            json={"reason": "test", "initiator": "it", "cancellationPolicy": "Foreground"},
        )
        assert response.status_code == 200, response.text
        for run_id in (parent, *children):
            done = finished(http, "tree", run_id, timeout=30)
            assert done["status"] == "CANCELLED", done
            job_gone(kube, namespace, run_id, timeout=60)
        assert http.post(f"{V1}/cancel/tree/requests/{parent}", json={}).status_code == 409


def test_cancel_honours_the_propagation_policy(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    workgroup(kube, namespace, "wg-a", "shard-a")
    template(kube, namespace, "policy", {"nexus.test/hold": "true"})
    nexus = start(nexus_factory, kubeconfig, namespace, tmp_path)
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        orphaned, background = submit(http, "policy"), submit(http, "policy")
        pods = {}
        for run_id in (orphaned, background):
            wait_stage(http, "policy", run_id, {"RUNNING"})
            [pods[run_id]] = wait_for(
                lambda run_id=run_id: [
                    p["metadata"]["name"]
                    for p in kube.pods(namespace, run_id)
                    if p["status"].get("phase") == "Running"
                ],
                60,
                f"the Pod of {run_id}",
            )
        for run_id, policy in ((orphaned, "Orphan"), (background, "Background")):
            response = http.post(
                f"{V1}/cancel/policy/requests/{run_id}",
                json={"reason": "test", "initiator": "it", "cancellationPolicy": policy},
            )
            assert response.status_code == 200, response.text
            assert finished(http, "policy", run_id, timeout=10)["status"] == "CANCELLED"
            job_gone(kube, namespace, run_id)
        pod_path = f"/api/v1/namespaces/{namespace}/pods"
        wait_for(
            lambda: kube.call("GET", f"{pod_path}/{pods[background]}") is None,
            30,
            "the Pod of the Job deleted in the background to go",
        )
        # Orphan: the Job is gone, its Pod lives on without an owner.
        orphan = wait_for(
            lambda: (
                (p := kube.call("GET", f"{pod_path}/{pods[orphaned]}"))
                and not p["metadata"].get("ownerReferences")
                and p
            ),
            30,
            "the orphaned Pod to lose its owner",
        )
        assert orphan["status"]["phase"] == "Running"


def test_runs_are_routed_to_the_shard_of_their_workgroup(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    """Two shards on one control plane, told apart by namespace: each shard's kubeconfig
    names its own namespace in its context, which is where nexus puts that shard's Jobs
    and where it watches them. Templates and workgroups live in runtime-namespace."""
    other = kube.create_namespace(f"{namespace}-b")
    try:
        workgroup(kube, namespace, "wg-a", "shard-a")
        workgroup(kube, namespace, "wg-b", "shard-b")
        workgroup(kube, namespace, "wg-z", "shard-z")
        template(kube, namespace, "on-a", {"nexus.test/hold": "true"}, workgroup_name="wg-a")
        template(kube, namespace, "on-b", {"nexus.test/hold": "true"}, workgroup_name="wg-b")
        template(kube, namespace, "on-z", {}, workgroup_name="wg-z")
        nexus = start(
            nexus_factory,
            kubeconfig,
            namespace,
            tmp_path,
            shards={"shard-a": namespace, "shard-b": other},
        )
        with httpx.Client(base_url=nexus.url, timeout=60) as http:
            refused = http.post(f"{V1}/run/on-z", json={"algorithmParameters": {}})
            assert refused.status_code == 400 and "shard-z" in refused.text, refused.text
            runs = [("on-a", submit(http, "on-a")) for _ in range(3)]
            runs += [("on-b", submit(http, "on-b")) for _ in range(3)]
            for algorithm, run_id in runs:
                wait_stage(http, algorithm, run_id, {"RUNNING"})
            in_a = {j["metadata"]["name"] for j in kube.jobs(namespace)}
            in_b = {j["metadata"]["name"] for j in kube.jobs(other)}
            assert in_a == {r for a, r in runs if a == "on-a"}
            assert in_b == {r for a, r in runs if a == "on-b"}
            for algorithm, run_id in runs:
                act_as_algorithm(
                    kube, namespace if algorithm == "on-a" else other, algorithm, run_id
                )
            for algorithm, run_id in runs:
                done = finished(http, algorithm, run_id)
                assert done["status"] == "COMPLETED", done
                shard = json.loads(httpx.get(done["resultUri"], timeout=10).content)["shard"]
                assert shard == ("shard-a" if algorithm == "on-a" else "shard-b")
    finally:
        kube.delete_namespace(other)


def test_an_unreachable_shard_does_not_stop_supervision_of_the_others(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    """shard-down's API server does not answer (its kubeconfig names a closed port). The
    periodic re-list still judges shard-a: a run whose Job was deleted behind nexus's back
    there is failed as lost (only the re-list can see that), while shard-down's runs are
    left alone until their shard answers."""
    workgroup(kube, namespace, "wg-a", "shard-a")
    template(kube, namespace, "on-a", {"nexus.test/hold": "true"}, workgroup_name="wg-a")
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    shard_kubeconfig(kubeconfig, shard_dir / "shard-a.kubeconfig")
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    (shard_dir / "shard-down.kubeconfig").write_text(yaml.safe_dump(doc))
    nexus = nexus_factory(env=kube_env(kubeconfig, namespace, shard_dir))
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        run_id = submit(http, "on-a")
        wait_stage(http, "on-a", run_id, {"RUNNING"})
        kube.call(
            "DELETE",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{run_id}",
            ok=(200, 202),
            propagationPolicy="Background",
        )
        done = finished(http, "on-a", run_id, timeout=60)
        assert done["status"] == "FAILED", (done, nexus.log())
        assert done["runErrorMessage"] == LOST_CAUSE
    assert "shard shard-down did not answer" in nexus.log(), nexus.log()


def test_killed_scheduler_runs_are_launched_by_the_survivor_exactly_once(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    workgroup(kube, namespace, "wg-a", "shard-a")
    template(kube, namespace, "queued", {"nexus.test/hold": "true"})
    data_dir = tmp_path / "data"
    lease = {"NEXUS__SUPERVISOR__LEASE_TTL": "2s", "NEXUS__SUPERVISOR__HEARTBEAT_INTERVAL": "500ms"}
    slow = start(
        nexus_factory,
        kubeconfig,
        namespace,
        tmp_path,
        data_dir=data_dir,
        NEXUS__INSTANCE_ID="scheduler-1",
        NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND="2",
        NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST="1",
        **lease,
    )
    with httpx.Client(base_url=slow.url, timeout=60) as http:
        runs = [submit(http, "queued", {"i": i}) for i in range(20)]
    time.sleep(1.0)
    slow.kill()
    launched_before = {j["metadata"]["name"] for j in kube.jobs(namespace)}
    assert len(launched_before) < len(runs), "the queue drained before the kill; slow it down"

    survivor = start(
        nexus_factory,
        kubeconfig,
        namespace,
        tmp_path,
        data_dir=data_dir,
        NEXUS__INSTANCE_ID="scheduler-2",
        **lease,
    )
    with httpx.Client(base_url=survivor.url, timeout=60) as http:
        stages = {r: wait_stage(http, "queued", r, {"RUNNING"}, timeout=60) for r in runs}
    jobs = {j["metadata"]["name"]: j for j in kube.jobs(namespace)}
    assert sorted(jobs) == sorted(runs)  # one Job per accepted run, none missing, none extra
    for run_id, meta in stages.items():
        assert meta["job_uid"] == jobs[run_id]["metadata"]["uid"]


# --- every field of the Go system's CRDs ---------------------------------------------------

EVERY_FIELD = REPO / "tests" / "templates" / "every-field.yaml"


def _collection(namespace: str, kind: str) -> str:
    plural = {"NexusAlgorithmTemplate": "nexusalgorithmtemplates"}.get(
        kind, "nexusalgorithmworkgroups"
    )
    return f"/apis/{GROUP}/v1/namespaces/{namespace}/{plural}"


def test_crds_take_every_go_field_and_the_rendered_job_is_valid(kube, namespace):
    """The template using every field of the Go spec applies with strict field validation
    and comes back whole (nothing pruned); its Job, rendered by nexus from what the API
    server returns, passes the API server's own validation (a server-side dry run)."""
    specs = {}
    for doc in yaml.safe_load_all(EVERY_FIELD.read_text()):
        base = _collection(namespace, doc["kind"])
        kube.call("POST", base, doc, fieldValidation="Strict")
        stored = kube.call("GET", f"{base}/{doc['metadata']['name']}")
        assert stored["spec"] == doc["spec"]
        specs[doc["kind"]] = stored["spec"]
    job = render_job(
        msgspec.convert(specs["NexusAlgorithmTemplate"], AlgorithmSpec),
        msgspec.convert(specs["NexusAlgorithmWorkgroup"], WorkgroupSpec),
        JobContext(
            run_id=str(uuid.uuid4()),
            algorithm="every-field",
            cluster="shard-0",
            namespace=namespace,
            payload_url="https://p",
            nexus_version="v0.0.0",
        ),
    )
    kube.call(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        job,
        dryRun="All",
        fieldValidation="Strict",
    )


def test_crds_take_what_the_go_crds_take(kube, namespace):
    """A superset of the Go CRDs: values they admit (an integer quantity, a zero deadline,
    an empty image or cluster, exit code 0) apply unchanged, though nexus may refuse to
    run them later."""
    base = _collection(namespace, "NexusAlgorithmTemplate")
    template = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": "go-edges"},
        "spec": {
            "container": {"image": "", "registry": "", "versionTag": ""},
            "command": "",
            "computeResources": {
                "cpuLimit": "1",
                "memoryLimit": "1Gi",
                "defaultResourceQuota": "",
                "limits": {"cpu": 1, "memory": "1Gi"},
                "requests": {"cpu": "100m"},
            },
            "workgroupRef": {"name": "", "group": "", "kind": ""},
            "runtimeEnvironment": {"deadlineSeconds": 0, "maximumRetries": -1},
            "errorHandlingBehaviour": {"fatalExitCodes": [0], "transientExitCodes": [-1]},
            "payloadConfiguration": {"payloadValidFor": "", "payloadSerialization": "backend"},
            "datadogIntegrationSettings": {"mountDatadogSocket": False},
        },
    }
    kube.call("POST", base, template, fieldValidation="Strict")
    assert kube.call("GET", f"{base}/go-edges")["spec"] == template["spec"]
    workgroups = _collection(namespace, "NexusAlgorithmWorkgroup")
    workgroup = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": "go-edges"},
        "spec": {"description": "", "cluster": ""},
    }
    kube.call("POST", workgroups, workgroup, fieldValidation="Strict")


def test_a_field_no_crd_knows_is_refused_by_the_api_server(kube, namespace):
    doc = next(
        d
        for d in yaml.safe_load_all(EVERY_FIELD.read_text())
        if d["kind"] == "NexusAlgorithmTemplate"
    )
    doc["spec"]["runtimeEnvironment"]["deadlineSecond"] = 5
    answer = kube.call(
        "POST",
        _collection(namespace, doc["kind"]),
        doc,
        ok=(400, 422),
        fieldValidation="Strict",
    )
    assert "deadlineSecond" in json.dumps(answer)


def test_every_field_reaches_the_job_and_a_refused_template_says_why(
    kube, kubeconfig, namespace, tmp_path, nexus_factory
):
    """Through a running nexus reading the cluster: the every-field template's Job carries
    its volumes, quota and custom resources; a template the CRD admits but nexus cannot
    use (a quota that is no fraction, a payload kept in the run store) is refused at
    submission with the field named, not taken for an unknown template."""
    workgroup(kube, namespace, "wg-a", "shard-a")
    doc = next(
        d
        for d in yaml.safe_load_all(EVERY_FIELD.read_text())
        if d["kind"] == "NexusAlgorithmTemplate"
    )
    doc["spec"]["workgroupRef"]["name"] = "wg-a"
    base = _collection(namespace, doc["kind"])
    kube.apply(base, doc)
    bad_quota = json.loads(json.dumps(doc))
    bad_quota["metadata"]["name"] = "bad-quota"
    bad_quota["spec"]["computeResources"]["defaultResourceQuota"] = "10%"
    kube.apply(base, bad_quota)
    backend = json.loads(json.dumps(doc))
    backend["metadata"]["name"] = "in-backend"
    backend["spec"]["payloadConfiguration"]["payloadSerialization"] = "backend"
    kube.apply(base, backend)
    nexus = start(nexus_factory, kubeconfig, namespace, tmp_path)
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        run_id = submit_when_known(http, "every-field")
        job = json.loads(http.get(f"{V1}/buffer/every-field/requests/{run_id}").text)
        pod_spec = job["spec"]["template"]["spec"]
        assert [v["name"] for v in pod_spec["volumes"]] == [
            "dsdsocket",
            "config",
            "credentials",
            "scratch",
            "cache",
        ]
        assert pod_spec["containers"][0]["resources"]["requests"] == {
            "cpu": "500m",
            "memory": "4Gi",
            "nvidia.com/gpu": "1",
        }
        assert metadata(http, "every-field", run_id)["payload_valid_for"] == "6h"
        refused = http.post(f"{V1}/run/bad-quota", json={"algorithmParameters": {}})
        assert refused.status_code == 400 and "defaultResourceQuota" in refused.text
        refused = http.post(f"{V1}/run/in-backend", json={"algorithmParameters": {}})
        assert refused.status_code == 400
        assert "payloadConfiguration.payloadSerialization" in refused.text
