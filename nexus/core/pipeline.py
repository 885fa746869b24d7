"""The virtual queue: workers that take accepted runs from the Rust queue and launch them.

Each shard has its own lane — a Rust queue, a token bucket and its own workers — so a
shard that is throttled or failing holds only its own workers, never another shard's.

Per run: NEW -> BUFFERED (its Job is rendered and stored: :mod:`nexus.core.buffering`;
the payload was stored before the run was accepted), then a token from the shard's
bucket, then the Job is created and the run committed RUNNING. A
failed launch is retried after a per-run exponential backoff; once the retry limit is
reached the run is marked SCHEDULING_FAILED with the reason. A store outage is retried the
same way and never marks the run: it stays NEW/BUFFERED in the store, where the owner's
periodic sweep or the supervisor finds it again. Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from nexus._rust_queue import Backoff, Queue, TokenBucket
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, RunKey, SubmissionEntry
from nexus.core.ports import JobLauncher, RunStore
from nexus.errors import BackendUnavailable, InvalidTransition, LaunchError, NexusError, NotFound

log = logging.getLogger("nexus.pipeline")

DRY_RUN_UID = "dry-run"
LAUNCH_FAILED_CAUSE = (
    "Algorithm submission was buffered, but failed to launch on the target cluster: "
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class LimitConfig:
    """Token bucket and backoff settings, read once from BufferConfig."""

    def __init__(
        self,
        rate: float,
        burst: int,
        base_delay: float,
        max_delay: float,
        max_attempts: int,
        workers: int,
        capacity: int,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.base_delay, self.max_delay, self.max_attempts = base_delay, max_delay, max_attempts
        self.workers, self.capacity = workers, capacity


class _Lane:
    """One shard's part of the virtual queue."""

    def __init__(self, capacity: int, rate: float, burst: int) -> None:
        self.queue = Queue(capacity)
        # Runs accepted while a racing producer filled the last slot wait here instead of
        # being refused after they were already stored.
        self.overflow: deque[RunKey] = deque()
        self.bucket = TokenBucket(rate, burst)
        self.wakeup = asyncio.Event()
        self.workers: list[asyncio.Task[None]] = []

    def depth(self) -> int:
        return len(self.queue) + len(self.overflow)

    def push(self, key: RunKey) -> None:
        if not self.queue.push(key):
            self.overflow.append(key)
        self.wakeup.set()

    async def next(self) -> RunKey:
        while True:
            key = cast("RunKey | None", self.queue.pop())  # push() puts only RunKeys in
            if key is None and self.overflow:
                key = self.overflow.popleft()
            if key is not None:
                return key
            self.wakeup.clear()
            if self.depth():
                continue
            await self.wakeup.wait()


class LaunchPipeline:
    def __init__(
        self,
        store: RunStore,
        launcher: JobLauncher,
        limits: LimitConfig,
        render: Callable[[Run], Awaitable[SubmissionEntry]],
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._render = render
        self._launcher = launcher
        self._limits = limits
        self._lanes: dict[str, _Lane] = {}
        self._backoff = Backoff(limits.base_delay, limits.max_delay, limits.max_attempts)
        self._running = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._commits: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, str]] = set()
        self._on_change = on_change or (lambda algorithm, run_id: None)
        self.launched = 0
        self.launch_failures = 0
        # How many times a stored, unfinished run was let go of for the periodic sweep to
        # find (store outage, a bug, an interrupted accept). While it does not move, every
        # NEW/BUFFERED run of this host is in flight here and the sweep can be skipped.
        self.left_behind = 0

    # --- producer side -----------------------------------------------------------------

    def has_room(self) -> bool:
        return self.depth() < self._limits.capacity

    def depth(self) -> int:
        return sum(lane.depth() for lane in self._lanes.values())

    def is_queued(self, algorithm: str, run_id: str) -> bool:
        return (algorithm, run_id) in self._in_flight

    def hold(self, algorithm: str, run_id: str) -> None:
        """An accept is writing this run: the sweep must leave it alone until the accept
        submits it or lets it go (``release``). Without this, a sweep could find the
        row NEW before its payload is stored and close an accepted run as lost."""
        self._in_flight.add((algorithm, run_id))

    def release(self, algorithm: str, run_id: str) -> None:
        self._in_flight.discard((algorithm, run_id))

    def note_left_behind(self) -> None:
        """A stored run may be NEW/BUFFERED without being in flight: the sweep must look."""
        self.left_behind += 1

    def submit(self, key: RunKey) -> None:
        """Queue an accepted (stored) run. Never refuses: the run is already durable."""
        self._in_flight.add((key.algorithm, key.id))
        self._lane(key.cluster).push(key)

    def _lane(self, cluster: str) -> _Lane:
        lane = self._lanes.get(cluster)
        if lane is None:
            limits = self._limits
            lane = self._lanes[cluster] = _Lane(limits.capacity, limits.rate, limits.burst)
            if self._running:
                self._start_lane(cluster, lane)
        return lane

    def _retry_later(self, key: RunKey, delay: float) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.submit(key)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    # --- consumer side -----------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        for cluster, lane in self._lanes.items():
            self._start_lane(cluster, lane)

    def _start_lane(self, cluster: str, lane: _Lane) -> None:
        lane.workers = [
            asyncio.create_task(self._work(lane), name=f"launch-{cluster}-{i}")
            for i in range(self._limits.workers)
        ]

    async def stop(self) -> None:
        self._running = False
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        workers = [task for lane in self._lanes.values() for task in lane.workers]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # RUNNING commits already under way are let finish (each is one store write).
        await asyncio.gather(*self._commits, return_exceptions=True)
        for lane in self._lanes.values():
            lane.workers = []

    async def _work(self, lane: _Lane) -> None:
        while True:
            key = await lane.next()
            try:
                await self.process(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the worker; the sweep finds the run again
                log.exception("unexpected error launching %s/%s", key.algorithm, key.id)
                self._in_flight.discard((key.algorithm, key.id))
                self.note_left_behind()

    async def process(self, key: RunKey) -> None:
        """Take one run as far as it can go now; a scheduled retry keeps it in flight."""
        try:
            retrying = await self._launch(key)
        except BackendUnavailable as exc:
            if self._backoff.exhausted(key.attempt + 1):
                log.warning(
                    "store unavailable for %s/%s, leaving it to the sweep: %s",
                    key.algorithm,
                    key.id,
                    exc,
                )
                self._in_flight.discard((key.algorithm, key.id))
                self.note_left_behind()
                return
            self._retry_later(
                RunKey(key.algorithm, key.id, key.attempt + 1, key.cluster),
                self._backoff.delay(key.attempt),
            )
            return
        if not retrying:
            self._in_flight.discard((key.algorithm, key.id))

    async def _transition(self, run: Run, target: S, **fields: Any) -> Run | None:
        try:
            updated = await self._store.transition(run.algorithm, run.id, target, **fields)
        except (InvalidTransition, NotFound):
            return None
        self._on_change(run.algorithm, run.id)
        return updated

    async def _launch(self, key: RunKey) -> bool:
        """Return True when a retry was scheduled."""
        run = await self._store.get(key.algorithm, key.id)
        if run is None or run.lifecycle_stage.is_terminal or run.lifecycle_stage is S.RUNNING:
            return False
        entry: SubmissionEntry | None = None
        if run.lifecycle_stage is S.NEW:
            # A run that cannot be rendered (a missing workgroup, a record the renderer
            # cannot use) would fail again on every try: it fails now, with the reason,
            # instead of going round the sweep for ever. A template source that is down
            # (BackendUnavailable) is retried like a store outage.
            reason = ""
            try:
                entry = await self._render(run)
            except BackendUnavailable:
                raise
            except LaunchError as exc:
                reason = exc.message
            except Exception as exc:
                log.exception("rendering the Job of %s/%s failed", run.algorithm, run.id)
                reason = repr(exc)
            if entry is None:
                await self._transition(
                    run,
                    S.SCHEDULING_FAILED,
                    algorithm_failure_cause=LAUNCH_FAILED_CAUSE + reason,
                    algorithm_failure_details=f"Rendering its Job failed: {reason}",
                )
                return False
            try:
                run = await self._store.buffer(entry)
            except (InvalidTransition, NotFound):  # cancelled meanwhile
                return False
            self._on_change(run.algorithm, run.id)
        if run.job_uid == DRY_RUN_UID:
            await self._transition(run, S.COMPLETED, sent_at=utcnow())
            return False
        if entry is None:
            entry = await self._store.get_submission(run.algorithm, run.id)
        if entry is None:
            await self._transition(
                run,
                S.SCHEDULING_FAILED,
                algorithm_failure_cause=LAUNCH_FAILED_CAUSE + "no Job was stored",
                algorithm_failure_details="The submission buffer has no entry for this run.",
            )
            return False
        wait = self._lane(entry.cluster).bucket.reserve(1)
        if wait > 0:
            await asyncio.sleep(wait)
            # A cancel may have landed while this run waited for its token: a run that has
            # no Job yet must not get one (SPEC §2).
            current = await self._store.get(run.algorithm, run.id)
            if current is None or current.lifecycle_stage is not S.BUFFERED:
                return False
        try:
            uid = await self._launcher.launch(entry.cluster, entry.template)
        except LaunchError as exc:
            self.launch_failures += 1
            if exc.retryable and not self._backoff.exhausted(key.attempt + 1):
                log.info(
                    "launch of %s/%s failed (attempt %d), retrying: %s",
                    run.algorithm,
                    run.id,
                    key.attempt + 1,
                    exc.message,
                )
                self._retry_later(
                    RunKey(key.algorithm, key.id, key.attempt + 1, key.cluster),
                    self._backoff.delay(key.attempt),
                )
                return True
            await self._transition(
                run,
                S.SCHEDULING_FAILED,
                algorithm_failure_cause=LAUNCH_FAILED_CAUSE + exc.message,
                algorithm_failure_details=(
                    f"Gave up after {key.attempt + 1} attempt(s): {exc.message}"
                ),
            )
            return False
        self.launched += 1
        # The worker does not wait for this commit: the Job exists, and a worker's time
        # is the shard's launch concurrency. Should the commit be lost (the store down,
        # nexus stopped), the supervisor's watch sees the Job and records RUNNING itself,
        # and the scheduler's own sweep queues the run again.
        commit = asyncio.create_task(self._commit_running(run, uid, entry.cluster))
        self._commits.add(commit)
        commit.add_done_callback(self._commits.discard)
        return False

    async def _commit_running(self, run: Run, uid: str, cluster: str) -> None:
        try:
            committed = await self._transition(run, S.RUNNING, job_uid=uid, sent_at=utcnow())
            if committed is None:
                current = await self._store.get(run.algorithm, run.id)
                if current is not None and current.lifecycle_stage is S.CANCELLED:
                    # Cancelled while we were creating the Job: do not leave it running.
                    await self._launcher.cancel(cluster, run.id, "Background")
        except NexusError as exc:
            # Still BUFFERED with a Job: the supervisor's watch records RUNNING when it
            # sees the Job, and the sweep queues the run again, whose launch then finds
            # the Job (launching is idempotent) and commits RUNNING.
            log.warning(
                "run %s/%s launched as %s, but its RUNNING commit failed: %s",
                run.algorithm,
                run.id,
                uid,
                exc,
            )
            self.note_left_behind()
