"""The launch pipeline over the Rust queue, with an in-memory store and a fake launcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from fakes import FakeLauncher, MemoryStore, limits, render

from nexus._rust_queue import Backoff, Dequeued, ManualClock
from nexus.core.launching import DRY_RUN_UID, LAUNCH_FAILED_CAUSE
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, RunKey, SubmissionEntry
from nexus.core.pipeline import LaunchPipeline
from nexus.errors import BackendUnavailable, LaunchError, QueueFull


def submit(pipeline: LaunchPipeline, key: RunKey) -> bool:
    """What an accept does: claim the run, then queue it."""
    assert pipeline.in_flight.claim(key.algorithm, key.id)
    return pipeline.submit(key)


def recover(pipeline: LaunchPipeline, key: RunKey) -> bool:
    """What recovery does: claim the run, then queue it ahead of new ones."""
    assert pipeline.in_flight.claim(key.algorithm, key.id)
    return pipeline.recover(key)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def make_pipeline():
    pipelines: list[LaunchPipeline] = []

    def make(
        store,
        launcher,
        config=None,
        on_change=None,
        start=True,
        renderer=render,
        on_dequeued=None,
        clock=None,
    ) -> LaunchPipeline:
        pipeline = LaunchPipeline(
            store,
            launcher,
            config or limits(),
            render=renderer,
            on_change=on_change,
            on_dequeued=on_dequeued,
            entropy=lambda: WORD,
            clock=clock,
        )
        if start:
            pipeline.start()
        pipelines.append(pipeline)
        return pipeline

    yield make
    for pipeline in pipelines:
        await pipeline.stop()


async def test_launch_moves_a_new_run_to_running(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    changes: list[tuple[str, str]] = []
    pipeline = make_pipeline(store, launcher, on_change=lambda a, r: changes.append((a, r)))
    key = store.add("r1")
    submit(pipeline, key)
    assert ("algo", "r1") in pipeline.in_flight
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    run = store.run("r1")
    assert run.job_uid == "uid-r1"
    assert run.sent_at is not None
    assert [target for _, target in store.transitions] == [S.BUFFERED, S.RUNNING]
    assert [cluster for _, cluster, _ in launcher.calls] == ["shard-a"]
    assert pipeline.launched == 1 and pipeline.launch_failures == 0
    assert changes == [("algo", "r1"), ("algo", "r1")]
    await eventually(lambda: ("algo", "r1") not in pipeline.in_flight)
    assert pipeline.depth() == 0


async def test_a_buffered_run_is_launched_without_re_buffering(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1", S.BUFFERED))
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    assert [target for _, target in store.transitions] == [S.RUNNING]


@pytest.mark.parametrize("stage", [S.RUNNING, S.COMPLETED, S.CANCELLED, S.FAILED])
async def test_running_or_finished_runs_are_not_launched_again(make_pipeline, stage):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1", stage))
    await eventually(lambda: ("algo", "r1") not in pipeline.in_flight)
    assert launcher.calls == [] and store.transitions == []


async def test_an_unknown_run_is_skipped(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, RunKey("algo", "ghost"))
    await eventually(lambda: ("algo", "ghost") not in pipeline.in_flight)
    assert launcher.calls == []


WORD = 2**64 - 1  # the jitter's random word: the whole backoff, deterministically


def pops(taken: list[Dequeued], run_id: str) -> list[tuple[bool, float]]:
    """(recovered, delay) of each time ``run_id`` came out of the queue."""
    return [(item.recovered, item.delay) for item in taken if item.item.id == run_id]


async def test_retryable_error_is_retried_with_backoff_then_succeeds(make_pipeline):
    """Each failed launch goes back into the crate: delayed by the jittered backoff of
    its attempt, then served as a recovered run."""
    failures = iter([LaunchError("API server busy"), LaunchError("API server busy")])
    store = MemoryStore()
    launcher = FakeLauncher(lambda cluster, manifest: next(failures, None))
    taken: list[Dequeued] = []
    pipeline = make_pipeline(
        store, launcher, limits(base_delay=0.05, max_delay=1.0), on_dequeued=taken.append
    )
    submit(pipeline, store.add("r1"))
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    assert len(launcher.attempts("r1")) == 3
    backoff = Backoff(0.05, 1.0, 4)
    assert pops(taken, "r1") == [
        (False, 0.0),
        (True, pytest.approx(backoff.jittered(0, WORD), abs=1e-6)),
        (True, pytest.approx(backoff.jittered(1, WORD), abs=1e-6)),
    ]
    assert pipeline.launch_failures == 2 and pipeline.launched == 1
    assert (("algo", "r1") in pipeline.in_flight) is False


async def test_a_retry_waits_in_the_crate_until_its_backoff_is_due(make_pipeline):
    """In virtual time: the failed launch is held by the crate, delayed, and launched
    again only once the queue's clock has moved past its backoff."""
    clock = ManualClock()
    failures = iter([LaunchError("API server busy")])
    store = MemoryStore()
    launcher = FakeLauncher(lambda cluster, manifest: next(failures, None))
    pipeline = make_pipeline(store, launcher, limits(base_delay=0.05, max_delay=1.0), clock=clock)
    submit(pipeline, store.add("r1"))
    # the retry is back in the queue as soon as the attempt has failed
    await eventually(lambda: len(launcher.attempts("r1")) == 1 and pipeline.depth() == 1)
    await asyncio.sleep(0.2)  # real time passes, the queue's does not
    assert len(launcher.attempts("r1")) == 1 and store.stage("r1") is S.BUFFERED
    assert ("algo", "r1") in pipeline.in_flight
    clock.advance(0.05)
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    assert len(launcher.attempts("r1")) == 2 and pipeline.depth() == 0


async def test_retryable_error_gives_up_after_max_attempts_with_the_reason(make_pipeline):
    store = MemoryStore()
    launcher = FakeLauncher(lambda cluster, manifest: LaunchError("quota exceeded"))
    taken: list[Dequeued] = []
    pipeline = make_pipeline(
        store,
        launcher,
        limits(max_attempts=3, base_delay=0.02, max_delay=0.03),
        on_dequeued=taken.append,
    )
    submit(pipeline, store.add("r1"))
    await eventually(lambda: store.stage("r1") is S.SCHEDULING_FAILED)
    assert len(launcher.attempts("r1")) == 3
    # the cap: the second retry's backoff is min(0.02 * 2, 0.03), jittered
    assert [delay for _, delay in pops(taken, "r1")] == [
        0.0,
        pytest.approx(0.02 * (1 - 2**-32), abs=1e-6),
        pytest.approx(0.03 * (1 - 2**-32), abs=1e-6),
    ]
    run = store.run("r1")
    assert run.algorithm_failure_cause == LAUNCH_FAILED_CAUSE + "quota exceeded"
    assert "3 attempt" in run.algorithm_failure_details
    assert "quota exceeded" in run.algorithm_failure_details
    await asyncio.sleep(0.1)
    assert len(launcher.attempts("r1")) == 3  # nothing more after giving up
    assert ("algo", "r1") not in pipeline.in_flight
    assert pipeline.depth() == 0


async def test_non_retryable_error_fails_at_once(make_pipeline):
    store = MemoryStore()
    launcher = FakeLauncher(
        lambda cluster, manifest: LaunchError("invalid manifest", retryable=False)
    )
    pipeline = make_pipeline(store, launcher, limits(max_attempts=5))
    submit(pipeline, store.add("r1"))
    await eventually(lambda: store.stage("r1") is S.SCHEDULING_FAILED)
    assert len(launcher.calls) == 1
    run = store.run("r1")
    assert "invalid manifest" in run.algorithm_failure_cause
    assert "1 attempt" in run.algorithm_failure_details


async def test_dry_run_completes_without_a_job(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1", job_uid=DRY_RUN_UID))
    await eventually(lambda: store.stage("r1") is S.COMPLETED)
    assert launcher.calls == []
    assert store.run("r1").job_uid == "dry-run"
    assert store.run("r1").sent_at is not None


async def test_a_buffered_run_without_a_stored_job_fails_to_schedule(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1", S.BUFFERED, submission=False))
    await eventually(lambda: store.stage("r1") is S.SCHEDULING_FAILED)
    assert launcher.calls == []
    assert store.run("r1").algorithm_failure_cause.startswith(LAUNCH_FAILED_CAUSE)


async def test_a_new_run_is_rendered_and_its_job_stored_before_it_is_buffered(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1", submission=False, cluster="shard-b"))
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    assert store.submissions[("algo", "r1")] == SubmissionEntry(
        algorithm="algo", id="r1", cluster="shard-b", template={"metadata": {"name": "r1"}}
    )
    assert [stage for run_id, stage in store.transitions] == [S.BUFFERED, S.RUNNING]
    assert [cluster for _, cluster, _ in launcher.calls] == ["shard-b"]


async def test_a_run_that_cannot_be_rendered_fails_to_schedule(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()

    async def no_workgroup(run: Run) -> SubmissionEntry:
        raise LaunchError("workgroup 'gone' no longer exists", retryable=False)

    pipeline = make_pipeline(store, launcher, renderer=no_workgroup)
    submit(pipeline, store.add("r1", submission=False))
    await eventually(lambda: store.stage("r1") is S.SCHEDULING_FAILED)
    assert launcher.calls == []
    assert "workgroup 'gone' no longer exists" in store.run("r1").algorithm_failure_cause
    assert ("algo", "r1") not in store.submissions


async def test_token_bucket_paces_launches(make_pipeline):
    rate, burst, runs = 20.0, 3, 12
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(rate=rate, burst=burst, workers=8))
    started = time.monotonic()
    for i in range(runs):
        submit(pipeline, store.add(f"r{i}"))
    await eventually(lambda: len(launcher.calls) == runs, timeout=20)
    times = sorted(at - started for at, _, _ in launcher.calls)
    # The n-th launch (from 0) cannot come before (n - burst + 1) / rate seconds.
    for n, at in enumerate(times):
        assert at >= (n - burst + 1) / rate - 0.02, (n, at)
    # Early on, no more than the burst plus what the rate refilled (a count, not a time).
    window = 0.2
    early = sum(1 for at in times if at <= window)
    assert early <= burst + rate * window + 1
    await eventually(lambda: all(store.stage(f"r{i}") is S.RUNNING for i in range(runs)))


async def test_each_shard_has_its_own_bucket(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(rate=0.5, burst=1, workers=4))
    started = time.monotonic()
    submit(pipeline, store.add("a1", cluster="shard-a"))
    submit(pipeline, store.add("a2", cluster="shard-a"))
    submit(pipeline, store.add("b1", cluster="shard-b"))
    await eventually(lambda: {run for _, _, run in launcher.calls} >= {"a1", "b1"})
    first_two = {run for _, _, run in launcher.calls}
    assert "a2" not in first_two  # shard-a's single token went to a1
    b_at = launcher.attempts("b1")[0] - started
    assert b_at < 1.5  # shard-b did not wait behind shard-a's 2 s refill
    await eventually(lambda: store.stage("a2") is S.RUNNING, timeout=10)
    assert launcher.attempts("a2")[0] - started >= 2.0 - 0.05


async def test_cancelled_while_launching_deletes_the_job(make_pipeline):
    store = MemoryStore()

    async def cancel_during_launch(cluster, manifest):
        # the cancel request lands while the Job is being created
        await store.transition("algo", manifest["metadata"]["name"], S.CANCELLED)

    launcher = FakeLauncher(cancel_during_launch)
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1"))
    await eventually(lambda: launcher.cancelled != [])
    assert launcher.cancelled == [("shard-a", "r1", "Background")]
    assert store.stage("r1") is S.CANCELLED


async def test_cancelled_while_waiting_for_a_token_is_not_launched(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(rate=2.0, burst=1, workers=1))
    submit(pipeline, store.add("first"))
    submit(pipeline, store.add("waiting"))
    await eventually(lambda: store.stage("waiting") is S.BUFFERED)
    await store.transition("algo", "waiting", S.CANCELLED)  # the token is ~0.5 s away
    await eventually(lambda: ("algo", "waiting") not in pipeline.in_flight)
    assert [run for _, _, run in launcher.calls] == ["first"]
    assert launcher.cancelled == []


async def test_cancelled_before_launch_is_not_launched(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, start=False)
    key = store.add("r1", S.BUFFERED)
    submit(pipeline, key)
    await store.transition("algo", "r1", S.CANCELLED)
    pipeline.start()
    await eventually(lambda: ("algo", "r1") not in pipeline.in_flight)
    assert launcher.calls == []


async def test_store_outage_is_retried_and_never_marks_the_run(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(max_attempts=5))
    store.unavailable = 2
    submit(pipeline, store.add("r1"))
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    assert len(launcher.calls) == 1


async def test_long_store_outage_leaves_the_run_pending_for_the_sweep(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(max_attempts=2))
    store.unavailable = 1000
    submit(pipeline, store.add("r1"))
    await eventually(lambda: ("algo", "r1") not in pipeline.in_flight)
    store.unavailable = 0
    assert store.stage("r1") is S.NEW  # never dropped, never failed
    assert launcher.calls == []
    submit(pipeline, RunKey("algo", "r1"))  # what the sweep does
    await eventually(lambda: store.stage("r1") is S.RUNNING)


async def test_a_full_lane_is_refused_before_the_accept_and_left_to_the_sweep_after(
    make_pipeline,
):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(capacity=2), start=False)
    pipeline.check_room("shard-a", "algo")
    assert submit(pipeline, store.add("r0")) and submit(pipeline, store.add("r1"))
    with pytest.raises(QueueFull, match="shard 'shard-a' holds its capacity of 2") as refused:
        pipeline.check_room("shard-a", "algo")
    assert refused.value.headers == {"Retry-After": "1"}
    pipeline.check_room("shard-b", "algo")  # another shard's lane has room
    # an accept that passed the check, while another took the last slot: stored, so the
    # sweep must find it
    assert not submit(pipeline, store.add("r2"))
    assert ("algo", "r2") not in pipeline.in_flight and pipeline.in_flight.left_behind == 1
    assert pipeline.depth() == 2
    pipeline.start()
    await eventually(lambda: all(store.stage(f"r{i}") is S.RUNNING for i in range(2)))
    assert store.stage("r2") is S.NEW
    assert recover(pipeline, RunKey("algo", "r2", cluster="shard-a"))  # what the sweep does
    await eventually(lambda: store.stage("r2") is S.RUNNING)
    assert pipeline.depth() == 0 and len(launcher.calls) == 3


async def test_a_retry_refused_by_a_full_lane_is_left_to_the_sweep(make_pipeline):
    """The lane's capacity counts retries too: a failed launch whose lane filled up
    meanwhile stays BUFFERED in the store, released once for the sweep, and the worker
    goes on with the next run."""
    store = MemoryStore()

    def fail_r1_and_fill_the_lane(cluster, manifest):
        if manifest["metadata"]["name"] == "r1":
            submit(pipeline, store.add("r2"))  # takes the lane's only slot
            return LaunchError("API server busy")
        return None

    launcher = FakeLauncher(fail_r1_and_fill_the_lane)
    pipeline = make_pipeline(store, launcher, limits(capacity=1, workers=1))
    submit(pipeline, store.add("r1"))
    await eventually(lambda: ("algo", "r2") in store.runs and store.stage("r2") is S.RUNNING)
    assert store.stage("r1") is S.BUFFERED
    assert ("algo", "r1") not in pipeline.in_flight
    assert pipeline.in_flight.left_behind == 1
    assert len(launcher.attempts("r1")) == 1


async def test_a_tenant_over_its_limit_is_refused_and_names_it(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    config = limits(tenant_limit=5, tenant_limits={"team-a": 1})
    pipeline = make_pipeline(store, launcher, config, start=False)
    key = store.add("a0")
    assert submit(pipeline, RunKey(key.algorithm, key.id, cluster=key.cluster, tenant="team-a"))
    with pytest.raises(QueueFull, match="tenant 'team-a': it has 1 runs queued"):
        pipeline.check_room("shard-b", "team-a")  # the limit counts over all lanes
    pipeline.check_room("shard-a", "team-b")


async def test_a_burst_of_one_tenant_does_not_hold_back_another(make_pipeline):
    """Weighted fair queueing in the crate: with a tenant's 30 runs queued first, another
    tenant's 3 are launched among the first few, not after the 30."""
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(workers=1), start=False)

    def add(run_id: str, tenant: str) -> None:
        key = store.add(run_id)
        assert submit(pipeline, RunKey(key.algorithm, key.id, cluster=key.cluster, tenant=tenant))

    for i in range(30):
        add(f"a{i}", "team-a")
    for i in range(3):
        add(f"b{i}", "team-b")
    pipeline.start()
    await eventually(lambda: len(launcher.calls) == 33)
    order = [run_id for _, _, run_id in launcher.calls]
    assert max(order.index(f"b{i}") for i in range(3)) < 8, order


async def test_recovered_runs_are_launched_before_new_ones(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(workers=1), start=False)
    for i in range(5):
        assert submit(pipeline, store.add(f"new{i}"))
    assert recover(pipeline, store.add("old", S.BUFFERED))
    pipeline.start()
    await eventually(lambda: len(launcher.calls) == 6)
    assert launcher.calls[0][2] == "old"


async def test_an_unexpected_error_does_not_kill_the_workers(make_pipeline):
    store = MemoryStore()

    def explode_once(cluster, manifest):
        if manifest["metadata"]["name"] == "bad":
            return RuntimeError("bug")
        return None

    launcher = FakeLauncher(explode_once)
    pipeline = make_pipeline(store, launcher, limits(workers=1))
    submit(pipeline, store.add("bad"))
    submit(pipeline, store.add("good"))
    await eventually(lambda: store.stage("good") is S.RUNNING)
    assert ("algo", "bad") not in pipeline.in_flight


async def test_stop_cancels_pending_retries(make_pipeline):
    store = MemoryStore()
    launcher = FakeLauncher(lambda cluster, manifest: LaunchError("down"))
    pipeline = make_pipeline(
        store, launcher, limits(base_delay=0.2, max_delay=0.2, max_attempts=10)
    )
    submit(pipeline, store.add("r1"))
    await eventually(lambda: len(launcher.calls) == 1)
    await pipeline.stop()
    await asyncio.sleep(0.3)
    assert len(launcher.calls) == 1
    assert store.stage("r1") is S.BUFFERED


async def test_a_throttled_shard_does_not_hold_up_another_shard(make_pipeline):
    """Each shard has its own lane: runs queued for a slow shard take its workers only."""
    store, launcher = MemoryStore(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(rate=0.2, burst=1, workers=2))
    for i in range(5):
        submit(pipeline, store.add(f"a{i}", cluster="shard-a"))
    await eventually(lambda: len(launcher.calls) == 1)  # shard-a's burst is spent
    submit(pipeline, store.add("b0", cluster="shard-b"))
    await eventually(lambda: store.stage("b0") is S.RUNNING, timeout=2.0)
    assert [cluster for _, cluster, _ in launcher.calls] == ["shard-a", "shard-b"]
    assert pipeline.depth() == 2  # shard-a: 2 runs wait in its workers, 2 in its queue


async def test_a_worker_does_not_wait_for_the_running_commit(make_pipeline):
    """One worker, a RUNNING commit that hangs: the next run is still launched; once the
    store answers, both runs are committed RUNNING."""

    class SlowCommits(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def transition(self, algorithm: str, run_id: str, target: S, **fields: Any) -> Run:
            if target is S.RUNNING:
                await self.release.wait()
            return await super().transition(algorithm, run_id, target, **fields)

    store, launcher = SlowCommits(), FakeLauncher()
    pipeline = make_pipeline(store, launcher, limits(workers=1))
    submit(pipeline, store.add("r1"))
    submit(pipeline, store.add("r2"))
    await eventually(lambda: len(launcher.calls) == 2)
    assert store.stage("r1") is S.BUFFERED and store.stage("r2") is S.BUFFERED
    store.release.set()
    await eventually(lambda: store.stage("r1") is S.RUNNING and store.stage("r2") is S.RUNNING)
    assert store.run("r2").job_uid == "uid-r2"


async def test_a_failed_running_commit_is_left_to_the_supervisor_and_the_sweep(make_pipeline):
    class DownAtCommit(MemoryStore):
        async def transition(self, algorithm: str, run_id: str, target: S, **fields: Any) -> Run:
            if target is S.RUNNING:
                raise BackendUnavailable("store down")
            return await super().transition(algorithm, run_id, target, **fields)

    store, launcher = DownAtCommit(), FakeLauncher()
    pipeline = make_pipeline(store, launcher)
    submit(pipeline, store.add("r1"))
    await eventually(lambda: len(launcher.calls) == 1 and ("algo", "r1") not in pipeline.in_flight)
    await asyncio.sleep(0.05)
    assert len(launcher.calls) == 1  # launched once, not retried: the Job exists
    assert store.stage("r1") is S.BUFFERED  # the supervisor's watch records RUNNING...
    assert pipeline.in_flight.left_behind == 1  # ...and the scheduler's sweep will look again


async def test_a_run_whose_record_cannot_be_rendered_fails_once(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()

    async def broken(run: Run) -> SubmissionEntry:
        raise ValueError("bad duration 'soon'")

    pipeline = make_pipeline(store, launcher, renderer=broken)
    submit(pipeline, store.add("r1", submission=False))
    await eventually(lambda: store.stage("r1") is S.SCHEDULING_FAILED)
    assert "bad duration 'soon'" in store.run("r1").algorithm_failure_cause
    assert pipeline.in_flight.left_behind == 0 and launcher.calls == []


async def test_a_template_source_outage_while_rendering_is_retried(make_pipeline):
    store, launcher = MemoryStore(), FakeLauncher()
    outages = [BackendUnavailable("templates not loaded yet")] * 2

    async def flaky(run: Run) -> SubmissionEntry:
        if outages:
            raise outages.pop()
        return await render(run)

    pipeline = make_pipeline(store, launcher, renderer=flaky)
    submit(pipeline, store.add("r1", submission=False))
    await eventually(lambda: store.stage("r1") is S.RUNNING)
    assert len(launcher.calls) == 1
