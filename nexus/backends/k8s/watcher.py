"""Follow run Jobs on every shard and say what each one's status means (ClusterWatcher).

Per shard, three list+watch streams — Jobs and Pods labelled
``science.sneaksanddata.com/nexus-component=algorithm-run``, and ``FailedCreate`` Events
of Jobs — keep a cache; every change re-evaluates the run it touches with
:func:`~nexus.backends.k8s.status.job_verdict` and emits an observation when the outcome
changed. The streams start on the first call to ``observations()``, so a process that
only launches (the scheduler role) watches nothing. ``snapshot()`` lists afresh instead of
reading the cache: it is the periodic re-list that makes up for lost watch events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from nexus.backends.k8s.client import ListWatch, ShardClient, object_path
from nexus.backends.k8s.launcher import KubernetesLauncher
from nexus.backends.k8s.status import FAILED_CREATE, Event, Job, Pod, controller_uid, job_verdict
from nexus.core.jobs import COMPONENT_LABEL, COMPONENT_VALUE, TEMPLATE_LABEL
from nexus.core.ports import ClusterSnapshot, JobObservation, Outcome
from nexus.errors import BackendUnavailable

RUN_SELECTOR = {"labelSelector": f"{COMPONENT_LABEL}={COMPONENT_VALUE}"}
FAILED_CREATE_SELECTOR = {"fieldSelector": f"involvedObject.kind=Job,reason={FAILED_CREATE}"}


class _FirstSeen:
    """When each run was first seen in its current outcome, for outcomes whose status
    carries no timestamp (the supervisor's grace periods count from it)."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._seen: dict[str, tuple[Outcome, datetime]] = {}
        self._now = now

    def since(self, run_id: str, outcome: Outcome) -> datetime:
        seen = self._seen.get(run_id)
        if seen is None or seen[0] is not outcome:
            seen = self._seen[run_id] = (outcome, self._now())
        return seen[1]

    def forget(self, run_id: str) -> None:
        self._seen.pop(run_id, None)

    def keep_only(self, run_ids: set[str]) -> None:
        for run_id in [r for r in self._seen if r not in run_ids]:
            del self._seen[run_id]


def observe(
    cluster: str, job: Job, pods: Iterable[Pod], event: Event | None, first_seen: _FirstSeen
) -> JobObservation | None:
    """The observation for one Job, or None for a Job that is not a run or is going away."""
    algorithm = job.metadata.labels.get(TEMPLATE_LABEL)
    if not algorithm or job.metadata.deletion_timestamp is not None:
        return None
    verdict = job_verdict(job, pods, event)
    since = verdict.since or first_seen.since(job.metadata.name, verdict.outcome)
    return JobObservation(
        algorithm=algorithm,
        run_id=job.metadata.name,
        cluster=cluster,
        outcome=verdict.outcome,
        since=since,
        message=verdict.message,
        job_uid=job.metadata.uid,
    )


class _ShardView:
    """The watch cache of one shard and the observations it has emitted."""

    def __init__(
        self, client: ShardClient, emit: asyncio.Queue[JobObservation], first_seen: _FirstSeen
    ) -> None:
        self.client = client
        self._emit = emit
        self._first_seen = first_seen
        self._jobs: dict[str, Job] = {}  # by name (= run id)
        self._job_names: dict[str, str] = {}  # uid -> name
        self._pods: dict[str, Pod] = {}  # by pod name
        self._pods_of: dict[str, set[str]] = {}  # job uid -> pod names
        self._failed_create: dict[str, Event] = {}  # job uid -> latest FailedCreate
        self._emitted: dict[str, Outcome] = {}
        ns = client.namespace
        self.streams: list[ListWatch[Any]] = [
            ListWatch(
                client,
                object_path("batch/v1", ns, "jobs"),
                Job,
                query=RUN_SELECTOR,
                on_reset=self._reset_jobs,
                on_events=self._job_events,
            ),
            ListWatch(
                client,
                object_path("v1", ns, "pods"),
                Pod,
                query=RUN_SELECTOR,
                on_reset=self._reset_pods,
                on_events=self._pod_events,
            ),
            ListWatch(
                client,
                object_path("v1", ns, "events"),
                Event,
                query=FAILED_CREATE_SELECTOR,
                on_reset=self._reset_failures,
                on_events=self._failure_events,
            ),
        ]

    # --- evaluation ----------------------------------------------------------------------

    def _evaluate(self, name: str) -> None:
        job = self._jobs.get(name)
        if job is None:
            return
        uid = job.metadata.uid
        pods = [self._pods[p] for p in self._pods_of.get(uid, ()) if p in self._pods]
        obs = observe(self.client.name, job, pods, self._failed_create.get(uid), self._first_seen)
        if obs is None or self._emitted.get(name) is obs.outcome:
            return
        self._emitted[name] = obs.outcome
        self._emit.put_nowait(obs)

    def _evaluate_uid(self, uid: str) -> None:
        name = self._job_names.get(uid)
        if name is not None:
            self._evaluate(name)

    # --- Jobs --------------------------------------------------------------------------

    def _put_job(self, job: Job) -> None:
        self._jobs[job.metadata.name] = job
        self._job_names[job.metadata.uid] = job.metadata.name

    def _drop_job(self, name: str) -> None:
        job = self._jobs.pop(name, None)
        if job is not None:
            self._job_names.pop(job.metadata.uid, None)
            self._failed_create.pop(job.metadata.uid, None)
        self._emitted.pop(name, None)
        self._first_seen.forget(name)

    def _reset_jobs(self, jobs: list[Job]) -> None:
        names = {job.metadata.name for job in jobs}
        for name in [n for n in self._jobs if n not in names]:
            self._drop_job(name)
        for job in jobs:
            self._put_job(job)
        for job in jobs:
            self._evaluate(job.metadata.name)

    def _job_events(self, batch: list[tuple[str, Job]]) -> None:
        touched = set()
        for kind, job in batch:
            if kind == "DELETED":
                self._drop_job(job.metadata.name)
                touched.discard(job.metadata.name)
            else:
                self._put_job(job)
                touched.add(job.metadata.name)
        for name in touched:
            self._evaluate(name)

    # --- Pods --------------------------------------------------------------------------

    def _put_pod(self, pod: Pod) -> str:
        uid = controller_uid(pod)
        self._pods[pod.metadata.name] = pod
        self._pods_of.setdefault(uid, set()).add(pod.metadata.name)
        return uid

    def _drop_pod(self, pod: Pod) -> str:
        uid = controller_uid(pod)
        self._pods.pop(pod.metadata.name, None)
        names = self._pods_of.get(uid)
        if names is not None:
            names.discard(pod.metadata.name)
            if not names:
                del self._pods_of[uid]
        return uid

    def _reset_pods(self, pods: list[Pod]) -> None:
        self._pods.clear()
        self._pods_of.clear()
        for pod in pods:
            self._put_pod(pod)
        for name in list(self._jobs):
            self._evaluate(name)

    def _pod_events(self, batch: list[tuple[str, Pod]]) -> None:
        touched = {
            self._drop_pod(pod) if kind == "DELETED" else self._put_pod(pod) for kind, pod in batch
        }
        for uid in touched:
            self._evaluate_uid(uid)

    # --- FailedCreate Events -----------------------------------------------------------

    def _reset_failures(self, events: list[Event]) -> None:
        self._failed_create = {e.involved_object.uid: e for e in events}
        for uid in list(self._failed_create):
            self._evaluate_uid(uid)

    def _failure_events(self, batch: list[tuple[str, Event]]) -> None:
        for kind, event in batch:
            if kind != "DELETED":
                self._failed_create[event.involved_object.uid] = event
                self._evaluate_uid(event.involved_object.uid)


class KubernetesWatcher:
    def __init__(self, clients: Mapping[str, ShardClient], launcher: KubernetesLauncher) -> None:
        self._clients = clients
        self._launcher = launcher
        self._queue: asyncio.Queue[JobObservation] = asyncio.Queue()
        self._first_seen = {name: _FirstSeen() for name in clients}
        self._views: list[_ShardView] = []

    def _start(self) -> None:
        if self._views:
            return
        for name, client in self._clients.items():
            view = _ShardView(client, self._queue, self._first_seen[name])
            for stream in view.streams:
                stream.start()
            self._views.append(view)

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for view in self._views for s in view.streams))
        self._views = []

    async def observations(self) -> AsyncIterator[JobObservation]:
        self._start()
        while True:
            yield await self._queue.get()

    async def snapshot(self) -> ClusterSnapshot:
        results = await asyncio.gather(
            *(self._list_shard(c) for c in self._clients.values()), return_exceptions=True
        )
        observations: list[JobObservation] = []
        unreachable: dict[str, str] = {}
        for name, result in zip(self._clients, results, strict=True):
            if isinstance(result, BackendUnavailable):
                unreachable[name] = result.message
            elif isinstance(result, BaseException):
                raise result
            else:
                observations.extend(result)
        if results and len(unreachable) == len(results):
            raise BackendUnavailable(
                "No shard answered the re-list: "
                + "; ".join(f"{name}: {why}" for name, why in unreachable.items())
            )
        return ClusterSnapshot(observations=observations, unreachable=unreachable)

    async def _list_shard(self, client: ShardClient) -> list[JobObservation]:
        ns = client.namespace
        jobs, pods, events = await asyncio.gather(
            client.list(object_path("batch/v1", ns, "jobs"), Job, RUN_SELECTOR),
            client.list(object_path("v1", ns, "pods"), Pod, RUN_SELECTOR),
            client.list(object_path("v1", ns, "events"), Event, FAILED_CREATE_SELECTOR),
        )
        pods_of: dict[str, list[Pod]] = {}
        for pod in pods:
            pods_of.setdefault(controller_uid(pod), []).append(pod)
        failures = {e.involved_object.uid: e for e in events}
        first_seen = self._first_seen[client.name]
        observed = [
            observe(
                client.name,
                job,
                pods_of.get(job.metadata.uid, ()),
                failures.get(job.metadata.uid),
                first_seen,
            )
            for job in jobs
        ]
        if not self._views:  # the watch keeps its own memory up to date when it runs
            first_seen.keep_only({job.metadata.name for job in jobs})
        return [obs for obs in observed if obs is not None]

    async def delete_job(self, cluster: str, run_id: str) -> None:
        await self._launcher.delete(cluster, run_id, "Background", grace=None)
