"""What a run's Job and Pods say, as an Outcome (SPEC §5): pure functions over status.

The objects are decoded straight from the API server's JSON into the small Structs below
(only the fields the mapping reads; everything else is skipped by the decoder), so a
list of thousands of Jobs costs little. The rules, first match wins:

1. Job condition ``Complete`` (or ``SuccessCriteriaMet``) True -> SUCCEEDED.
2. Job condition ``Failed`` (or ``FailureTarget``, which the Job controller sets first)
   True, by reason: ``DeadlineExceeded`` -> DEADLINE_EXCEEDED; ``PodFailurePolicy`` ->
   FATAL_EXIT; ``BackoffLimitExceeded`` or any other reason -> BACKOFF_LIMIT. Either of
   the last two becomes OOM_KILLED when one of the Job's containers was OOM-killed: the
   more precise cause. An OOM kill while the Job still has retries left is RUNNING — the
   Job controller retries it, as ``maximumRetries`` asks.
3. The Job is still active; its live Pods, by container state (init containers too):
   waiting ``CreateContainerConfigError`` and the other start failures -> FAILED_TO_START;
   ``ImagePullBackOff``/``ErrImagePull`` -> IMAGE_PULL_BACKOFF; ``CrashLoopBackOff`` ->
   CRASH_BACKOFF.
4. The Job has no Pod at all and a ``FailedCreate`` Event names it -> FAILED_TO_START.
   Events are lossy, so the status decides (no Pod exists) and the Event only supplies
   the reason; without the Event the Job is RUNNING until its deadline.
5. Otherwise RUNNING (Pods pending or running).

``since`` is the condition's ``lastTransitionTime`` where there is one, the Pod's start
for an image that cannot be pulled, and None otherwise: the watcher then uses the time it
first saw that outcome for the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from nexus.core.ports import Outcome


class _K8s(msgspec.Struct, rename="camel", kw_only=True):
    pass


class OwnerReference(_K8s):
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


class ObjectMeta(_K8s):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: dict[str, str] = {}
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    owner_references: list[OwnerReference] = []


class Condition(_K8s):
    type: str
    status: str = ""
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class JobStatus(_K8s):
    conditions: list[Condition] = []
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: datetime | None = None


class Job(_K8s):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    status: JobStatus = msgspec.field(default_factory=JobStatus)


class StateWaiting(_K8s):
    reason: str = ""
    message: str = ""


class StateTerminated(_K8s):
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    finished_at: datetime | None = None


class ContainerState(_K8s):
    waiting: StateWaiting | None = None
    running: dict | None = None
    terminated: StateTerminated | None = None


class ContainerStatus(_K8s):
    name: str = ""
    state: ContainerState = msgspec.field(default_factory=ContainerState)
    last_state: ContainerState = msgspec.field(default_factory=ContainerState)
    restart_count: int = 0


class PodStatus(_K8s):
    phase: str = ""
    reason: str = ""
    message: str = ""
    start_time: datetime | None = None
    container_statuses: list[ContainerStatus] = []
    init_container_statuses: list[ContainerStatus] = []


class PodSpec(_K8s):
    node_name: str = ""


class Pod(_K8s):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class ObjectReference(_K8s):
    kind: str = ""
    name: str = ""
    namespace: str = ""
    uid: str = ""


class Event(_K8s):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    involved_object: ObjectReference = msgspec.field(default_factory=ObjectReference)
    reason: str = ""
    message: str = ""
    type: str = ""
    count: int = 0


class Verdict(msgspec.Struct, frozen=True):
    outcome: Outcome
    since: datetime | None
    message: str


START_FAILURES = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
        "ErrImageNeverPull",
        "PreCreateHookError",
        "PostStartHookError",
        "PreStartHookError",
    }
)
IMAGE_PULL = frozenset({"ImagePullBackOff", "ErrImagePull"})
CRASH_LOOP = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
FAILED_CREATE = "FailedCreate"
_SUCCESS_CONDITIONS = ("Complete", "SuccessCriteriaMet")
_FAILURE_CONDITIONS = ("Failed", "FailureTarget")
_FAILURE_REASONS = {
    "DeadlineExceeded": Outcome.DEADLINE_EXCEEDED,
    "PodFailurePolicy": Outcome.FATAL_EXIT,
    "BackoffLimitExceeded": Outcome.BACKOFF_LIMIT,
}


def _condition(job: Job, types: tuple[str, ...]) -> Condition | None:
    found = [c for c in job.status.conditions if c.type in types and c.status == "True"]
    if not found:
        return None
    # Failed is set after FailureTarget with the same reason: prefer the final one.
    return min(found, key=lambda c: types.index(c.type))


def _describe(condition: Condition) -> str:
    return f"{condition.reason}: {condition.message}" if condition.message else condition.reason


def _statuses(pod: Pod) -> list[ContainerStatus]:
    return [*pod.status.init_container_statuses, *pod.status.container_statuses]


def _oom_killed(pods: Iterable[Pod]) -> str:
    """The message for the first OOM-killed container, or ''."""
    for pod in pods:
        for status in _statuses(pod):
            for state in (status.state, status.last_state):
                if state.terminated is not None and state.terminated.reason == OOM_KILLED:
                    return (
                        f"Container {status.name} of pod {pod.metadata.name} was OOM-killed "
                        f"(exit code {state.terminated.exit_code})"
                    )
    return ""


def _pod_verdict(pod: Pod) -> Verdict | None:
    """A start failure or back-off of one live Pod, or None."""
    found: Verdict | None = None
    for status in _statuses(pod):
        waiting = status.state.waiting
        if waiting is None:
            continue
        detail = f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
        detail = f"pod {pod.metadata.name} container {status.name}: {detail}"
        if waiting.reason in START_FAILURES:
            return Verdict(Outcome.FAILED_TO_START, None, detail)
        if waiting.reason in IMAGE_PULL and (
            found is None or found.outcome is not Outcome.IMAGE_PULL_BACKOFF
        ):
            since = pod.status.start_time or pod.metadata.creation_timestamp
            found = Verdict(Outcome.IMAGE_PULL_BACKOFF, since, detail)
        elif waiting.reason == CRASH_LOOP and found is None:
            found = Verdict(
                Outcome.CRASH_BACKOFF, None, f"{detail} (restarted {status.restart_count} times)"
            )
    return found


_POD_PRIORITY = {
    Outcome.FAILED_TO_START: 0,
    Outcome.IMAGE_PULL_BACKOFF: 1,
    Outcome.CRASH_BACKOFF: 2,
}


def job_verdict(job: Job, pods: Iterable[Pod], failed_create: Event | None = None) -> Verdict:
    """The outcome of one run's Job from its status, its Pods and a FailedCreate Event."""
    pods = list(pods)
    done = _condition(job, _SUCCESS_CONDITIONS)
    if done is not None:
        return Verdict(
            Outcome.SUCCEEDED, done.last_transition_time, _describe(done) or "Job completed"
        )
    failed = _condition(job, _FAILURE_CONDITIONS)
    if failed is not None:
        outcome = _FAILURE_REASONS.get(failed.reason, Outcome.BACKOFF_LIMIT)
        message = _describe(failed)
        if outcome is not Outcome.DEADLINE_EXCEEDED:
            oom = _oom_killed(pods)
            if oom:
                outcome, message = Outcome.OOM_KILLED, f"{oom}; {message}"
        return Verdict(outcome, failed.last_transition_time, message)
    live = [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None and p.status.phase not in ("Succeeded", "Failed")
    ]
    verdicts = [v for v in map(_pod_verdict, live) if v is not None]
    if verdicts:
        return min(verdicts, key=lambda v: _POD_PRIORITY[v.outcome])
    if not pods and job.status.active == 0 and failed_create is not None:
        return Verdict(Outcome.FAILED_TO_START, None, f"{FAILED_CREATE}: {failed_create.message}")
    return Verdict(Outcome.RUNNING, job.status.start_time, _running_message(job, live))


def _running_message(job: Job, live: list[Pod]) -> str:
    running = [p for p in live if p.status.phase == "Running"]
    if running:
        pod = running[0]
        return f"pod {pod.metadata.name} running on node {pod.spec.node_name or '?'}"
    if live:
        return f"pod {live[0].metadata.name} {live[0].status.phase or 'Pending'}"
    if job.status.failed:
        return f"Job active, {job.status.failed} failed attempt(s), next attempt pending"
    return "Job accepted, no pod yet"


def controller_uid(pod: Pod) -> str:
    """The uid of the Job that owns ``pod`` ('' if none)."""
    for ref in pod.metadata.owner_references:
        if ref.controller and ref.kind == "Job":
            return ref.uid
    return ""
