"""Supervisor use cases: turn what the cluster says about a run's Job into its final stage.

It works from Job and Pod *status* (a watch for speed plus a periodic snapshot, because
watches and Events are lossy), never from Events alone. Each rule fires once: the stage
change is a compare-and-set, so a run already finished (say, by its own report) stays as
it is. The supervisor also re-queues runs left behind by schedulers whose lease expired.

A run whose process was lost with a crashed nexus (Outcome.DISRUPTED) is a disruption,
not a failure: like a Pod lost with its node, it is launched again, through the queue
ahead of new runs, and not counted against ``maximumRetries``; only once
``disruption_limit`` relaunches are spent does it end FAILED. The re-queue is the
compare-and-set RUNNING -> BUFFERED, written with the count on the stored Job, so of two
processes that found it lost only one launches it again.

A supervisor looks after the shards of its :class:`~nexus.core.scope.ShardScope` only:
observations, lost Jobs and a dead scheduler's pending runs of other shards are left to
their own supervisor.

A finished stage never changes, so the supervisor remembers the runs it has seen finished
and does not read them again: a Job is kept for a while after its run ends
(``ttlSecondsAfterFinished``), and every reconcile pass and every later status of that Job
would otherwise cost the store a read. It keeps the :data:`FINISHED_REMEMBERED` most
recently first seen; the oldest first seen is forgotten first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

import msgspec

from nexus.core.jobs import disruptions, with_disruptions
from nexus.core.launching import LAUNCH_FAILED_CAUSE, utcnow
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, RunKey, SubmissionEntry
from nexus.core.pipeline import LaunchPipeline
from nexus.core.ports import ClusterWatcher, JobObservation, Outcome, PayloadBuffer, RunStore
from nexus.core.recovery import requeue_pending
from nexus.core.scope import ShardScope
from nexus.errors import InvalidTransition, NexusError, NotFound

log = logging.getLogger("nexus.supervisor")

FINISHED_REMEMBERED = 50_000  # runs; about 190-250 bytes each (10-13 MB in all, measured)

FATAL_CAUSE = "Algorithm encountered a fatal error during execution."
OOM_CAUSE = "Algorithm was killed because it ran out of memory (OOMKilled)."
CRASH_CAUSE = "Algorithm keeps crashing and was stopped (BackOff)."
DEADLINE_CAUSE = "Algorithm exceeded its max allowed run time limit or retry attempt count."
NO_REPORT_CAUSE = "Algorithm finished without reporting a result to the receiver."
LOST_CAUSE = "The run's Job disappeared before the algorithm reported a result."
START_CAUSE = LAUNCH_FAILED_CAUSE + (
    "Unable to launch a container for the algorithm - please review configuration and try again."
)
IMAGE_CAUSE = LAUNCH_FAILED_CAUSE + "the container image could not be pulled."
DISRUPTED_CAUSE = (
    "The algorithm's process was lost with a crashed nexus more often than "
    "supervisor.disruption-limit allows."
)


class SupervisionConfig:
    def __init__(
        self,
        *,
        success_grace: float,
        backoff_grace: float,
        host: str,
        reconcile_interval: float,
        lease_ttl: float,
        disruption_limit: int = 3,
        scope: ShardScope | None = None,
    ) -> None:
        self.success_grace = success_grace
        self.backoff_grace = backoff_grace
        self.host = host
        self.reconcile_interval = reconcile_interval
        self.lease_ttl = lease_ttl
        self.disruption_limit = disruption_limit  # relaunches after a lost process
        self.scope = scope or ShardScope()


# outcome -> (target stage, cause, grace setting name or None, delete the Job)
_RULES: dict[Outcome, tuple[S, str, str | None, bool]] = {
    Outcome.SUCCEEDED: (S.FAILED, NO_REPORT_CAUSE, "success_grace", False),
    Outcome.FATAL_EXIT: (S.FAILED, FATAL_CAUSE, None, True),
    Outcome.OOM_KILLED: (S.FAILED, OOM_CAUSE, None, True),
    Outcome.CRASH_BACKOFF: (S.FAILED, CRASH_CAUSE, "backoff_grace", True),
    Outcome.IMAGE_PULL_BACKOFF: (S.SCHEDULING_FAILED, IMAGE_CAUSE, "backoff_grace", True),
    Outcome.FAILED_TO_START: (S.SCHEDULING_FAILED, START_CAUSE, None, True),
    Outcome.DEADLINE_EXCEEDED: (S.DEADLINE_EXCEEDED, DEADLINE_CAUSE, None, True),
    Outcome.BACKOFF_LIMIT: (S.DEADLINE_EXCEEDED, DEADLINE_CAUSE, None, True),
    Outcome.LOST: (S.FAILED, LOST_CAUSE, "success_grace", False),
}


class Supervision:
    def __init__(
        self,
        store: RunStore,
        buffer: PayloadBuffer,
        watcher: ClusterWatcher,
        pipeline: LaunchPipeline | None,
        config: SupervisionConfig,
        on_change: Callable[[str, str], None] | None = None,
        observing_since: datetime | None = None,
    ) -> None:
        self.store = store
        self.buffer = buffer
        self.watcher = watcher
        self.pipeline = pipeline
        self.config = config
        self._on_change = on_change or (lambda algorithm, run_id: None)
        # A run's Job can only be missed since this supervisor began to look: after a
        # restart, a Job's grace starts here, not at the run's (older) sent_at.
        self._observing_since = observing_since or utcnow()
        # (algorithm, run id) -> the finished stage it was seen in, oldest first
        self._finished: dict[tuple[str, str], S] = {}

    async def apply(self, obs: JobObservation, now: datetime | None = None) -> Run | None:
        """Act on one observation; return the run if its stage changed."""
        if not self.config.scope.covers(obs.cluster):
            return None
        finished = self._finished.get((obs.algorithm, obs.run_id))
        if finished is not None:
            await self._finished_job(finished, obs)
            return None
        run = await self.store.get(obs.algorithm, obs.run_id)
        if run is None:
            return None
        if run.lifecycle_stage.is_terminal:
            self._seen_finished(run)
            await self._finished_job(run.lifecycle_stage, obs)
            return None
        if obs.outcome is Outcome.RUNNING:
            if run.lifecycle_stage is S.BUFFERED:
                # The watch saw the Job before its launcher committed it (or the launcher
                # died): record what the commit would have, cancel needs the uid.
                fields = {"job_uid": obs.job_uid} if obs.job_uid else {}
                return await self._transition(run, S.RUNNING, sent_at=now or utcnow(), **fields)
            return None
        if obs.outcome is Outcome.DISRUPTED:
            return await self._disrupted(run, obs)
        target, cause, grace_name, delete = _RULES[obs.outcome]
        if grace_name is not None:
            grace = getattr(self.config, grace_name)
            if ((now or utcnow()) - obs.since) < timedelta(seconds=grace):
                return None
        if delete:
            await self.watcher.delete_job(obs.cluster, obs.run_id)
        return await self._transition(
            run, target, algorithm_failure_cause=cause, algorithm_failure_details=obs.message
        )

    async def _finished_job(self, stage: S, obs: JobObservation) -> None:
        """A finished run's Job: nothing to judge; a cancelled run's Job must not run."""
        if stage is S.CANCELLED and obs.outcome is Outcome.RUNNING:
            await self.watcher.delete_job(obs.cluster, obs.run_id)

    async def _disrupted(self, run: Run, obs: JobObservation) -> Run | None:
        """Launch a run whose process was lost again, or fail it once the limit is spent."""
        if run.lifecycle_stage is not S.RUNNING or (
            run.sent_at is not None and run.sent_at >= obs.since
        ):
            # BUFFERED: its launch is still to come (the start-up sweep finds it). Sent
            # since the process was found lost: the observation is older than its Job.
            return None
        entry = await self.store.get_submission(run.algorithm, run.id)
        count = disruptions(entry.template) if entry is not None else 0
        limit = self.config.disruption_limit
        if self.pipeline is None or entry is None:
            cause = LOST_CAUSE  # nothing here can launch it again
        elif count >= limit:
            cause = DISRUPTED_CAUSE
        else:
            return await self._requeue_disrupted(self.pipeline, run, entry, count + 1)
        await self.watcher.delete_job(obs.cluster, run.id)
        return await self._transition(
            run,
            S.FAILED,
            algorithm_failure_cause=cause,
            algorithm_failure_details=(
                f"{obs.message}; it had been launched again after {count} disruption(s), "
                f"limit {limit}"
            ),
        )

    async def _requeue_disrupted(
        self, pipeline: LaunchPipeline, run: Run, entry: SubmissionEntry, count: int
    ) -> Run | None:
        """RUNNING -> BUFFERED with the count on its Job, then ahead of new runs in the
        queue. Claimed first, so no sweep of this process queues it meanwhile; the lost
        Job stays in the executor until the launch replaces it (its process is gone, so
        the algorithm never runs twice at once)."""
        if not pipeline.in_flight.claim(run.algorithm, run.id):
            return None  # being committed RUNNING by a fresh launch, or re-queued already
        try:
            requeued = await self.store.buffer(
                msgspec.structs.replace(entry, template=with_disruptions(entry.template, count)),
                from_stage=S.RUNNING,
                known=run,
            )
            tenant = await pipeline.tenant_of(requeued)
        except (InvalidTransition, NotFound):  # finished (reported) or re-queued meanwhile
            pipeline.in_flight.release(run.algorithm, run.id)
            return None
        except BaseException:
            pipeline.in_flight.release(run.algorithm, run.id, left_behind=True)
            raise
        log.info(
            "run %s/%s lost its process with a crashed nexus: launching it again (%d of %d)",
            run.algorithm,
            run.id,
            count,
            self.config.disruption_limit,
        )
        self._on_change(run.algorithm, run.id)
        pipeline.recover(RunKey(run.algorithm, run.id, cluster=requeued.cluster, tenant=tenant))
        return requeued

    async def _transition(self, run: Run, target: S, **fields: Any) -> Run | None:
        try:
            updated = await self.store.transition(
                run.algorithm, run.id, target, known=run, **fields
            )
        except (InvalidTransition, NotFound):
            return None
        log.info(
            "run %s/%s -> %s %s",
            run.algorithm,
            run.id,
            target.value,
            fields.get("algorithm_failure_cause", ""),
        )
        self._on_change(run.algorithm, run.id)
        if updated.lifecycle_stage.is_terminal:
            self._seen_finished(updated)
        return updated

    def _seen_finished(self, run: Run) -> None:
        self._finished[(run.algorithm, run.id)] = run.lifecycle_stage
        if len(self._finished) > FINISHED_REMEMBERED:
            del self._finished[next(iter(self._finished))]

    async def reconcile(self) -> None:
        """One full pass: every Job's status, lost runs, and expired schedulers."""
        snapshot = await self.watcher.snapshot()
        for shard, why in snapshot.unreachable.items():
            log.warning("shard %s did not answer; its runs wait for the next pass: %s", shard, why)
        for obs in snapshot.observations:
            await self.apply(obs)
        seen = {(obs.algorithm, obs.run_id) for obs in snapshot.observations}
        hosts = [self.config.host, *await self.store.expired_hosts()]
        for host in dict.fromkeys(hosts):
            await self._fail_lost(host, seen, snapshot.unreachable.keys())
            if host != self.config.host and self.pipeline is not None:
                await requeue_pending(
                    self.store, self.buffer, self.pipeline, host, scope=self.config.scope
                )
                if not any(
                    [
                        await self.store.by_host_stage(host, stage)
                        for stage in (S.NEW, S.BUFFERED, S.RUNNING)
                    ]
                ):
                    await self.store.drop_lease(host)

    async def _fail_lost(
        self, host: str, seen: set[tuple[str, str]], unseen_shards: Collection[str]
    ) -> None:
        """RUNNING runs whose Job was not in the snapshot, on shards that answered (those
        of other shards are let go by :meth:`apply`: the observation names their shard)."""
        now = utcnow()
        for run in await self.store.by_host_stage(host, S.RUNNING):
            if (
                (run.algorithm, run.id) in seen
                or run.lifecycle_stage is not S.RUNNING
                or run.cluster in unseen_shards
            ):
                continue
            since = max(run.sent_at or run.last_modified or now, self._observing_since)
            await self.apply(
                JobObservation(
                    algorithm=run.algorithm,
                    run_id=run.id,
                    cluster=run.cluster,
                    outcome=Outcome.LOST,
                    since=since,
                    message="No Job exists for this run.",
                ),
                now=now,
            )

    async def watch_forever(self) -> None:
        while True:
            try:
                async for obs in self.watcher.observations():
                    await self.apply(obs)
            except asyncio.CancelledError:
                raise
            except NexusError as exc:
                log.warning("watch interrupted, resuming: %s", exc)
                await asyncio.sleep(1.0)

    async def reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except NexusError as exc:
                log.warning("reconcile pass failed, retrying: %s", exc)
            await asyncio.sleep(self.config.reconcile_interval)
