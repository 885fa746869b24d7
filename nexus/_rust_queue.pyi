"""Hot path of nexus, written in Rust: run queue, bounded MPMC queue, token bucket and
backoff.

Every class is immutable from Python's side and safe to share between threads.
Constructors are written as ``__new__``: that is where the extension takes its
arguments (``__init__`` is ``object``'s).
"""

from typing import Self, final

__all__ = [
    "Backoff",
    "Dequeued",
    "KeyedTokenBucket",
    "LaneFull",
    "ManualClock",
    "Queue",
    "QueueFull",
    "RunQueue",
    "TenantLimit",
    "TokenBucket",
]

@final
class Queue:
    """Bounded lock-free multi-producer/multi-consumer FIFO queue of Python objects.

    Objects pushed by one thread come out in the order that thread pushed them.
    """

    def __new__(cls, capacity: int) -> Self:
        """Create a queue holding at most ``capacity`` objects.

        Raises ValueError unless 1 <= capacity <= 2**26 (slots are allocated up front).
        """

    @property
    def capacity(self) -> int:
        """The maximum number of objects the queue holds."""

    def __len__(self) -> int:
        """The number of objects in the queue at some instant during the call."""

    def push(self, item: object) -> bool:
        """Append ``item``; False when the queue is full (the item is not taken)."""

    def pop(self) -> object | None:
        """Remove and return the oldest object, or None when empty. Never blocks."""

    def pop_many(self, max_items: int) -> list[object]:
        """Remove up to ``max_items`` objects, oldest first; possibly ``[]``.

        Raises ValueError if ``max_items`` is negative. Never blocks.
        """

    def pop_wait(self, timeout: float) -> object | None:
        """Remove the oldest object, waiting up to ``timeout`` seconds for one.

        Returns None if none arrived in time. The GIL is released while waiting, and
        signals (Ctrl-C) are checked every 50 ms. ``timeout`` may be ``math.inf`` to
        wait until an object arrives; ValueError if negative or NaN.
        """

    def remaining(self) -> int:
        """Free slots: ``capacity - len(self)``."""

@final
class KeyedTokenBucket:
    """A token bucket per key (``burst`` tokens, refilled at ``rate`` per second), in
    bounded memory: a key whose bucket is full again is forgotten when ``max_keys`` are
    tracked, and if too few are, the keys closest to full."""

    def __new__(cls, rate: float, burst: int, max_keys: int = 10_000) -> Self:
        """Raises ValueError as TokenBucket does, or if ``max_keys < 1``."""

    @property
    def rate(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def max_keys(self) -> int: ...
    def __len__(self) -> int:
        """Keys tracked (those whose bucket is not known to be full)."""

    def try_acquire(self, key: str, n: int = 1) -> float:
        """Take ``n`` tokens from ``key``'s bucket: 0.0 when granted, else the seconds to
        wait (nothing taken). Raises ValueError if ``n < 0`` or ``n > burst``."""

@final
class TokenBucket:
    """Lock-free token bucket (GCRA): ``burst`` tokens, refilled at ``rate`` per second.

    It starts full. The refill interval is rounded to whole nanoseconds.
    """

    def __new__(cls, rate: float, burst: int) -> Self:
        """Create a bucket. ``rate <= 0``, ``math.inf`` or above 2e9 means unlimited.

        Raises ValueError if ``burst < 1``, ``rate`` is NaN, or ``rate`` is so low that
        ``burst / rate`` exceeds about 146 years.
        """

    @property
    def rate(self) -> float:
        """Tokens per second; ``math.inf`` when unlimited."""

    @property
    def burst(self) -> int:
        """The bucket's size: the most tokens one request may take."""

    def try_acquire(self, n: int = 1) -> float:
        """Take ``n`` tokens if all are available now.

        Returns 0.0 when granted; otherwise the seconds until they would be, and
        nothing is taken. Raises ValueError if ``n`` is negative or exceeds ``burst``
        (never grantable), also when unlimited.
        """

    def reserve(self, n: int = 1) -> float:
        """Take ``n`` tokens now, whatever the balance (``n`` may exceed ``burst``).

        Returns the seconds the caller must wait before acting on them (0.0 when they
        were available); later callers queue up behind it. For callers that sleep, such
        as asyncio tasks. Raises ValueError if ``n`` is negative.
        """

@final
class Backoff:
    """Capped exponential backoff: attempt k (from 0) waits min(base * 2**k, max)."""

    def __new__(cls, base: float, max: float, max_attempts: int) -> Self:
        """Durations in seconds.

        Raises ValueError if ``base`` or ``max`` is negative, NaN or infinite, if
        ``base > max``, or if ``max_attempts`` is not in 0 .. 2**32 - 1.
        """

    @property
    def base(self) -> float:
        """Delay of attempt 0, in seconds."""

    @property
    def max(self) -> float:
        """Cap on any delay, in seconds."""

    @property
    def max_attempts(self) -> int:
        """Attempts allowed before an item is given up."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt``; ValueError if negative."""

    def exhausted(self, attempt: int) -> bool:
        """Whether ``attempt >= max_attempts``: no retry is left; ValueError if negative."""

    def jittered(self, attempt: int, random: int) -> float:
        """Seconds to wait before retry ``attempt``, spread over ``[0, delay(attempt))``.

        "Full jitter", so that retries of many runs do not arrive together. ``random``
        is a word in 0 .. 2**64 - 1 (e.g. ``random.getrandbits(64)``); its top 32 bits
        pick the point, so the result is deterministic for a given word. ValueError if
        ``attempt`` is negative; OverflowError if ``random`` is out of range.
        """

@final
class ManualClock:
    """A clock that moves only when told to: a RunQueue in virtual time, for tests.

    Threads blocked in ``RunQueue.pop_wait`` on it notice an ``advance`` within about
    a millisecond.
    """

    def __new__(cls, start: float = 0.0) -> Self:
        """A clock reading ``start`` seconds; ValueError if negative, NaN or infinite."""

    def now(self) -> float:
        """The clock's reading, in seconds."""

    def advance(self, seconds: float) -> None:
        """Move the clock forward; ValueError if ``seconds`` is negative, NaN or inf."""

class QueueFull(Exception):
    """``RunQueue.push`` refused the item for back-pressure (an HTTP 429).

    The message names the lane or tenant and the bound; the subclasses carry them as
    attributes. The item was not taken.
    """

class LaneFull(QueueFull):
    """The lane already holds its capacity of items, delayed ones included."""

    lane: int | str
    """The lane as given to ``push``."""
    capacity: int
    """The lane's capacity."""

class TenantLimit(QueueFull):
    """The tenant already has its limit of items queued, over all lanes."""

    tenant: str
    limit: int

@final
class Dequeued:
    """An item taken from a RunQueue, with what metrics need about its stay."""

    @property
    def item(self) -> object:
        """The object pushed (the same object, not a copy)."""

    @property
    def tenant(self) -> str:
        """The tenant it was pushed for."""

    @property
    def recovered(self) -> bool:
        """Whether it was pushed with ``recovered=True``."""

    @property
    def waited(self) -> float:
        """Seconds on the queue's clock from the moment it was ready (pushed, or its
        delay expired) to the pop: the queue wait that fair share decides."""

    @property
    def delay(self) -> float:
        """The ``delay`` it was pushed with, in seconds."""

@final
class RunQueue:
    """Per-shard lanes of runs: bounded, with delayed retries, recovered runs first and
    weighted fair queueing between tenants.

    A lane is keyed by an int or a str (``1`` and ``"1"`` are different lanes) and
    must be configured before use. Within a lane, items pushed with
    ``recovered=True`` are popped before any other; within each of those two classes,
    tenants are served by weighted fair queueing: a tenant's items come out in the
    order pushed, and backlogged tenants share the pops in proportion to their weights
    (equal by default); a tenant that was not backlogged is served at the next pop,
    so another's 50,000 queued items do not hold back its single one. Every item
    counts against its lane's capacity and its tenant's limit from push to pop,
    delayed or not; nothing is held outside these bounds. Safe to share between
    threads; ``pop_wait`` releases the GIL.

    A failed launch waiting for its backoff is pushed again with
    ``recovered=True, delay=backoff.jittered(attempt, random.getrandbits(64))``: it is
    held until due, then goes ahead of new runs.
    """

    def __new__(cls, *, tenant_limit: int | None = None, clock: ManualClock | None = None) -> Self:
        """A queue with no lanes yet.

        ``tenant_limit`` caps the items any one tenant may have queued over all lanes
        (None: no cap but the lanes'). ``clock`` is a ManualClock for tests in virtual
        time; by default the real monotonic clock. ValueError if ``tenant_limit`` < 0.
        """

    def configure_lane(self, lane: int | str, capacity: int) -> None:
        """Create ``lane`` holding at most ``capacity`` items, or change its capacity.

        Items already held stay even above a lowered capacity; pushes are refused until
        the lane is below it. ValueError unless ``capacity >= 1``; TypeError if ``lane``
        is not an int in 64 bits or a str.
        """

    def configure_tenant(self, tenant: str, *, weight: int = 1, limit: int | None = None) -> None:
        """Set ``tenant``'s weight (1 .. 1,000,000; 1 if never configured) and its limit
        on queued items (None: the queue's ``tenant_limit``; 0 refuses all its new
        items). Applies to items queued already. ValueError if either is out of range.
        """

    def push(
        self,
        lane: int | str,
        tenant: str,
        item: object,
        *,
        recovered: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Queue ``item`` in ``lane`` for ``tenant``, ready ``delay`` seconds from now.

        ``recovered=True`` is for a run re-queued after a restart or taken over from a
        dead scheduler, and for a retry: it goes ahead of new runs, and the tenant's
        limit does not refuse it (it was admitted under it once). Never blocks.

        Raises LaneFull when the lane holds its capacity; TenantLimit when
        ``recovered`` is False and the tenant has its limit queued; KeyError if the
        lane is not configured; ValueError if ``delay`` is negative, NaN or infinite;
        TypeError for a bad lane. Refused, the item is not taken.
        """

    def pop(self, lane: int | str) -> Dequeued | None:
        """Take the next ready item of ``lane``, or None when none is. Never blocks.

        Delayed items due by now are released first. KeyError if the lane is not
        configured; TypeError for a bad lane.
        """

    def pop_wait(self, lane: int | str, timeout: float) -> Dequeued | None:
        """Like ``pop``, waiting up to ``timeout`` seconds of real time for an item to
        be pushed into ``lane`` or to fall due.

        Returns None if none was ready for this caller in time. The GIL is released
        while waiting, and signals (Ctrl-C) are checked every 50 ms. ``timeout`` may be
        ``math.inf``; ValueError if negative or NaN; KeyError for an unknown lane.
        """

    def __len__(self) -> int:
        """Items held in all lanes, delayed ones included."""

    def depth(self, lane: int | str) -> int:
        """Items held in ``lane``, delayed ones included: what its capacity bounds.

        KeyError if the lane is not configured.
        """

    def delayed(self, lane: int | str) -> int:
        """Items of ``lane`` whose delay has not expired yet; KeyError if unknown."""

    def next_due(self, lane: int | str) -> float | None:
        """Seconds until the earliest delayed item of ``lane`` is due, or None if none
        is waiting. For callers that sleep instead of blocking. KeyError if unknown."""

    def tenant_depths(self) -> dict[str, int]:
        """Items queued per tenant over all lanes, delayed ones included; tenants with
        none are absent."""
