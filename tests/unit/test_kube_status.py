"""The Kubernetes backend without a cluster: Job/Pod status -> Outcome, the watch cache,
the launcher's answers to API server replies, shard discovery and the CRD schemas.

The Job, Pod and Event dicts are copies of objects recorded from the test control plane
(kube-apiserver + kube-controller-manager 1.36 with KWOK, scripts/testenv kube), with
names and uids replaced, ``managedFields`` and pod-template details cut; the variants
(conditions, container states) are the ones the Job controller and KWOK wrote there.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import yaml

from nexus.backends.k8s.client import (
    ApiMetrics,
    ListWatch,
    Response,
    ShardClient,
    ShardConfig,
)
from nexus.backends.k8s.launcher import KubernetesLauncher, launch_error
from nexus.backends.k8s.shards import discover_shards
from nexus.backends.k8s.status import Event, Job, Pod, job_verdict
from nexus.backends.k8s.templates import CustomResource, _Cache
from nexus.backends.k8s.watcher import _FirstSeen, _ShardView, observe
from nexus.core.models import AlgorithmSpec, Template, WorkgroupSpec
from nexus.core.ports import Outcome
from nexus.errors import BadRequest, ConfigError, LaunchError
from nexus.metrics import Metrics
from nexus.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "6f1c2a8e-3b1d-4d7e-9f4a-0c2b5e8d7a10"
JOB_UID = "0b4f3c61-77a2-4a8e-8d0e-2b3e6f9a1c55"
T0 = "2026-11-29T10:15:02Z"
T1 = "2026-11-29T10:15:09Z"

# --- recorded objects --------------------------------------------------------------------

JOB_ACTIVE = {
    "kind": "Job",
    "apiVersion": "batch/v1",
    "metadata": {
        "name": RUN_ID,
        "namespace": "nexus-test",
        "uid": JOB_UID,
        "resourceVersion": "2659",
        "generation": 1,
        "creationTimestamp": "2026-11-29T10:15:01Z",
        "labels": {
            "science.sneaksanddata.com/algorithm-template-name": "behave",
            "science.sneaksanddata.com/nexus-component": "algorithm-run",
            "science.sneaksanddata.com/nexus-version": "0.1.0",
        },
        "annotations": {"nexus.test/hold": "true"},
    },
    "spec": {
        "parallelism": 1,
        "completions": 1,
        "activeDeadlineSeconds": 60,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            ]
        },
        "backoffLimit": 0,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": JOB_UID}},
        "manualSelector": False,
        "completionMode": "NonIndexed",
        "suspend": False,
        "podReplacementPolicy": "Failed",
    },
    "status": {
        "startTime": T0,
        "active": 1,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "ready": 1,
    },
}

POD_RUNNING = {
    "metadata": {
        "name": f"{RUN_ID}-gsjlk",
        "generateName": f"{RUN_ID}-",
        "namespace": "nexus-test",
        "uid": "88899439-4b52-4a8e-a8f0-8660b0d33c90",
        "resourceVersion": "2643",
        "generation": 1,
        "creationTimestamp": T0,
        "labels": {
            "batch.kubernetes.io/controller-uid": JOB_UID,
            "batch.kubernetes.io/job-name": RUN_ID,
            "controller-uid": JOB_UID,
            "job-name": RUN_ID,
            "science.sneaksanddata.com/algorithm-template-name": "behave",
            "science.sneaksanddata.com/nexus-component": "algorithm-run",
        },
        "annotations": {"nexus.test/hold": "true"},
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": RUN_ID,
                "uid": JOB_UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "finalizers": ["batch.kubernetes.io/job-tracking"],
    },
    "spec": {
        "nodeName": "kwok-node-1",
        "restartPolicy": "Never",
        "containers": [{"name": RUN_ID, "image": "test.local/behave:1"}],
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": T0,
            },
            {
                "type": "Initialized",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": T0,
            },
            {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": T0},
            {
                "type": "ContainersReady",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": T0,
            },
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": T0,
            },
        ],
        "hostIP": "127.0.0.1",
        "podIP": "198.18.0.27",
        "podIPs": [{"ip": "198.18.0.27"}],
        "startTime": T0,
        "containerStatuses": [
            {
                "name": RUN_ID,
                "state": {"running": {"startedAt": T0}},
                "lastState": {},
                "ready": True,
                "restartCount": 0,
                "image": "test.local/behave:1",
                "imageID": "",
                "started": True,
            }
        ],
        "qosClass": "BestEffort",
    },
}


def job(**status: Any) -> dict:
    obj = copy.deepcopy(JOB_ACTIVE)
    obj["status"] = {
        "startTime": T0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "ready": 0,
        **status,
    }
    return obj


def condition(type_: str, reason: str, message: str, at: str = T1) -> dict:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": at,
        "lastTransitionTime": at,
    }


def pod(phase: str = "Running", **container_status: Any) -> dict:
    obj = copy.deepcopy(POD_RUNNING)
    obj["status"]["phase"] = phase
    obj["status"]["containerStatuses"][0].update(container_status)
    return obj


def waiting(reason: str, message: str) -> dict:
    return {
        "ready": False,
        "started": False,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


def terminated(code: int, reason: str) -> dict:
    return {
        "ready": False,
        "started": False,
        "state": {
            "terminated": {"exitCode": code, "reason": reason, "startedAt": T0, "finishedAt": T1}
        },
    }


FAILED_CREATE_EVENT = {
    "metadata": {
        "name": f"{RUN_ID}.18ec7d1cbfb38203",
        "namespace": "nexus-test",
        "uid": "574f6d0e-3d4d-4cbe-9939-58862a109e18",
        "resourceVersion": "2826",
        "creationTimestamp": T1,
    },
    "involvedObject": {
        "kind": "Job",
        "namespace": "nexus-test",
        "name": RUN_ID,
        "uid": JOB_UID,
        "apiVersion": "batch/v1",
        "resourceVersion": "2558",
    },
    "reason": "FailedCreate",
    "message": f'Error creating: pods "{RUN_ID}-" is forbidden: error looking up service '
    'account nexus-test/no-such-account: serviceaccount "no-such-account" not found',
    "source": {"component": "job-controller"},
    "firstTimestamp": T0,
    "lastTimestamp": T1,
    "count": 3,
    "type": "Warning",
    "eventTime": None,
    "reportingComponent": "job-controller",
    "reportingInstance": "",
}


def verdict(job_dict: dict, *pods: dict, event: dict | None = None):
    return job_verdict(
        msgspec.convert(job_dict, Job),
        [msgspec.convert(p, Pod) for p in pods],
        msgspec.convert(event, Event) if event else None,
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- status -> Outcome -------------------------------------------------------------------


class TestJobVerdict:
    def test_running_pod_is_running_with_its_node(self):
        v = verdict(JOB_ACTIVE, POD_RUNNING)
        assert v.outcome is Outcome.RUNNING
        assert v.since == at(T0)
        assert "kwok-node-1" in v.message

    def test_job_without_pods_is_running(self):
        v = verdict(job(active=0))
        assert (v.outcome, v.message) == (Outcome.RUNNING, "Job accepted, no pod yet")

    def test_complete_is_succeeded_since_the_condition(self):
        done = job(
            succeeded=1,
            completionTime=T1,
            conditions=[
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                condition(
                    "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
                ),
            ],
        )
        v = verdict(done, pod("Succeeded", **terminated(0, "Completed")))
        assert v.outcome is Outcome.SUCCEEDED
        assert v.since == at(T1)
        assert "CompletionsReached" in v.message

    def test_fatal_exit_code_is_fatal_exit(self):
        message = (
            f"Container {RUN_ID} for pod nexus-test/{RUN_ID}-gsjlk failed with exit code 42 "
            "matching FailJob rule at index 1"
        )
        failed = job(
            failed=1,
            conditions=[
                condition("FailureTarget", "PodFailurePolicy", message),
                condition("Failed", "PodFailurePolicy", message),
            ],
        )
        v = verdict(failed, pod("Failed", **terminated(42, "Error")))
        assert v.outcome is Outcome.FATAL_EXIT
        assert "exit code 42" in v.message and v.since == at(T1)

    def test_failure_target_alone_is_enough(self):
        failed = job(
            active=1,
            conditions=[
                condition(
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            ],
        )
        assert verdict(failed, POD_RUNNING).outcome is Outcome.DEADLINE_EXCEEDED

    def test_deadline_exceeded(self):
        failed = job(
            failed=1,
            conditions=[
                condition(
                    "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
                )
            ],
        )
        v = verdict(failed, pod("Failed", **terminated(137, "OOMKilled")))
        assert v.outcome is Outcome.DEADLINE_EXCEEDED  # the deadline is the cause, not the kill
        assert "deadline" in v.message

    def test_backoff_limit(self):
        failed = job(
            failed=2,
            conditions=[
                condition(
                    "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
            ],
        )
        v = verdict(failed, pod("Failed", **terminated(3, "Error")))
        assert v.outcome is Outcome.BACKOFF_LIMIT
        assert "backoff limit" in v.message

    def test_unknown_failure_reason_counts_as_retry_limit(self):
        failed = job(
            failed=1, conditions=[condition("Failed", "MaxFailedIndexesExceeded", "too many")]
        )
        assert verdict(failed).outcome is Outcome.BACKOFF_LIMIT

    def test_oom_kill_that_failed_the_job_is_oom_killed(self):
        failed = job(
            failed=1,
            conditions=[
                condition(
                    "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
            ],
        )
        v = verdict(failed, pod("Failed", **terminated(137, "OOMKilled")))
        assert v.outcome is Outcome.OOM_KILLED
        assert "OOM-killed" in v.message and "backoff limit" in v.message

    def test_oom_kill_with_retries_left_is_still_running(self):
        v = verdict(job(active=0, failed=1), pod("Failed", **terminated(137, "OOMKilled")))
        assert v.outcome is Outcome.RUNNING
        assert "1 failed attempt" in v.message

    @pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
    def test_image_pull_back_off_since_the_pod_started(self, reason):
        stuck = pod("Pending", **waiting(reason, 'Back-off pulling image "test.local/behave:1"'))
        stuck["status"]["startTime"] = "2026-11-29T10:15:03Z"
        v = verdict(JOB_ACTIVE, stuck)
        assert v.outcome is Outcome.IMAGE_PULL_BACKOFF
        assert v.since == at("2026-11-29T10:15:03Z")
        assert "Back-off pulling image" in v.message

    def test_crash_loop_has_no_timestamp_of_its_own(self):
        crashing = pod(
            "Running",
            restartCount=4,
            **waiting("CrashLoopBackOff", "back-off 40s restarting failed container"),
        )
        v = verdict(JOB_ACTIVE, crashing)
        assert (v.outcome, v.since) == (Outcome.CRASH_BACKOFF, None)
        assert "restarted 4 times" in v.message

    @pytest.mark.parametrize(
        "reason",
        [
            "CreateContainerConfigError",
            "InvalidImageName",
            "CreateContainerError",
            "RunContainerError",
        ],
    )
    def test_container_that_cannot_start(self, reason):
        v = verdict(JOB_ACTIVE, pod("Pending", **waiting(reason, 'secret "db-password" not found')))
        assert v.outcome is Outcome.FAILED_TO_START
        assert reason in v.message and "db-password" in v.message

    def test_start_failure_wins_over_back_off_in_another_pod(self):
        first = pod("Pending", **waiting("ImagePullBackOff", "Back-off"))
        second = pod("Pending", **waiting("CreateContainerConfigError", "no secret"))
        second["metadata"]["name"] += "-b"
        assert verdict(JOB_ACTIVE, first, second).outcome is Outcome.FAILED_TO_START

    def test_init_container_back_off_counts(self):
        stuck = copy.deepcopy(POD_RUNNING)
        stuck["status"]["phase"] = "Pending"
        stuck["status"]["initContainerStatuses"] = [
            {"name": "init", "restartCount": 0, **waiting("ErrImagePull", "not found")}
        ]
        assert verdict(JOB_ACTIVE, stuck).outcome is Outcome.IMAGE_PULL_BACKOFF

    def test_pods_going_away_are_ignored(self):
        leaving = pod("Pending", **waiting("ImagePullBackOff", "Back-off"))
        leaving["metadata"]["deletionTimestamp"] = T1
        assert verdict(JOB_ACTIVE, leaving).outcome is Outcome.RUNNING

    def test_failed_create_without_any_pod(self):
        v = verdict(job(active=0), event=FAILED_CREATE_EVENT)
        assert v.outcome is Outcome.FAILED_TO_START
        assert v.message.startswith("FailedCreate: Error creating")
        assert "no-such-account" in v.message

    def test_failed_create_is_ignored_once_a_pod_exists(self):
        # Events are lossy and stale: the status (a Pod exists) decides.
        assert (
            verdict(JOB_ACTIVE, POD_RUNNING, event=FAILED_CREATE_EVENT).outcome is Outcome.RUNNING
        )


class TestObserve:
    def test_only_run_jobs_that_are_not_being_deleted(self):
        memory = _FirstSeen()
        plain = copy.deepcopy(JOB_ACTIVE)
        del plain["metadata"]["labels"]["science.sneaksanddata.com/algorithm-template-name"]
        assert observe("a", msgspec.convert(plain, Job), [], None, memory) is None
        leaving = copy.deepcopy(JOB_ACTIVE)
        leaving["metadata"]["deletionTimestamp"] = T1
        assert observe("a", msgspec.convert(leaving, Job), [], None, memory) is None

    def test_observation_names_the_run(self):
        obs = observe(
            "shard-a",
            msgspec.convert(JOB_ACTIVE, Job),
            [msgspec.convert(POD_RUNNING, Pod)],
            None,
            _FirstSeen(),
        )
        assert (obs.algorithm, obs.run_id, obs.cluster, obs.outcome) == (
            "behave",
            RUN_ID,
            "shard-a",
            Outcome.RUNNING,
        )

    def test_first_seen_is_kept_while_the_outcome_stays(self):
        clock = iter(at(T0) + timedelta(seconds=n) for n in range(10))
        memory = _FirstSeen(now=lambda: next(clock))
        crashing = msgspec.convert(pod("Running", **waiting("CrashLoopBackOff", "back-off")), Pod)
        the_job = msgspec.convert(JOB_ACTIVE, Job)
        first = observe("a", the_job, [crashing], None, memory)
        again = observe("a", the_job, [crashing], None, memory)
        assert first.outcome is Outcome.CRASH_BACKOFF and first.since == again.since == at(T0)
        no_start = job(active=0)
        del no_start["status"]["startTime"]
        assert observe("a", msgspec.convert(no_start, Job), [], None, memory).since == at(
            T0
        ) + timedelta(seconds=1)
        later = observe("a", the_job, [crashing], None, memory)
        assert later.since == at(T0) + timedelta(seconds=2)  # a new back-off counts afresh


# --- the watch cache ---------------------------------------------------------------------


def dummy_client(namespace: str = "nexus-test", **kwargs: Any) -> ShardClient:
    from kubernetes.client import Configuration

    configuration = Configuration()
    configuration.host = kwargs.pop("host", "http://127.0.0.1:9")
    return ShardClient(
        ShardConfig("shard-a", configuration, namespace, "test"),
        qps=kwargs.pop("qps", 0),
        burst=kwargs.pop("burst", 10),
        **kwargs,
    )


class TestShardView:
    def make(self):
        queue: asyncio.Queue = asyncio.Queue()
        client = dummy_client()
        view = _ShardView(client, queue, _FirstSeen())
        return view, queue, client

    def drain(self, queue: asyncio.Queue) -> list:
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items

    async def test_emits_each_outcome_change_once(self):
        view, queue, client = self.make()
        the_job = msgspec.convert(JOB_ACTIVE, Job)
        view._reset_jobs([the_job])
        view._reset_pods([msgspec.convert(POD_RUNNING, Pod)])
        assert [o.outcome for o in self.drain(queue)] == [Outcome.RUNNING]
        view._pod_events([("MODIFIED", msgspec.convert(POD_RUNNING, Pod))])
        assert self.drain(queue) == []
        stuck = pod("Running", **waiting("CrashLoopBackOff", "back-off"))
        view._pod_events([("MODIFIED", msgspec.convert(stuck, Pod))])
        assert [o.outcome for o in self.drain(queue)] == [Outcome.CRASH_BACKOFF]
        done = job(succeeded=1, conditions=[condition("Complete", "CompletionsReached", "done")])
        view._job_events([("MODIFIED", msgspec.convert(done, Job))])
        [obs] = self.drain(queue)
        assert (obs.outcome, obs.since) == (Outcome.SUCCEEDED, at(T1))
        client.close()

    async def test_deleted_job_is_forgotten_and_failed_create_applies(self):
        view, queue, client = self.make()
        view._job_events([("ADDED", msgspec.convert(job(active=0), Job))])
        assert [o.outcome for o in self.drain(queue)] == [Outcome.RUNNING]
        view._failure_events([("ADDED", msgspec.convert(FAILED_CREATE_EVENT, Event))])
        [obs] = self.drain(queue)
        assert obs.outcome is Outcome.FAILED_TO_START and "no-such-account" in obs.message
        view._job_events([("DELETED", msgspec.convert(job(active=0), Job))])
        view._job_events([("ADDED", msgspec.convert(job(active=0), Job))])
        # a deleted Job takes its Events along: it starts afresh
        assert [o.outcome for o in self.drain(queue)] == [Outcome.RUNNING]
        view._reset_jobs([])
        view._pod_events([("ADDED", msgspec.convert(POD_RUNNING, Pod))])
        assert self.drain(queue) == []
        client.close()


# --- templates cache ---------------------------------------------------------------------


def resource(name: str, spec: dict) -> CustomResource:
    return msgspec.json.decode(
        json.dumps({"metadata": {"name": name}, "spec": spec}), type=CustomResource
    )


class TestTemplateCache:
    SPEC: ClassVar[dict] = {
        "container": {"image": "behave", "registry": "test.local", "versionTag": "1"},
        "command": "python main.py",
        "workgroupRef": {"name": "wg"},
    }

    def test_reset_apply_and_invalid_edits(self):
        cache = _Cache("NexusAlgorithmTemplate", AlgorithmSpec, Template)
        cache.reset([resource("a", self.SPEC), resource("broken", {"command": 1})])
        assert set(cache.items) == {"a"}
        assert cache.items["a"].spec.container.image == "behave"
        cache.apply([("MODIFIED", resource("a", {"command": "no container"}))])
        assert cache.items["a"].spec.command == "python main.py"  # last good version kept
        cache.apply([("ADDED", resource("b", self.SPEC)), ("DELETED", resource("a", {}))])
        assert set(cache.items) == {"b"}

    def test_labels_and_annotations_reach_the_template(self):
        cache = _Cache("NexusAlgorithmTemplate", AlgorithmSpec, Template)
        meta = {
            "name": "a",
            "resourceVersion": "7",
            "labels": {"science.sneaksanddata.com/tenant": "t"},
            "annotations": {"science.sneaksanddata.com/run-groups": "team-a"},
        }
        document = json.dumps({"metadata": meta, "spec": self.SPEC})
        cache.reset([msgspec.json.decode(document, type=CustomResource)])
        template = cache.items["a"]
        assert template.labels == {"science.sneaksanddata.com/tenant": "t"}
        assert template.annotations == {"science.sneaksanddata.com/run-groups": "team-a"}

    def test_a_refused_resource_answers_why(self):
        """A template with a key nexus does not know is not served, and a run of it is a
        400 naming the key, not an 'unknown template'."""
        cache = _Cache("NexusAlgorithmTemplate", AlgorithmSpec, Template)
        typo = {**self.SPEC, "runtimeEnvironment": {"deadlineSecond": 5}}
        cache.reset([resource("typo", typo)])
        with pytest.raises(BadRequest, match=r"'typo' cannot be used: .*deadlineSecond"):
            cache.get("typo")
        assert cache.get("never-applied") is None
        cache.apply([("MODIFIED", resource("typo", self.SPEC))])
        assert cache.get("typo") is not None and not cache.invalid
        cache.apply([("MODIFIED", resource("typo", typo))])
        assert cache.get("typo") is not None  # the last good version is still served
        cache.apply([("DELETED", resource("typo", {}))])
        assert cache.get("typo") is None


# --- the launcher against a fake API server ---------------------------------------------


class FakeApiServer:
    """Answers from a table of (method, path prefix) -> [(status, body), ...]; the last
    answer repeats; a list body is sent as JSON lines (a watch stream)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body))
                for (method, prefix), replies in fake.answers.items():
                    if method == self.command and self.path.startswith(prefix) and replies:
                        status, reply = replies.pop(0) if len(replies) > 1 else replies[0]
                        break
                else:
                    status, reply = (
                        404,
                        {
                            "kind": "Status",
                            "code": 404,
                            "reason": "NotFound",
                            "message": "not found",
                        },
                    )
                data = (
                    b"".join(json.dumps(item).encode() + b"\n" for item in reply)
                    if isinstance(reply, list)
                    else json.dumps(reply).encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.close()


def status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


JOBS = "/apis/batch/v1/namespaces/ns-a/jobs"
MANIFEST = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": RUN_ID, "namespace": "default"},
    "spec": {},
}


class TestLauncher:
    def launcher(self, api: FakeApiServer, metrics: Metrics | None = None, **kwargs: Any):
        client = dummy_client("ns-a", host=api.url, metrics=ApiMetrics(metrics), **kwargs)
        return KubernetesLauncher({"shard-a": client}), client

    async def test_create_in_the_shard_namespace_and_count_answers(self, api):
        api.answers[("POST", JOBS)] = [(201, {"metadata": {"uid": JOB_UID}})]
        metrics = Metrics()
        launcher, client = self.launcher(api, metrics)
        assert await launcher.launch("shard-a", MANIFEST) == JOB_UID
        method, path, body = api.requests[0]
        assert (method, path) == ("POST", JOBS)
        assert (
            body["metadata"]["namespace"] == "ns-a"
            and MANIFEST["metadata"]["namespace"] == "default"
        )
        assert (
            'nexus_kube_api_responses_total{code="201",shard="shard-a",verb="create"} 1.0'
            in metrics.render().decode()
        )
        client.close()

    async def test_already_exists_reads_the_existing_uid(self, api):
        api.answers[("POST", JOBS)] = [(409, status(409, "AlreadyExists", "already exists"))]
        api.answers[("GET", f"{JOBS}/{RUN_ID}")] = [(200, {"metadata": {"uid": "existing-uid"}})]
        launcher, client = self.launcher(api)
        assert await launcher.launch("shard-a", MANIFEST) == "existing-uid"
        client.close()

    async def test_invalid_job_is_not_retried_and_says_why(self, api):
        message = 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'
        api.answers[("POST", JOBS)] = [(422, status(422, "Invalid", message))]
        launcher, client = self.launcher(api)
        with pytest.raises(LaunchError) as caught:
            await launcher.launch("shard-a", MANIFEST)
        assert not caught.value.retryable
        assert "Required value" in caught.value.message and "shard-a" in caught.value.message
        client.close()

    @pytest.mark.parametrize("code", [429, 500, 503, 504])
    async def test_throttling_and_server_errors_are_retried(self, api, code):
        api.answers[("POST", JOBS)] = [(code, status(code, "TooManyRequests", "slow down"))]
        launcher, client = self.launcher(api)
        with pytest.raises(LaunchError) as caught:
            await launcher.launch("shard-a", MANIFEST)
        assert caught.value.retryable
        client.close()

    async def test_unreachable_api_server_is_retried(self):
        launcher = KubernetesLauncher({"shard-a": dummy_client("ns-a")})
        with pytest.raises(LaunchError) as caught:
            await launcher.launch("shard-a", MANIFEST)
        assert caught.value.retryable and "did not answer" in caught.value.message

    async def test_unknown_shard_is_not_retried(self, api):
        launcher, client = self.launcher(api)
        with pytest.raises(LaunchError) as caught:
            await launcher.launch("shard-z", MANIFEST)
        assert not caught.value.retryable and "shard-a" in caught.value.message
        client.close()

    async def test_delete_with_policy_and_grace(self, api):
        api.answers[("DELETE", f"{JOBS}/{RUN_ID}")] = [
            (200, {"kind": "Status", "status": "Success"})
        ]
        launcher, client = self.launcher(api)
        assert await launcher.delete("shard-a", RUN_ID, "Foreground", grace=0)
        assert api.requests[-1][2] == {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Foreground",
            "gracePeriodSeconds": 0,
        }
        assert not await launcher.delete("shard-a", "other-run", "Background")
        client.close()

    async def test_client_qps_limit_paces_requests(self, api):
        api.answers[("POST", JOBS)] = [(201, {"metadata": {"uid": JOB_UID}})]
        launcher, client = self.launcher(api, qps=20, burst=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(launcher.launch("shard-a", MANIFEST) for _ in range(6)))
        assert loop.time() - started >= 5 / 20 * 0.9
        client.close()


class TestListWatch:
    JOBS_URL = "/apis/batch/v1/namespaces/ns-a/jobs"

    @pytest.mark.parametrize("gone", ["error-event", "http-410"])
    async def test_lists_watches_and_lists_again_when_the_version_is_gone(self, api, gone):
        api.answers[("GET", f"{self.JOBS_URL}?limit")] = [
            (200, {"metadata": {"resourceVersion": "10"}, "items": [JOB_ACTIVE]})
        ]
        added = {
            "type": "ADDED",
            "object": {
                **JOB_ACTIVE,
                "metadata": {**JOB_ACTIVE["metadata"], "name": "second", "resourceVersion": "11"},
            },
        }
        expired = {
            "type": "ERROR",
            "object": status(410, "Expired", "too old resource version: 10 (11)"),
        }
        # A watch answers one event, then says its resourceVersion is gone (as an ERROR
        # event in a 200 stream, or as a plain 410), which must lead to a fresh list.
        if gone == "error-event":
            api.answers[("GET", f"{self.JOBS_URL}?watch")] = [(200, [added, expired])]
        else:
            api.answers[("GET", f"{self.JOBS_URL}?watch")] = [
                (200, [added]),
                (410, expired["object"]),
            ]
        client = dummy_client("ns-a", host=api.url)
        resets: list[list[str]] = []
        events: list[tuple[str, str]] = []
        relisted = asyncio.Event()

        def on_reset(items: list[Job]) -> None:
            resets.append([j.metadata.name for j in items])
            if len(resets) == 2:
                relisted.set()

        stream = ListWatch(
            client,
            self.JOBS_URL,
            Job,
            on_reset=on_reset,
            on_events=lambda batch: events.extend((k, j.metadata.name) for k, j in batch),
        )
        stream.start()
        await asyncio.wait_for(relisted.wait(), 10)
        await stream.stop()
        client.close()
        assert stream.synced.is_set()
        assert resets[:2] == [[RUN_ID], [RUN_ID]]
        assert events[0] == ("ADDED", "second")
        watches = [path for method, path, _ in api.requests if "watch=true" in path]
        assert "resourceVersion=10" in watches[0] and "allowWatchBookmarks=true" in watches[0]


@pytest.mark.parametrize(
    "code,reason,message,retryable",
    [
        (
            403,
            "Forbidden",
            'jobs.batch "x" is forbidden: exceeded quota: runs, requested: count/jobs.batch=1',
            True,
        ),
        (403, "Forbidden", 'User "nexus" cannot create resource "jobs"', False),
        (400, "BadRequest", "the server rejected our request", False),
        (404, "NotFound", 'namespaces "nexus" not found', False),
        (401, "Unauthorized", "Unauthorized", True),
    ],
)
def test_launch_error_classification(code, reason, message, retryable):
    error = launch_error(
        "shard-a", Response(code, json.dumps(status(code, reason, message)).encode())
    )
    assert error.retryable is retryable
    assert message in error.message
    if code == 404:
        assert "namespace" in error.message


def test_launch_error_with_a_non_json_body():
    error = launch_error("shard-a", Response(502, b"<html>Bad Gateway</html>"))
    assert error.retryable and "Bad Gateway" in error.message


# --- shard discovery ---------------------------------------------------------------------


def kubeconfig(namespace: str | None = None, server: str = "https://127.0.0.1:6443") -> str:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "x",
            "clusters": [
                {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "u", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "x", "context": context}],
        }
    )


class TestDiscoverShards:
    def test_every_kubeconfig_file_is_a_shard(self, tmp_path):
        (tmp_path / "shard-a.kubeconfig").write_text(kubeconfig())
        (tmp_path / "shard-b.eu-west.kubeconfig").write_text(
            kubeconfig("runs-b", "https://10.0.0.2")
        )
        (tmp_path / "README.md").write_text("not a shard")
        settings = load_settings(
            environ={}, shard_kube_config_path=str(tmp_path), runtime_namespace="runs"
        )
        shards = {s.name: s for s in discover_shards(settings)}
        assert set(shards) == {"shard-a", "shard-b"}
        assert shards["shard-a"].namespace == "runs"
        assert shards["shard-b"].namespace == "runs-b"
        assert shards["shard-b"].configuration.host == "https://10.0.0.2"
        assert (
            shards["shard-a"].configuration.auth_settings()["BearerToken"]["value"]
            == "Bearer t0ken"
        )

    def test_in_cluster_shard_from_kube_config_path(self, tmp_path):
        home = tmp_path / "home.yaml"
        home.write_text(kubeconfig("ignored"))
        settings = load_settings(
            environ={},
            kube_config_path=str(home),
            runtime_namespace="runs",
            kubernetes={"in-cluster-shard": "local"},
        )
        [shard] = discover_shards(settings)
        assert (shard.name, shard.namespace) == ("local", "runs")

    @pytest.mark.parametrize(
        "setup,problem",
        [
            ({}, "has no shard"),
            ({"kubernetes": {"in-cluster-shard": "local"}}, "needs the cluster nexus runs in"),
            ({"shard_kube_config_path": "/nonexistent/shards"}, "is not a folder"),
        ],
    )
    def test_unusable_configurations_are_named(self, setup, problem, monkeypatch):
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        with pytest.raises(ConfigError, match=problem):
            discover_shards(load_settings(environ={}, **setup))

    def test_duplicate_and_broken_files(self, tmp_path):
        (tmp_path / "a.kubeconfig").write_text(kubeconfig())
        (tmp_path / "a.second.kubeconfig").write_text(kubeconfig())
        with pytest.raises(ConfigError, match="defined twice"):
            discover_shards(load_settings(environ={}, shard_kube_config_path=str(tmp_path)))
        (tmp_path / "a.second.kubeconfig").unlink()
        (tmp_path / "b.kubeconfig").write_text("clusters: [")
        with pytest.raises(ConfigError, match="b.kubeconfig"):
            discover_shards(load_settings(environ={}, shard_kube_config_path=str(tmp_path)))


# --- the CRDs follow the models ----------------------------------------------------------


def struct_schema_mismatches(struct_type: type, schema: dict, path: str) -> list[str]:
    """Differences between a msgspec Struct and an openAPIV3Schema object, field by field."""
    info = msgspec.inspect.type_info(struct_type)
    problems: list[str] = []
    properties = schema.get("properties", {})
    fields = {f.encode_name: f for f in info.fields}
    if set(fields) != set(properties):
        problems.append(f"{path}: model {sorted(fields)} != CRD {sorted(properties)}")
    required = {name for name, f in fields.items() if f.required}
    if required != set(schema.get("required", [])):
        problems.append(f"{path}: required {sorted(required)} != CRD {schema.get('required', [])}")
    for name, field in fields.items():
        prop = properties.get(name)
        if prop is None:
            continue
        kind = field.type
        if isinstance(kind, msgspec.inspect.UnionType):  # X | None
            kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
        expected = {
            msgspec.inspect.StrType: "string",
            msgspec.inspect.IntType: "integer",
            msgspec.inspect.BoolType: "boolean",
            msgspec.inspect.ListType: "array",
            msgspec.inspect.DictType: "object",
            msgspec.inspect.StructType: "object",
        }[type(kind)]
        if prop.get("type") != expected:
            problems.append(f"{path}.{name}: model {expected} != CRD {prop.get('type')}")
        if isinstance(kind, msgspec.inspect.StructType):
            problems += struct_schema_mismatches(kind.cls, prop, f"{path}.{name}")
        value = getattr(kind, "value_type", None)
        if isinstance(value, msgspec.inspect.StructType):  # name -> Struct, e.g. mounts
            problems += struct_schema_mismatches(
                value.cls, prop.get("additionalProperties", {}), f"{path}.{name}.*"
            )
        passthrough = isinstance(
            kind, (msgspec.inspect.ListType, msgspec.inspect.DictType)
        ) and isinstance(
            getattr(kind, "item_type", getattr(kind, "value_type", None)),
            (msgspec.inspect.DictType, msgspec.inspect.AnyType),
        )
        preserved = prop.get("x-kubernetes-preserve-unknown-fields") or (
            prop.get("items", {}).get("x-kubernetes-preserve-unknown-fields")
        )
        if bool(passthrough) != bool(preserved):
            problems.append(
                f"{path}.{name}: pass-through {passthrough} but preserve-unknown {preserved}"
            )
    return problems


@pytest.mark.parametrize(
    "file,model",
    [
        ("nexusalgorithmtemplates.yaml", AlgorithmSpec),
        ("nexusalgorithmworkgroups.yaml", WorkgroupSpec),
    ],
)
def test_crd_schema_matches_the_model(file, model):
    crd = yaml.safe_load((REPO / "helm" / "nexus" / "crds" / file).read_text())
    [version] = crd["spec"]["versions"]
    assert crd["spec"]["group"] == "science.sneaksanddata.com" and version["name"] == "v1"
    assert crd["spec"]["scope"] == "Namespaced" and version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert struct_schema_mismatches(model, spec, "spec") == []


def test_example_templates_fit_the_crds():
    """What nexus accepts from its YAML folder also passes the CRD's required fields."""
    for path in (REPO / "examples" / "templates").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "NexusAlgorithmTemplate":
                msgspec.convert(doc["spec"], AlgorithmSpec)
                assert {"container", "command"} <= set(doc["spec"])
