"""`nexus._rust_queue.RunQueue` as Python sees it: lanes, limits, delays, fair share."""

import math
import sys
import threading
import time
from collections import Counter

import pytest

from nexus._rust_queue import (
    Backoff,
    LaneFull,
    ManualClock,
    QueueFull,
    RunQueue,
    TenantLimit,
)


def virtual_queue(capacity=100, tenant_limit=None):
    """A queue in virtual time with lanes "eu" and 2."""
    clock = ManualClock()
    queue = RunQueue(tenant_limit=tenant_limit, clock=clock)
    queue.configure_lane("eu", capacity)
    queue.configure_lane(2, capacity)
    return queue, clock


def drain(queue, lane="eu"):
    items = []
    while (popped := queue.pop(lane)) is not None:
        items.append(popped.item)
    return items


class TestBounds:
    def test_a_full_lane_raises_lane_full_naming_lane_and_capacity(self):
        queue, _ = virtual_queue(capacity=2)
        queue.push("eu", "a", 1)
        queue.push("eu", "a", 2, delay=10)
        with pytest.raises(LaneFull, match='lane "eu".*capacity of 2') as refused:
            queue.push("eu", "b", 3, recovered=True)
        assert (refused.value.lane, refused.value.capacity) == ("eu", 2)
        assert isinstance(refused.value, QueueFull)
        assert (queue.depth("eu"), len(queue)) == (2, 2)
        queue.push(2, "b", 3)
        assert queue.depth(2) == 1

    def test_a_refused_item_is_not_kept(self):
        queue, _ = virtual_queue(capacity=1)
        queue.push("eu", "a", object())
        rejected = object()
        refs = sys.getrefcount(rejected)
        with pytest.raises(LaneFull):
            queue.push("eu", "a", rejected)
        assert sys.getrefcount(rejected) == refs

    def test_tenant_limit_counts_all_lanes_and_spares_recovered_runs(self):
        queue, _ = virtual_queue(tenant_limit=2)
        queue.push("eu", "team-a", 1)
        queue.push(2, "team-a", 2)
        with pytest.raises(TenantLimit, match='tenant "team-a".*2') as refused:
            queue.push("eu", "team-a", 3)
        assert (refused.value.tenant, refused.value.limit) == ("team-a", 2)
        queue.push("eu", "team-a", 4, recovered=True)
        queue.push("eu", "team-b", 5)
        assert queue.tenant_depths() == {"team-a": 3, "team-b": 1}

    def test_a_tenant_limit_overrides_the_default(self):
        queue, _ = virtual_queue(tenant_limit=1)
        queue.configure_tenant("big", limit=3)
        for item in range(3):
            queue.push("eu", "big", item)
        with pytest.raises(TenantLimit):
            queue.push("eu", "big", 3)

    def test_unknown_lanes_and_bad_arguments(self):
        queue, _ = virtual_queue()
        with pytest.raises(KeyError, match="no lane 7"):
            queue.push(7, "a", 1)
        for call in (queue.pop, queue.depth, queue.delayed, queue.next_due):
            with pytest.raises(KeyError):
                call("asia")
        for lane in (True, 1.5, None, 2**70):
            with pytest.raises(TypeError, match="lane"):
                queue.pop(lane)
        with pytest.raises(ValueError, match="capacity"):
            queue.configure_lane("x", 0)
        for weight in (0, -1, 1_000_001, 2**40):
            with pytest.raises(ValueError, match="weight"):
                queue.configure_tenant("a", weight=weight)
        for delay in (-1.0, math.nan, math.inf):
            with pytest.raises(ValueError, match="delay"):
                queue.push("eu", "a", 1, delay=delay)
        with pytest.raises(ValueError, match="tenant_limit"):
            RunQueue(tenant_limit=-1)
        with pytest.raises(ValueError, match="timeout"):
            queue.pop_wait("eu", -1)
        assert len(queue) == 0


class TestOrder:
    def test_recovered_runs_go_ahead_of_new_ones(self):
        queue, _ = virtual_queue(capacity=2000)
        for n in range(1000):
            queue.push("eu", "a", f"new-{n}")
        for n in range(10):
            queue.push("eu", "b", f"recovered-{n}", recovered=True)
        popped = [queue.pop("eu") for _ in range(11)]
        assert [p.item for p in popped[:10]] == [f"recovered-{n}" for n in range(10)]
        assert all(p.recovered for p in popped[:10])
        assert (popped[10].item, popped[10].recovered) == ("new-0", False)

    def test_one_tenants_burst_does_not_hold_back_another(self):
        queue, _ = virtual_queue(capacity=60_000)
        for n in range(50_000):
            queue.push("eu", "a", n)
        queue.push("eu", "b", "b's run")
        assert "b's run" in [queue.pop("eu").item for _ in range(2)]

    def test_weights_share_the_pops_in_proportion(self):
        queue, _ = virtual_queue(capacity=10_000)
        queue.configure_tenant("heavy", weight=3)
        for n in range(2000):
            queue.push("eu", "heavy", n)
            queue.push("eu", "light", n)
        served = Counter(queue.pop("eu").tenant for _ in range(2000))
        assert abs(served["heavy"] - 1500) <= 2, served
        assert abs(served["light"] - 500) <= 2, served

    def test_keeps_object_identity(self):
        queue, _ = virtual_queue()
        payload = {"run": 1}
        queue.push("eu", "a", payload)
        assert queue.pop("eu").item is payload


class TestVirtualTime:
    def test_a_delayed_item_is_released_when_due(self):
        queue, clock = virtual_queue()
        queue.push("eu", "a", "retry", recovered=True, delay=5)
        queue.push("eu", "a", "new")
        assert (queue.delayed("eu"), queue.next_due("eu")) == (1, 5.0)
        assert drain(queue) == ["new"]
        clock.advance(4.5)
        assert queue.pop("eu") is None
        assert queue.next_due("eu") == pytest.approx(0.5)
        clock.advance(1.5)
        popped = queue.pop("eu")
        assert (popped.item, popped.recovered, popped.delay) == ("retry", True, 5.0)
        # Due at 5 s, popped at 6 s.
        assert popped.waited == pytest.approx(1.0)
        assert (queue.delayed("eu"), queue.next_due("eu"), len(queue)) == (0, None, 0)

    def test_waited_is_measured_on_the_queue_clock(self):
        queue, clock = virtual_queue()
        queue.push("eu", "a", 1)
        clock.advance(0.25)
        popped = queue.pop("eu")
        assert (popped.tenant, popped.waited, popped.delay) == ("a", 0.25, 0.0)

    def test_a_jittered_backoff_is_a_delay(self):
        backoff = Backoff(1.0, 8.0, 5)
        assert backoff.jittered(2, 0) == 0.0
        assert backoff.jittered(2, 2**63) == 2.0
        assert 0 <= backoff.jittered(10, 2**64 - 1) < 8.0
        with pytest.raises(OverflowError):
            backoff.jittered(1, -1)
        queue, clock = virtual_queue()
        queue.push("eu", "a", "retry", recovered=True, delay=backoff.jittered(2, 2**63))
        clock.advance(2.0)
        assert drain(queue) == ["retry"]

    def test_manual_clock(self):
        clock = ManualClock(10)
        clock.advance(0.5)
        assert clock.now() == 10.5
        for bad in (-1.0, math.nan, math.inf):
            with pytest.raises(ValueError, match="seconds"):
                clock.advance(bad)
        with pytest.raises(ValueError, match="start"):
            ManualClock(-1)

    def test_pop_wait_sees_the_clock_advanced_by_another_thread(self):
        queue, clock = virtual_queue()
        queue.push("eu", "a", "retry", recovered=True, delay=3600)
        advancer = threading.Timer(0.05, clock.advance, args=(3600,))
        advancer.start()
        popped = queue.pop_wait("eu", 30)
        advancer.join()
        assert popped is not None and popped.item == "retry"


class TestThreads:
    def test_pop_wait_returns_an_item_pushed_from_another_thread(self):
        queue = RunQueue()
        queue.configure_lane("eu", 4)
        # The pusher needs the GIL while this thread waits: a hang here means
        # pop_wait kept the GIL.
        pusher = threading.Timer(0.05, queue.push, args=("eu", "a", "late"))
        pusher.start()
        started = time.monotonic()
        popped = queue.pop_wait("eu", 30)
        pusher.join()
        assert popped is not None and popped.item == "late"
        assert time.monotonic() - started < 10

    def test_pop_wait_times_out_with_none(self):
        queue = RunQueue()
        queue.configure_lane("eu", 4)
        assert queue.pop_wait("eu", 0) is None
        started = time.monotonic()
        assert queue.pop_wait("eu", 0.1) is None
        assert time.monotonic() - started >= 0.09

    def test_several_threads_push_and_pop_without_loss_or_duplication(self):
        producers, per_producer, consumers = 4, 2000, 4
        queue = RunQueue(tenant_limit=50)
        for lane in (0, 1):
            queue.configure_lane(lane, 32)
        taken: list[list[int]] = [[] for _ in range(consumers)]

        def produce(producer):
            for n in range(per_producer):
                item = producer * per_producer + n
                while True:
                    try:
                        queue.push(n % 2, f"t{item % 3}", item, recovered=n % 5 == 0)
                        break
                    except QueueFull:
                        time.sleep(0)

        produced = threading.Event()

        def consume(consumer):
            # Stop only once every producer is done and the lane is empty: an idle
            # timeout alone would stop early on a loaded machine, leaving items behind.
            lane = consumer % 2
            while True:
                popped = queue.pop_wait(lane, 0.1)
                if popped is not None:
                    taken[consumer].append(popped.item)
                elif produced.is_set() and queue.depth(lane) == 0:
                    return

        producing = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        threads = producing + [
            threading.Thread(target=consume, args=(c,)) for c in range(consumers)
        ]
        for thread in threads:
            thread.start()
        for thread in producing:
            thread.join(timeout=120)
        produced.set()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        every = sorted(item for items in taken for item in items)
        assert every == list(range(producers * per_producer))
        assert len(queue) == 0 and queue.tenant_depths() == {}
