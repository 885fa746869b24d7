"""The configuration controller's work queue: keys (kind, name) to reconcile, each at
most once in the queue and never by two workers at once, retried with per-key
exponential backoff, and started no faster than an overall rate.

The keys wait in the crate's :class:`~nexus._rust_queue.RunQueue` (one lane; a retry is
pushed with its backoff delay), the rate is its TokenBucket and the delays its Backoff.
What stays in Python is only the bookkeeping a controller queue needs on top: which
keys are queued or in progress (so a burst of watch events for one object costs one
sync), and how often each key has failed in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from nexus._rust_queue import Backoff, RunQueue, TokenBucket
from nexus.errors import NexusError

log = logging.getLogger("nexus.controller")

Key = tuple[str, str]
LANE = "controller"
NEVER_GIVE_UP = 2**32 - 1  # a shard may be away for long; its objects are never dropped


class QueueLimits:
    def __init__(
        self, *, rate: float, burst: int, base_delay: float, max_delay: float, workers: int
    ) -> None:
        self.rate, self.burst, self.workers = rate, burst, workers
        self.base_delay, self.max_delay = base_delay, max_delay


class WorkQueue:
    def __init__(
        self,
        handle: Callable[[Key], Awaitable[None]],
        limits: QueueLimits,
        *,
        on_done: Callable[[Key, float, bool], None] = lambda key, seconds, ok: None,
    ) -> None:
        self._handle = handle
        self._on_done = on_done
        self._limits = limits
        self._queue = RunQueue()
        self._queue.configure_lane(LANE, 2**31)
        self._bucket = TokenBucket(limits.rate, limits.burst)
        self._backoff = Backoff(limits.base_delay, limits.max_delay, NEVER_GIVE_UP)
        self._wakeup = asyncio.Event()
        self._queued: dict[Key, tuple[int, float]] = {}  # key -> (token, due) of its last push
        self._active: set[Key] = set()
        self._again: set[Key] = set()  # added while being processed: queue once done
        self._failures: dict[Key, int] = {}
        self._tokens = 0
        self._workers: list[asyncio.Task[None]] = []

    def depth(self) -> int:
        """Keys waiting (delayed retries included)."""
        return len(self._queued)

    def add(self, key: Key, delay: float = 0.0) -> None:
        """Queue ``key`` (now, or after ``delay``); a key queued already is brought
        forward when asked for sooner, a key being processed is queued once it is done."""
        if key in self._active:
            self._again.add(key)
            return
        due = time.monotonic() + delay
        queued = self._queued.get(key)
        if queued is not None and queued[1] <= due:
            return  # already waiting, due at least as soon
        self._tokens += 1
        self._queued[key] = (self._tokens, due)
        self._queue.push(LANE, "", (key, self._tokens), delay=delay)
        self._wakeup.set()

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"controller worker {n}")
            for n in range(self._limits.workers)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _next(self) -> Key:
        while True:
            self._wakeup.clear()
            taken = self._queue.pop(LANE)
            if taken is not None:
                key, token = cast("tuple[Key, int]", taken.item)  # add() pushes only these
                queued = self._queued.get(key)
                if queued is not None and queued[0] == token:  # else: superseded by a later push
                    del self._queued[key]
                    return key
                continue
            try:
                async with asyncio.timeout(self._queue.next_due(LANE)):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _work(self) -> None:
        while True:
            key = await self._next()
            wait = self._bucket.reserve(1)
            if wait > 0:
                await asyncio.sleep(wait)
            self._active.add(key)
            began = time.perf_counter()
            ok = False
            try:
                await self._handle(key)
                ok = True
            except asyncio.CancelledError:
                raise
            except NexusError as exc:
                log.info("%s '%s' not in step yet: %s", *key, exc.message)
            except Exception:  # a bug must not kill the worker; the key is retried
                log.exception("unexpected error syncing %s '%s'", *key)
            finally:
                self._active.discard(key)
                self._on_done(key, time.perf_counter() - began, ok)
            if ok:
                self._failures.pop(key, None)
            else:
                attempt = self._failures.get(key, 0)
                self._failures[key] = attempt + 1
                self.add(key, self._backoff.delay(attempt))
            if key in self._again:
                self._again.discard(key)
                self.add(key)
