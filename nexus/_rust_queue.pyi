"""Hot path of nexus, written in Rust: bounded MPMC queue, token bucket and backoff.

Every class is immutable from Python's side and safe to share between threads.
"""

from typing import final

@final
class Queue:
    """Bounded lock-free multi-producer/multi-consumer FIFO queue of Python objects.

    Objects pushed by one thread come out in the order that thread pushed them.
    """

    def __init__(self, capacity: int) -> None:
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
class TokenBucket:
    """Lock-free token bucket (GCRA): ``burst`` tokens, refilled at ``rate`` per second.

    It starts full. The refill interval is rounded to whole nanoseconds.
    """

    def __init__(self, rate: float, burst: int) -> None:
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

    def __init__(self, base: float, max: float, max_attempts: int) -> None:
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
