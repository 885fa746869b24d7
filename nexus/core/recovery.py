"""Pick up runs that a scheduler accepted but did not launch.

Used by a scheduler at start-up and on its periodic sweep (its own host), and by the
supervisor for schedulers whose lease expired. A NEW run whose payload never reached the
buffer was refused to its client (the 202 comes only after both writes), so it is closed
as SCHEDULING_FAILED; every other pending run is queued again. Launching is idempotent
(the Job is named by the run id), so a run picked up twice still gets one Job.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from nexus.core.models import LifecycleStage as S, RunKey
from nexus.core.pipeline import LaunchPipeline, utcnow
from nexus.core.ports import PayloadBuffer, RunStore
from nexus.errors import InvalidTransition, NotFound

log = logging.getLogger("nexus.recovery")

LOST_CAUSE = "Submission lost. Please resend the request."
LOST_DETAILS = "Scheduler was interrupted before it could serialize the payload."


async def requeue_pending(store: RunStore, buffer: PayloadBuffer, pipeline: LaunchPipeline,
                          host: str, min_age: float = 0.0) -> int:
    """Queue every NEW/BUFFERED run of ``host`` not already queued here; return how many.

    ``min_age`` (seconds) skips runs received more recently, whose accept may still be
    writing: a live scheduler sweeping its own runs must not race its own requests.
    """
    count = 0
    cutoff = utcnow() - timedelta(seconds=min_age)
    for stage in (S.NEW, S.BUFFERED):
        for run in await store.by_host_stage(host, stage):
            if run.lifecycle_stage is not stage or pipeline.is_queued(run.algorithm, run.id):
                continue
            if min_age and run.received_at is not None and run.received_at > cutoff:
                continue
            if stage is S.NEW and not await buffer.exists(run.algorithm, run.id):
                try:
                    await store.transition(run.algorithm, run.id, S.SCHEDULING_FAILED,
                                           algorithm_failure_cause=LOST_CAUSE,
                                           algorithm_failure_details=LOST_DETAILS)
                except (InvalidTransition, NotFound):
                    pass
                continue
            pipeline.submit(RunKey(run.algorithm, run.id, cluster=run.cluster))
            count += 1
    if count:
        log.info("re-queued %d pending run(s) of %s", count, host)
    return count
