"""Behaviour of the Rust extension `nexus._rust_queue` as Python sees it."""

import math
import sys
import threading
import time

import pytest

from nexus._rust_queue import Backoff, KeyedTokenBucket, Queue, TokenBucket

# One token an hour: a real-clock bucket whose balance cannot visibly move during a test.
HOURLY = 1 / 3600


class TestQueue:
    @pytest.mark.parametrize("capacity", [0, -1, 2**26 + 1])
    def test_rejects_capacity_out_of_range(self, capacity):
        with pytest.raises(ValueError, match="capacity"):
            Queue(capacity)

    def test_capacity_is_read_only(self):
        queue = Queue(3)
        assert queue.capacity == 3
        with pytest.raises(AttributeError):
            queue.capacity = 4

    def test_fifo_len_and_remaining(self):
        queue = Queue(4)
        assert (len(queue), queue.remaining()) == (0, 4)
        for item in ("a", "b", "c"):
            assert queue.push(item)
        assert (len(queue), queue.remaining()) == (3, 1)
        assert [queue.pop(), queue.pop(), queue.pop()] == ["a", "b", "c"]
        assert queue.pop() is None

    def test_keeps_object_identity(self):
        queue = Queue(1)
        payload = {"run": 1}
        queue.push(payload)
        assert queue.pop() is payload

    def test_push_when_full_returns_false_and_keeps_no_reference(self):
        queue = Queue(1)
        assert queue.push(object())
        rejected = object()
        refs = sys.getrefcount(rejected)
        assert queue.push(rejected) is False
        assert sys.getrefcount(rejected) == refs
        assert len(queue) == 1

    def test_pop_many(self):
        queue = Queue(8)
        for i in range(5):
            queue.push(i)
        assert queue.pop_many(0) == []
        assert queue.pop_many(3) == [0, 1, 2]
        assert queue.pop_many(10) == [3, 4]
        assert queue.pop_many(10) == []
        with pytest.raises(ValueError, match="max_items"):
            queue.pop_many(-1)

    @pytest.mark.parametrize("timeout", [-0.1, math.nan])
    def test_pop_wait_rejects_bad_timeouts(self, timeout):
        with pytest.raises(ValueError, match="timeout"):
            Queue(1).pop_wait(timeout)

    def test_pop_wait_returns_an_item_already_there(self):
        queue = Queue(1)
        queue.push("ready")
        assert queue.pop_wait(0) == "ready"

    def test_pop_wait_times_out_with_none(self):
        queue = Queue(1)
        assert queue.pop_wait(0) is None
        started = time.monotonic()
        assert queue.pop_wait(0.2) is None
        elapsed = time.monotonic() - started
        # Lower bound is the contract; the upper one only catches a wait that ignores it.
        assert 0.19 <= elapsed < 5

    def test_pop_wait_returns_an_item_pushed_from_another_thread(self):
        queue = Queue(1)
        # The pusher needs the GIL while the main thread waits: this hangs (until the
        # timeout) unless pop_wait releases it.
        pusher = threading.Timer(0.05, queue.push, args=("late",))
        pusher.start()
        started = time.monotonic()
        assert queue.pop_wait(30) == "late"
        assert time.monotonic() - started < 10
        pusher.join()

    def test_pop_wait_without_deadline(self):
        queue = Queue(1)
        pusher = threading.Timer(0.05, queue.push, args=("late",))
        pusher.start()
        assert queue.pop_wait(math.inf) == "late"
        pusher.join()

    def test_four_producers_four_consumers_lose_and_duplicate_nothing(self):
        producers, consumers, per_producer = 4, 4, 5_000
        queue = Queue(64)
        drained = threading.Event()
        received = [[] for _ in range(consumers)]

        def produce(p):
            for i in range(p * per_producer, (p + 1) * per_producer):
                while not queue.push(i):
                    time.sleep(0)

        def consume(c):
            got = received[c]
            while not drained.is_set():
                # Alternate the blocking and the batch pop so both paths are exercised.
                if c % 2 == 0:
                    item = queue.pop_wait(0.05)
                    if item is not None:
                        got.append(item)
                else:
                    batch = queue.pop_many(16)
                    got.extend(batch)
                    if not batch:
                        time.sleep(0)

        threads = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
        threads += [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for thread in threads:
            thread.start()
        for thread in threads[consumers:]:
            thread.join()
        # Every item is pushed; once the queue is empty nothing more can arrive.
        while len(queue):
            time.sleep(0.01)
        drained.set()
        for thread in threads[:consumers]:
            thread.join()

        everything = [item for got in received for item in got]
        assert len(everything) == producers * per_producer
        assert set(everything) == set(range(producers * per_producer))
        for got in received:
            for p in range(producers):
                mine = [i for i in got if i // per_producer == p]
                assert mine == sorted(mine), "items of one producer were reordered"


class TestTokenBucket:
    @pytest.mark.parametrize(("rate", "burst"), [(1.0, 0), (1.0, -1), (math.nan, 1), (1e-9, 10)])
    def test_rejects_bad_configuration(self, rate, burst):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)

    def test_properties(self):
        bucket = TokenBucket(2.5, 4)
        assert (bucket.rate, bucket.burst) == (2.5, 4)

    def test_grants_the_burst_then_refuses_without_taking(self):
        bucket = TokenBucket(HOURLY, 2)
        assert bucket.try_acquire() == 0.0
        assert bucket.try_acquire(1) == 0.0
        first = bucket.try_acquire()
        assert 3599 < first <= 3600
        # A refusal took nothing: asking again does not double the wait.
        assert 3599 < bucket.try_acquire() <= first
        assert 7199 < bucket.try_acquire(2) <= 7200

    def test_refills_at_the_rate(self):
        bucket = TokenBucket(50, 1)
        assert bucket.try_acquire() == 0.0
        wait = bucket.try_acquire()
        assert 0 < wait <= 0.02
        time.sleep(wait + 0.01)
        assert bucket.try_acquire() == 0.0

    def test_n_beyond_burst_or_negative_is_an_error(self):
        bucket = TokenBucket(HOURLY, 2)
        with pytest.raises(ValueError, match="burst"):
            bucket.try_acquire(3)
        with pytest.raises(ValueError):
            bucket.try_acquire(-1)
        with pytest.raises(ValueError):
            bucket.reserve(-1)
        assert bucket.try_acquire(2) == 0.0

    def test_reserve_takes_and_returns_the_wait(self):
        bucket = TokenBucket(HOURLY, 1)
        assert bucket.reserve() == 0.0
        assert 3599 < bucket.reserve() <= 3600
        assert 3 * 3600 - 1 < bucket.reserve(2) <= 3 * 3600
        assert 4 * 3600 - 1 < bucket.try_acquire() <= 4 * 3600

    @pytest.mark.parametrize("rate", [0, -5, math.inf])
    def test_unlimited(self, rate):
        bucket = TokenBucket(rate, 3)
        assert bucket.rate == math.inf
        assert all(bucket.try_acquire(3) == 0.0 for _ in range(1000))
        assert bucket.reserve(10**6) == 0.0
        with pytest.raises(ValueError):
            bucket.try_acquire(4)

    def test_shared_between_threads_grants_exactly_the_burst(self):
        bucket = TokenBucket(HOURLY, 500)
        granted = []

        def take():
            granted.append(sum(bucket.try_acquire() == 0.0 for _ in range(300)))

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(granted) == 500


class TestBackoff:
    def test_properties(self):
        backoff = Backoff(0.5, 30, 7)
        assert (backoff.base, backoff.max, backoff.max_attempts) == (0.5, 30.0, 7)

    def test_delays_double_up_to_the_cap(self):
        backoff = Backoff(0.1, 10, 5)
        delays = [backoff.delay(attempt) for attempt in range(9)]
        assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10])
        assert backoff.delay(1000) == 10.0
        assert backoff.delay(2**40) == 10.0

    def test_exhausted(self):
        backoff = Backoff(0.1, 10, 3)
        assert [backoff.exhausted(attempt) for attempt in range(5)] == [False] * 3 + [True] * 2
        assert Backoff(0, 0, 0).exhausted(0)

    @pytest.mark.parametrize(
        ("base", "max_", "max_attempts"),
        [
            (-1, 1, 1),
            (1, -1, 1),
            (2, 1, 1),
            (math.nan, 1, 1),
            (1, math.inf, 1),
            (1, 2, -1),
            (1, 2, 2**32),
        ],
    )
    def test_rejects_bad_arguments(self, base, max_, max_attempts):
        with pytest.raises(ValueError):
            Backoff(base, max_, max_attempts)

    def test_rejects_negative_attempts(self):
        backoff = Backoff(0.1, 1, 3)
        with pytest.raises(ValueError, match="attempt"):
            backoff.delay(-1)
        with pytest.raises(ValueError, match="attempt"):
            backoff.exhausted(-1)


def test_keyed_token_bucket_limits_each_key_and_checks_its_arguments():
    buckets = KeyedTokenBucket(0.001, 2, max_keys=3)
    assert (buckets.rate, buckets.burst, buckets.max_keys) == (0.001, 2, 3)
    assert buckets.try_acquire("a") == 0.0 and buckets.try_acquire("a") == 0.0
    assert 999 < buckets.try_acquire("a") <= 1000
    assert buckets.try_acquire("b", 2) == 0.0
    assert len(buckets) == 2
    for key in ("c", "d", "e"):  # bounded: never more than max_keys tracked
        buckets.try_acquire(key)
        assert len(buckets) <= 3
    with pytest.raises(ValueError, match="exceeds burst"):
        buckets.try_acquire("a", 3)
    with pytest.raises(ValueError):
        buckets.try_acquire("a", -1)
    for bad in ({"burst": 0}, {"burst": -1}, {"max_keys": 0}, {"max_keys": -5}):
        with pytest.raises(ValueError):
            KeyedTokenBucket(**{"rate": 1.0, "burst": 1, **bad})
    with pytest.raises(ValueError):
        KeyedTokenBucket(float("nan"), 1)
