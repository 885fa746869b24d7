"""The virtual queue: workers that take accepted runs from the Rust queue and launch them.

The queue is the crate's :class:`~nexus._rust_queue.RunQueue`, one lane per shard: it
holds every queued run (bounded per lane and per tenant), the failed launches waiting
for their backoff, recovered runs ahead of new ones and fair share between tenants.
Python keeps no queue of its own; each shard has its token bucket, a wake-up event and
its workers, so a shard that is throttled or failing holds only its own workers.

Workers are asyncio tasks calling ``pop`` and sleeping on the lane's wake-up (or until
the lane's next delayed run is due), not threads in ``pop_wait``: a launch is a chain of
awaits on async ports (the store, the launcher, whose synchronous Kubernetes client
already runs in threads inside its backend), so a thread would only hand each run back
to the event loop. The GIL-free ``pop_wait`` is there for launchers that block.

Per run, :class:`~nexus.core.launching.Launch` decides: NEW -> BUFFERED (its Job is
rendered and stored), then a token from the shard's bucket, then the Job is created and
the run committed RUNNING; the pipeline keeps the lanes, workers, buckets, backoff and
the claims of :class:`~nexus.core.inflight.InFlight`. A failed launch is pushed
back into its lane as a recovered run, delayed by a jittered exponential backoff; once
the retry limit is reached the run is marked SCHEDULING_FAILED with the reason. A store
outage is retried the same way and never marks the run. Whatever the lane refuses (it is
full) or the retries give up on stays NEW/BUFFERED in the store, where the owner's
periodic sweep or the supervisor finds it again. Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import msgspec

from nexus._rust_queue import Backoff, Dequeued, ManualClock, RunQueue, TokenBucket
from nexus._rust_queue import QueueFull as Refused
from nexus.core.inflight import InFlight
from nexus.core.launching import Launch, Launched, Step
from nexus.core.models import Run, RunKey, SubmissionEntry
from nexus.core.ports import JobLauncher, RunStore
from nexus.errors import (
    BackendUnavailable,
    NexusError,
    QueueFull,
)

log = logging.getLogger("nexus.pipeline")

RETRY_AFTER = {"Retry-After": "1"}


class LimitConfig:
    """Token bucket, backoff and queue bounds, read once from BufferConfig.

    ``capacity`` bounds each lane (shard); ``tenant_limit`` the runs any one tenant may
    have queued over all lanes (None: no bound but the lanes'), ``tenant_limits`` and
    ``tenant_weights`` set it and its fair-share weight per tenant.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        base_delay: float,
        max_delay: float,
        max_attempts: int,
        workers: int,
        capacity: int,
        tenant_limit: int | None = None,
        tenant_limits: dict[str, int] | None = None,
        tenant_weights: dict[str, int] | None = None,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.base_delay, self.max_delay, self.max_attempts = base_delay, max_delay, max_attempts
        self.workers, self.capacity = workers, capacity
        self.tenant_limit = tenant_limit
        self.tenant_limits = dict(tenant_limits or {})
        self.tenant_weights = dict(tenant_weights or {})

    def limit_of(self, tenant: str) -> int | None:
        return self.tenant_limits.get(tenant, self.tenant_limit)


async def _algorithm_tenant(run: Run) -> str:
    return run.algorithm


class LaneStatus(msgspec.Struct, frozen=True, rename="camel"):
    """One shard's launching as the UI shows it: what is queued and how fast it goes."""

    shard: str
    queued: int  # delayed retries included: what the capacity bounds
    delayed: int  # failed launches waiting for their backoff
    capacity: int
    rate: float  # launches per second the token bucket allows
    burst: int
    launched: int  # Jobs created by this process since it started


class _Lane:
    """One shard's launching: its token bucket, workers and their wake-up (the runs
    themselves are in the RunQueue's lane of the same name)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.wakeup = asyncio.Event()
        self.launched = 0
        self.workers: list[asyncio.Task[None]] = []


class LaunchPipeline:
    def __init__(
        self,
        store: RunStore,
        launcher: JobLauncher,
        limits: LimitConfig,
        render: Callable[[Run], Awaitable[SubmissionEntry]],
        on_change: Callable[[str, str], None] | None = None,
        *,
        on_dequeued: Callable[[Dequeued], None] | None = None,
        clock: ManualClock | None = None,
        tenant_of: Callable[[Run], Awaitable[str]] | None = None,
        entropy: Callable[[], int] = lambda: random.getrandbits(64),
    ) -> None:
        self._limits = limits
        self._queue = RunQueue(tenant_limit=limits.tenant_limit, clock=clock)
        tenants = limits.tenant_limits.keys() | limits.tenant_weights.keys()
        for tenant in sorted(tenants):
            self._queue.configure_tenant(
                tenant,
                weight=limits.tenant_weights.get(tenant, 1),
                limit=limits.tenant_limits.get(tenant),
            )
        self._lanes: dict[str, _Lane] = {}
        self._backoff = Backoff(limits.base_delay, limits.max_delay, limits.max_attempts)
        self._entropy = entropy  # the random word of each retry's jitter
        self._running = False
        self._commits: set[asyncio.Task[None]] = set()
        # Which runs this process carries; see InFlight for the invariant every path here
        # keeps. The accept and recovery claim runs before handing them to submit/recover.
        self.in_flight = InFlight()
        self._launch = Launch(
            store, launcher, render, on_change or (lambda algorithm, run_id: None)
        )
        self._on_dequeued = on_dequeued or (lambda taken: None)  # metrics: tenant, wait
        self._tenant_of = tenant_of or _algorithm_tenant

    # --- producer side -----------------------------------------------------------------

    def depth(self) -> int:
        return len(self._queue)

    def tenant_depths(self) -> dict[str, int]:
        return self._queue.tenant_depths()

    def lanes(self, shards: Iterable[str]) -> list[LaneStatus]:
        """The status of each of ``shards`` (a shard not launched to yet has an empty
        lane: reading it does not create one, nor start its workers)."""
        limits = self._limits
        statuses = []
        for shard in sorted(set(shards) | self._lanes.keys()):
            lane = self._lanes.get(shard)
            queued = self._queue.depth(shard) if lane else 0
            delayed = self._queue.delayed(shard) if lane else 0
            launched = lane.launched if lane else 0
            statuses.append(
                LaneStatus(
                    shard, queued, delayed, limits.capacity, limits.rate, limits.burst, launched
                )
            )
        return statuses

    def check_room(self, cluster: str, tenant: str) -> None:
        """Raise QueueFull (the 429) unless ``cluster``'s lane and ``tenant`` have room.

        Asked before an accept writes anything, so that a refusal writes nothing. An
        accept that passed it may still be refused by the lane when it submits (another
        accept took the last slot meanwhile): its run is stored, so it is not refused to
        its client but left to the sweep (``submit``).
        """
        self._lane(cluster)
        capacity = self._limits.capacity
        if self._queue.depth(cluster) >= capacity:
            raise QueueFull(
                f"The run queue is full: the lane of shard '{cluster}' holds its capacity "
                f"of {capacity} queued runs; retry after a short wait",
                headers=RETRY_AFTER,
            )
        limit = self._limits.limit_of(tenant)
        if limit is not None and self._queue.tenant_depths().get(tenant, 0) >= limit:
            raise QueueFull(
                f"The run queue is full for tenant '{tenant}': it has {limit} runs queued, "
                "its limit; retry after a short wait",
                headers=RETRY_AFTER,
            )

    async def tenant_of(self, run: Run) -> str:
        """The tenant of a stored run (for recovery; the accept knows it already)."""
        return await self._tenant_of(run)

    def submit(self, key: RunKey) -> bool:
        """Queue an accepted (stored, claimed) run as a new one; False if its lane or
        tenant refused it, which releases it (stored, NEW) to the sweep."""
        return self._push(key, recovered=False)

    def recover(self, key: RunKey) -> bool:
        """Queue a claimed run found pending in the store (after a restart, taken over,
        swept): ahead of new runs, and not refused for its tenant's limit; False if its
        lane is full, which releases it to the next sweep."""
        return self._push(key, recovered=True)

    def _push(self, key: RunKey, *, recovered: bool, delay: float = 0.0) -> bool:
        lane = self._lane(key.cluster)
        try:
            self._queue.push(
                key.cluster, key.tenant or key.algorithm, key, recovered=recovered, delay=delay
            )
        except Refused as exc:
            log.warning("run %s/%s left to the sweep: %s", key.algorithm, key.id, exc)
            self.in_flight.release(key.algorithm, key.id, left_behind=True)
            return False
        lane.wakeup.set()
        return True

    def _retry_later(self, key: RunKey) -> None:
        """Push the next attempt back into its lane, held by the crate for a jittered
        backoff and then served ahead of new runs. The claim goes with it, or, if the
        lane refuses it, is released to the sweep: either way the caller is done with it."""
        delay = self._backoff.jittered(key.attempt, self._entropy())
        retry = msgspec.structs.replace(key, attempt=key.attempt + 1)
        self._push(retry, recovered=True, delay=delay)

    def _lane(self, cluster: str) -> _Lane:
        lane = self._lanes.get(cluster)
        if lane is None:
            limits = self._limits
            self._queue.configure_lane(cluster, limits.capacity)
            lane = self._lanes[cluster] = _Lane(limits.rate, limits.burst)
            if self._running:
                self._start_lane(cluster, lane)
        return lane

    # --- consumer side -----------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        for cluster, lane in self._lanes.items():
            self._start_lane(cluster, lane)

    def _start_lane(self, cluster: str, lane: _Lane) -> None:
        lane.workers = [
            asyncio.create_task(self._work(cluster, lane), name=f"launch-{cluster}-{i}")
            for i in range(self._limits.workers)
        ]

    async def stop(self) -> None:
        """Stop the workers; what the queue still holds is NEW/BUFFERED in the store,
        where the next start finds it."""
        self._running = False
        workers = [task for lane in self._lanes.values() for task in lane.workers]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # RUNNING commits already under way are let finish (each is one store write).
        await asyncio.gather(*self._commits, return_exceptions=True)
        for lane in self._lanes.values():
            lane.workers = []

    async def _next(self, cluster: str, lane: _Lane) -> RunKey:
        while True:
            # Cleared before the pop: a push after the pop sets it again, so no wake-up
            # is lost between an empty pop and the wait.
            lane.wakeup.clear()
            taken = self._queue.pop(cluster)
            if taken is not None:
                self._on_dequeued(taken)
                return cast("RunKey", taken.item)  # _push puts only RunKeys in
            try:
                async with asyncio.timeout(self._queue.next_due(cluster)):
                    await lane.wakeup.wait()
            except TimeoutError:
                pass  # a delayed run fell due

    async def _work(self, cluster: str, lane: _Lane) -> None:
        while True:
            key = await self._next(cluster, lane)
            try:
                await self.process(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the worker; the sweep finds the run again
                log.exception("unexpected error launching %s/%s", key.algorithm, key.id)
                # process hands its claim on only where it returns: here it still holds it
                self.in_flight.release(key.algorithm, key.id, left_behind=True)

    async def process(self, key: RunKey) -> None:
        """Take one (claimed) run as far as it can go now (:class:`Launch` decides), then
        release it, unless a retry pushed back or its RUNNING commit now holds the claim."""
        may_retry = not self._backoff.exhausted(key.attempt + 1)
        try:
            step = await self._launch.run(key, token=self._token, may_retry=may_retry)
        except BackendUnavailable as exc:
            if self._backoff.exhausted(key.attempt + 1):
                log.warning(
                    "store unavailable for %s/%s, leaving it to the sweep: %s",
                    key.algorithm,
                    key.id,
                    exc,
                )
                self.in_flight.release(key.algorithm, key.id, left_behind=True)
                return
            self._retry_later(key)
            return
        if step is Step.RETRY:
            self._retry_later(key)  # refused by a full lane: BUFFERED, for the sweep
        elif step is Step.DONE:
            self.in_flight.release(key.algorithm, key.id)
        else:
            # The worker does not wait for this commit: the Job exists, and a worker's
            # time is the shard's launch concurrency. Should the commit be lost (the store
            # down, nexus stopped), the supervisor's watch sees the Job and records
            # RUNNING itself, and the scheduler's own sweep queues the run again.
            self._lane(key.cluster).launched += 1
            commit = asyncio.create_task(self._commit_running(step))
            self._commits.add(commit)
            commit.add_done_callback(self._commits.discard)

    async def _token(self, cluster: str) -> bool:
        """Wait for a launch token of ``cluster``'s bucket; True when there was a wait."""
        wait = self._lane(cluster).bucket.reserve(1)
        if wait <= 0:
            return False
        await asyncio.sleep(wait)
        return True

    async def _commit_running(self, launched: Launched) -> None:
        """Commit RUNNING and release the run's claim, left behind unless committed."""
        run = launched.run
        left_behind = True
        try:
            await self._launch.commit(launched)
            left_behind = False
        except NexusError as exc:
            # Still BUFFERED with a Job: see Launch.commit for who finishes it.
            log.warning(
                "run %s/%s launched as %s, but its RUNNING commit failed: %s",
                run.algorithm,
                run.id,
                launched.uid,
                exc,
            )
        finally:
            self.in_flight.release(run.algorithm, run.id, left_behind=left_behind)

    @property
    def launched(self) -> int:
        return self._launch.launched

    @property
    def launch_failures(self) -> int:
        return self._launch.failures
