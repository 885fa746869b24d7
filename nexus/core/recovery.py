"""Pick up runs that a scheduler accepted but did not launch.

Used by a scheduler at start-up and on its periodic sweep (its own host), and by the
supervisor for schedulers whose lease expired. A NEW run whose payload never reached the
buffer was refused to its client (the 202 comes only after both writes), so it is closed
as SCHEDULING_FAILED; every other pending run is queued again. Launching is idempotent
(the Job is named by the run id), so a run picked up twice still gets one Job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from nexus.core.launching import utcnow
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, RunKey
from nexus.core.pipeline import LaunchPipeline
from nexus.core.ports import PayloadBuffer, RunStore
from nexus.core.scope import ShardScope
from nexus.errors import InvalidTransition, NotFound

log = logging.getLogger("nexus.recovery")

LOST_CAUSE = "Submission lost. Please resend the request."
LOST_DETAILS = "Scheduler was interrupted before it could serialize the payload."


async def requeue_pending(
    store: RunStore,
    buffer: PayloadBuffer,
    pipeline: LaunchPipeline,
    host: str,
    min_age: float = 0.0,
    now: Callable[[], datetime] = utcnow,
    scope: ShardScope | None = None,
) -> int:
    """Queue every NEW/BUFFERED run of ``host`` not already queued here; return how many.

    ``min_age`` (seconds) skips runs received more recently, whose accept may still be
    writing: a live scheduler sweeping its own runs must not race its own requests.
    ``scope``: only runs of these shards (a per-shard supervisor taking over a dead
    scheduler's runs); the others, not even claimed, are left to their own supervisor.
    """
    scope = scope or ShardScope()
    count = 0
    cutoff = now() - timedelta(seconds=min_age)
    in_flight = pipeline.in_flight
    for stage in (S.NEW, S.BUFFERED):
        for run in await store.by_host_stage(host, stage):
            if run.lifecycle_stage is not stage:
                continue
            if min_age and run.received_at is not None and run.received_at > cutoff:
                continue
            if not scope.covers(run.cluster):
                continue
            # Claimed before the awaits below: nothing else can queue it meanwhile, and
            # a run claimed already (being accepted, queued, launched) is not ours to judge.
            if not in_flight.claim(run.algorithm, run.id):
                continue
            try:
                lost = stage is S.NEW and not await buffer.exists(run.algorithm, run.id)
                if lost:
                    await _close_lost(store, run)
                    in_flight.release(run.algorithm, run.id)
                    continue
                tenant = await pipeline.tenant_of(run)
            except BaseException:
                in_flight.release(run.algorithm, run.id, left_behind=True)
                raise
            # Ahead of new runs: it has waited since before a restart or a takeover.
            if pipeline.recover(RunKey(run.algorithm, run.id, cluster=run.cluster, tenant=tenant)):
                count += 1
    if count:
        log.info("re-queued %d pending run(s) of %s", count, host)
    return count


async def _close_lost(store: RunStore, run: Run) -> None:
    try:
        await store.transition(
            run.algorithm,
            run.id,
            S.SCHEDULING_FAILED,
            algorithm_failure_cause=LOST_CAUSE,
            algorithm_failure_details=LOST_DETAILS,
        )
    except (InvalidTransition, NotFound):
        pass


class PendingSweep:
    """A scheduler's periodic sweep of its own NEW/BUFFERED runs, skipped while it has
    nothing to find.

    A sweep reads every such row, so with a deep queue it is O(queue) work that stalls
    the event loop (seconds at 100,000 queued runs: the p99 of every accept around it).
    Runs accepted here stay claimed in the pipeline's in-flight registry until they
    leave NEW/BUFFERED, unless one is released as left behind (its ``left_behind``
    count moves, e.g. after a store outage outlasted its retries, or a full lane refused
    it): see :class:`~nexus.core.inflight.InFlight` for the invariant. Each report
    makes two *successful* sweeps owed: a sweep that fails because
    the store is still down pays nothing, so a run left behind during an outage is found
    once the store is back, however long the outage. Two, because the first may skip a
    run received less than ``interval`` ago (``min_age``); the second, an interval later,
    cannot.
    """

    OWED_PER_REPORT = 2

    def __init__(
        self,
        store: RunStore,
        buffer: PayloadBuffer,
        pipeline: LaunchPipeline,
        host: str,
        interval: float,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store, self._buffer, self._pipeline = store, buffer, pipeline
        self._host, self._interval, self._now = host, interval, now
        self._seen = pipeline.in_flight.left_behind
        self.owed = 0

    async def __call__(self) -> int:
        """Sweep if one is owed; return how many runs were queued again."""
        if self._pipeline.in_flight.left_behind != self._seen:
            self._seen = self._pipeline.in_flight.left_behind
            self.owed = self.OWED_PER_REPORT
        if not self.owed:
            return 0
        count = await requeue_pending(
            self._store,
            self._buffer,
            self._pipeline,
            self._host,
            min_age=self._interval,
            now=self._now,
        )
        self.owed -= 1
        return count
