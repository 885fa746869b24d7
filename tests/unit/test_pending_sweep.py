"""The scheduler's pending-run sweep: owed after a run is left behind, paid only by a
sweep that reached the store."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from fakes import FakeLauncher, MemoryStore, VirtualTime, limits, render

from nexus.core.models import LifecycleStage as S
from nexus.core.pipeline import LaunchPipeline
from nexus.core.recovery import PendingSweep
from nexus.errors import BackendUnavailable

HOST = "host-1"


class SweptStore(MemoryStore):
    """MemoryStore plus the host/stage lookup the sweep reads."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.clock = VirtualTime()  # the sweep's, so a run's age is virtual too

    def age(self, run_id: str, seconds: float) -> None:
        """Received ``seconds`` before the virtual now."""
        self.runs[("algo", run_id)] = msgspec.structs.replace(
            self.run(run_id),
            received_by_host=HOST,
            received_at=self.clock.now() - timedelta(seconds=seconds),
        )

    async def by_host_stage(self, host: str, stage: S):
        self.lookups += 1
        self._maybe_fail()
        return [
            run
            for run in self.runs.values()
            if run.received_by_host == host and run.lifecycle_stage is stage
        ]


class Payloads:
    async def exists(self, algorithm: str, run_id: str) -> bool:
        return True


def let_go(pipeline: LaunchPipeline) -> None:
    """Some run was let go while still pending (a store outage, a full lane)."""
    pipeline.in_flight.claim("algo", "elsewhere")
    pipeline.in_flight.release("algo", "elsewhere", left_behind=True)


@pytest.fixture
def setup():
    store = SweptStore()
    pipeline = LaunchPipeline(
        store, FakeLauncher(), limits(), render=render
    )  # not started: runs stay queued
    sweep = PendingSweep(store, Payloads(), pipeline, HOST, interval=10.0, now=store.clock.now)
    return store, pipeline, sweep


async def test_no_sweep_while_nothing_was_left_behind(setup):
    store, pipeline, sweep = setup
    store.add("r1", S.BUFFERED)
    store.age("r1", 60)
    assert await sweep() == 0
    assert store.lookups == 0
    assert ("algo", "r1") not in pipeline.in_flight


async def test_a_report_owes_two_sweeps_that_requeue_the_run(setup):
    store, pipeline, sweep = setup
    store.add("r1", S.BUFFERED)
    store.age("r1", 60)
    let_go(pipeline)
    assert await sweep() == 1
    assert ("algo", "r1") in pipeline.in_flight
    assert await sweep() == 0  # second owed sweep: already queued
    lookups = store.lookups
    assert await sweep() == 0 and store.lookups == lookups  # nothing owed any more


async def test_sweeps_failing_during_an_outage_stay_owed_until_the_store_is_back(setup):
    """The CI failure this guards against: a run left behind while the store was down was
    never swept, because the owed sweeps were spent (and failed) during the outage."""
    store, pipeline, sweep = setup
    store.add("r1", S.BUFFERED)
    store.age("r1", 60)
    let_go(pipeline)
    store.unavailable = 10_000
    for _ in range(20):  # a long outage: many intervals
        with pytest.raises(BackendUnavailable):
            await sweep()
    assert sweep.owed == PendingSweep.OWED_PER_REPORT
    store.unavailable = 0
    assert await sweep() == 1
    assert ("algo", "r1") in pipeline.in_flight


async def test_a_recent_run_is_left_to_the_second_sweep(setup):
    store, pipeline, sweep = setup
    store.add("r1", S.NEW)
    store.age("r1", 1)  # its accept may still be writing
    let_go(pipeline)
    assert await sweep() == 0
    assert ("algo", "r1") not in pipeline.in_flight
    store.clock.advance(10)  # an interval later, in virtual time
    assert await sweep() == 1
    assert ("algo", "r1") in pipeline.in_flight


class NoPayloadYet:
    async def exists(self, algorithm: str, run_id: str) -> bool:
        return False  # the accept's upload has not finished


async def test_a_run_whose_accept_is_still_writing_is_not_closed_as_lost(setup):
    """The CI failure this guards against: after an S3 outage a payload upload took longer
    than the sweep's min_age; the sweep found the row NEW without its payload and closed
    it as lost, and the accept then answered 202 for it. An accept holds its run in the
    pipeline from its first write until it submits or lets go of it."""
    store, pipeline, _ = setup
    sweep = PendingSweep(store, NoPayloadYet(), pipeline, HOST, interval=0.5)
    store.add("r1", S.NEW)
    store.age("r1", 60)
    pipeline.in_flight.claim("algo", "r1")
    let_go(pipeline)
    assert await sweep() == 0
    assert store.run("r1").lifecycle_stage is S.NEW  # not closed: its accept owns it
    pipeline.in_flight.release(
        "algo", "r1", left_behind=True
    )  # the accept failed and let go: now the sweep judges it
    assert await sweep() == 0
    assert store.run("r1").lifecycle_stage is S.SCHEDULING_FAILED
