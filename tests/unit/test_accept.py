"""The accept use case (``Scheduler.accept``) on in-memory ports, in virtual time.

What an accept promises (SPEC §2): everything is checked before anything is written, so
a refusal leaves no trace; the run row and the payload are both stored before it
returns; the run is queued and claimed; a failed write refuses the request and leaves no
live run behind.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import FakeLauncher, MemoryStore, VirtualTime, limits, render

from nexus.core.models import (
    AlgorithmSpec,
    ContainerSpec,
    Template,
    Workgroup,
    WorkgroupRef,
    WorkgroupSpec,
)
from nexus.core.models import LifecycleStage as S
from nexus.core.pipeline import LaunchPipeline
from nexus.core.scheduling import Scheduler, SchedulerConfig
from nexus.core.watch import RunWatch
from nexus.errors import BackendUnavailable, BadRequest, QueueFull

SPEC = AlgorithmSpec(
    container=ContainerSpec(image="algo", registry="reg.local", version_tag="7"),
    command="python main.py",
    workgroup_ref=WorkgroupRef(name="wg"),
)


class Templates:
    async def template(self, name: str) -> Template | None:
        return Template(name, SPEC) if name == "algo" else None

    async def workgroup(self, name: str) -> Workgroup | None:
        return Workgroup(name, WorkgroupSpec(cluster="shard-a")) if name == "wg" else None


class Payloads:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], bytes] = {}
        self.fail = False

    async def put(self, algorithm: str, run_id: str, data: bytes | memoryview) -> None:
        if self.fail:
            raise BackendUnavailable("payload store down")
        self.stored[(algorithm, run_id)] = bytes(data)

    def payload_url(self, algorithm: str, run_id: str, valid_for: float) -> str:
        return f"https://payloads/{algorithm}/{run_id}?valid={valid_for:g}"


class Setup:
    def __init__(self, capacity: int = 100) -> None:
        self.clock = VirtualTime()
        self.store = MemoryStore()
        self.payloads = Payloads()
        launcher = FakeLauncher()
        # Not started: accepted runs stay queued, where the test can count them.
        self.pipeline = LaunchPipeline(self.store, launcher, limits(capacity=capacity), render)
        self.scheduler = Scheduler(
            self.store,
            self.payloads,
            Templates(),
            launcher,
            self.pipeline,
            RunWatch(),
            None,  # the renderer: only GET buffer/... uses it
            SchedulerConfig(instance_id="host-1", payload_valid_for=3600.0, max_wait=60.0),
            now=self.clock.now,
        )

    def nothing_written(self) -> bool:
        return not self.store.runs and not self.payloads.stored and self.pipeline.depth() == 0


@pytest.fixture
def setup() -> Setup:
    return Setup()


async def test_an_accepted_run_is_stored_with_its_payload_queued_and_claimed(setup):
    setup.clock.advance(3600)
    run_id = await setup.scheduler.accept("algo", b'{"x": 1}', tag="t1")
    run = setup.store.run(run_id)
    assert run.lifecycle_stage is S.NEW and run.tag == "t1" and run.cluster == "shard-a"
    assert run.received_at == setup.clock.now() == run.last_modified
    assert run.received_by_host == "host-1"
    assert run.payload_uri == f"https://payloads/algo/{run_id}?valid=3600"
    assert setup.payloads.stored[("algo", run_id)] == b'{"x": 1}'
    assert setup.pipeline.depth() == 1
    assert ("algo", run_id) in setup.pipeline.in_flight


async def test_the_request_s_payload_lifetime_wins(setup):
    run_id = await setup.scheduler.accept("algo", b"{}", payload_valid_for="10m")
    assert setup.store.run(run_id).payload_uri.endswith("?valid=600")


@pytest.mark.parametrize(
    ("algorithm", "kwargs", "message"),
    [
        ("nope", {}, "No valid configuration found for: nope"),
        ("algo", {"tag": "x" * 1000}, "tag"),
        ("algo", {"payload_valid_for": "soon"}, "soon"),
    ],
)
async def test_a_refused_request_writes_nothing(setup, algorithm, kwargs, message):
    with pytest.raises(BadRequest, match=message):
        await setup.scheduler.accept(algorithm, b"{}", **kwargs)
    assert setup.nothing_written()


async def test_a_full_lane_is_a_429_before_any_write():
    setup = Setup(capacity=1)
    await setup.scheduler.accept("algo", b"{}")
    stored = dict(setup.store.runs)
    with pytest.raises(QueueFull, match="shard 'shard-a'"):
        await setup.scheduler.accept("algo", b"{}")
    assert setup.store.runs == stored and len(setup.payloads.stored) == 1


async def test_a_payload_that_cannot_be_stored_refuses_the_request_and_closes_the_run(setup):
    setup.payloads.fail = True
    with pytest.raises(BackendUnavailable):
        await setup.scheduler.accept("algo", b"{}")
    [run] = setup.store.runs.values()
    assert run.lifecycle_stage is S.SCHEDULING_FAILED  # no live run behind a refusal
    assert setup.pipeline.depth() == 0
    assert ("algo", run.id) not in setup.pipeline.in_flight
    assert setup.pipeline.in_flight.left_behind == 1  # the sweep will look again


async def test_a_store_that_is_down_refuses_the_request(setup):
    setup.store.unavailable = 1  # the create
    with pytest.raises(BackendUnavailable):
        await setup.scheduler.accept("algo", b"{}")
    assert setup.pipeline.depth() == 0 and not setup.store.runs


async def test_the_same_idempotency_key_answers_the_first_run(setup):
    first = await setup.scheduler.accept("algo", b"{}", idempotency_key="k")
    setup.clock.advance(timedelta(days=1).total_seconds())
    again = await setup.scheduler.accept("algo", b'{"other": true}', idempotency_key="k")
    assert again == first
    assert len(setup.store.runs) == 1 and setup.pipeline.depth() == 1
