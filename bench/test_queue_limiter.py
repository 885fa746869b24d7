"""Target 5: the Rust queue and limiter against their pure-Python equivalents.

One "item" is what the launch pipeline does per run on its hot path: take a token from
the bucket and move a key through the queue (push, later pop). Three implementations
process the same batch side by side:

* ``rust``: ``nexus._rust_queue.TokenBucket.try_acquire`` + ``Queue.push``/``pop``;
* ``python-asyncio``: a Python token bucket (the same GCRA arithmetic) + ``asyncio.Queue``
  (``put_nowait``/``get_nowait``) — the baseline of the target (Rust at least 2x faster);
* ``python-deque``: the Python bucket + ``collections.deque``, the fastest pure-Python
  queue there is (unbounded, single-threaded: reported for context).

The limiter's rate is set so high (1e9/s) that it never refuses: the arithmetic is done,
the throughput is not capped. pytest-benchmark times each implementation; the ratio of
the target is taken from rounds interleaved in one loop so that machine noise hits both
sides alike. The threaded test checks that 4 producers and 4 consumers lose and duplicate
nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import pytest

from nexus._rust_queue import Queue, TokenBucket

BATCH = 20_000
RATE, BURST = 1e9, 1_000_000


class PyTokenBucket:
    """The Python equivalent of the Rust bucket: GCRA (theoretical arrival time)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.interval = 1.0 / rate
        self.tolerance = burst * self.interval
        self.tat = time.monotonic()
        self.lock = threading.Lock()

    def try_acquire(self, n: int = 1) -> float:
        now = time.monotonic()
        tat = self.tat if self.tat > now else now
        new_tat = tat + n * self.interval
        if new_tat - now > self.tolerance:
            return new_tat - now - self.tolerance
        self.tat = new_tat
        return 0.0

    def try_acquire_locked(self, n: int = 1) -> float:
        with self.lock:
            return self.try_acquire(n)


def rust_batch(items: int = BATCH) -> Callable[[], None]:
    queue, bucket = Queue(items), TokenBucket(RATE, BURST)

    def run() -> None:
        acquire, push, pop = bucket.try_acquire, queue.push, queue.pop
        for i in range(items):
            acquire(1)
            push(i)
        for _ in range(items):
            pop()

    return run


def asyncio_batch(items: int = BATCH) -> Callable[[], None]:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=items)
    bucket = PyTokenBucket(RATE, BURST)

    def run() -> None:
        acquire, push, pop = bucket.try_acquire, queue.put_nowait, queue.get_nowait
        for i in range(items):
            acquire(1)
            push(i)
        for _ in range(items):
            pop()

    return run


def deque_batch(items: int = BATCH) -> Callable[[], None]:
    queue: deque[int] = deque()
    bucket = PyTokenBucket(RATE, BURST)

    def run() -> None:
        acquire, push, pop = bucket.try_acquire, queue.append, queue.popleft
        for i in range(items):
            acquire(1)
            push(i)
        for _ in range(items):
            pop()

    return run


IMPLEMENTATIONS = {"rust": rust_batch, "python-asyncio": asyncio_batch, "python-deque": deque_batch}


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_push_pop_with_limiter(benchmark, name):
    benchmark.group = f"queue + limiter, {BATCH} items (acquire, push, pop)"
    benchmark.extra_info["items"] = BATCH
    benchmark.pedantic(IMPLEMENTATIONS[name](), rounds=15, iterations=1, warmup_rounds=2)


def interleaved(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per batch of each, measured round-robin."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm up
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def test_rust_is_twice_as_fast_as_python(bench):
    medians = interleaved(
        {name: make() for name, make in IMPLEMENTATIONS.items()}, rounds=5 if bench.quick else 21
    )
    per_item = {name: seconds / BATCH * 1e9 for name, seconds in medians.items()}
    ratio = medians["python-asyncio"] / medians["rust"]
    bench.record(
        "5",
        "Rust queue+limiter speed-up over Python bucket + asyncio.Queue",
        ratio,
        ">= 2.0",
        ratio >= 2.0,
        {
            "ns_per_item": {k: round(v, 1) for k, v in per_item.items()},
            "speedup_vs_deque": round(medians["python-deque"] / medians["rust"], 2),
        },
    )


def _threaded(
    push: Callable[[int], bool],
    pop: Callable[[], object],
    acquire: Callable[[], float],
    producers: int,
    consumers: int,
    per_producer: int,
    timeout: float,
) -> tuple[Counter, float, bool]:
    """Producers push disjoint ranges; consumers pop (taking a token each) until all are in."""
    total = producers * per_producer
    received: list[list[int]] = [[] for _ in range(consumers)]
    taken = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + timeout
    timed_out = threading.Event()

    def produce(k: int) -> None:
        for i in range(k * per_producer, (k + 1) * per_producer):
            while not push(i):  # full: let a consumer run
                if time.monotonic() > deadline:
                    timed_out.set()
                    return
                time.sleep(0)

    def consume(k: int) -> None:
        mine = received[k]
        while True:
            item = pop()
            if item is None:
                with lock:
                    if taken[0] >= total:
                        return
                if time.monotonic() > deadline:
                    timed_out.set()
                    return
                time.sleep(0)
                continue
            acquire()
            mine.append(item)
            with lock:
                taken[0] += 1

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    threads += [threading.Thread(target=consume, args=(k,)) for k in range(consumers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    seconds = time.perf_counter() - start
    return Counter(i for part in received for i in part), seconds, timed_out.is_set()


def test_four_producers_four_consumers(bench):
    per_producer = 2_500 if bench.quick else 25_000
    total = 4 * per_producer
    expected = Counter(range(total))

    queue, bucket = Queue(4096), TokenBucket(RATE, BURST)
    rust_seen, rust_seconds, rust_late = _threaded(
        queue.push, queue.pop, lambda: bucket.try_acquire(1), 4, 4, per_producer, 120
    )

    import queue as stdlib_queue

    py_queue: stdlib_queue.Queue[int] = stdlib_queue.Queue(4096)
    py_bucket = PyTokenBucket(RATE, BURST)

    def py_push(item: int) -> bool:
        try:
            py_queue.put_nowait(item)
            return True
        except stdlib_queue.Full:
            return False

    def py_pop() -> int | None:
        try:
            return py_queue.get_nowait()
        except stdlib_queue.Empty:
            return None

    py_seen, py_seconds, py_late = _threaded(
        py_push, py_pop, py_bucket.try_acquire_locked, 4, 4, per_producer, 120
    )

    lost = sum((expected - rust_seen).values())
    duplicated = sum((rust_seen - expected).values())
    exact = rust_seen == expected and not rust_late
    bench.record(
        "5",
        "4 producers + 4 consumers: items lost / duplicated (Rust queue)",
        lost + duplicated,
        "0 of each",
        exact,
        {
            "items": total,
            "lost": lost,
            "duplicated": duplicated,
            "rust_items_per_s": round(total / rust_seconds),
            "python_queue_items_per_s": round(total / py_seconds),
            "threaded_speedup_vs_queue.Queue": round(py_seconds / rust_seconds, 2),
            "python_exact": py_seen == expected and not py_late,
        },
    )
    assert exact, f"lost {lost}, duplicated {duplicated}, timed out {rust_late}"
