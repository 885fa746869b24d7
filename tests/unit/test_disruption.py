"""A crash is a disruption, not a failure: a RUNNING run whose process was lost with a
crashed nexus is launched again (RUNNING -> BUFFERED, queued ahead of new runs), not
counted against maximumRetries, and FAILED only once ``disruption_limit`` is spent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
from test_pending_sweep import HOST, Payloads, SweptStore
from test_pipeline import FakeLauncher, eventually, limits, render
from test_supervision import Watcher

from nexus.core.jobs import DISRUPTIONS_ANNOTATION, disruptions
from nexus.core.models import LifecycleStage as S
from nexus.core.pipeline import LaunchPipeline
from nexus.core.ports import ClusterSnapshot, JobObservation, Outcome
from nexus.core.supervision import DISRUPTED_CAUSE, LOST_CAUSE, Supervision, SupervisionConfig

LIMIT = 2


def running(store: SweptStore, run_id: str, sent_ago: float = 60.0) -> None:
    store.add(run_id, S.RUNNING)
    store.runs[("algo", run_id)] = msgspec.structs.replace(
        store.run(run_id),
        received_by_host=HOST,
        sent_at=datetime.now(UTC) - timedelta(seconds=sent_ago),
    )


def lost(run_id: str) -> JobObservation:
    """What the local executor reports after a restart for a process gone with nexus."""
    return JobObservation(
        algorithm="algo",
        run_id=run_id,
        cluster="shard-a",
        outcome=Outcome.DISRUPTED,
        since=datetime.now(UTC),
        message="Its process was lost with a crashed nexus (no exit code)",
        job_uid=run_id,
    )


def supervision(
    store: SweptStore, watcher: Watcher, pipeline: LaunchPipeline | None
) -> Supervision:
    return Supervision(
        store,
        Payloads(),
        watcher,
        pipeline,
        SupervisionConfig(
            success_grace=1.0,
            backoff_grace=1.0,
            host=HOST,
            reconcile_interval=1.0,
            lease_ttl=10.0,
            disruption_limit=LIMIT,
        ),
    )


def setup(start: bool = False):
    store = SweptStore()
    launcher = FakeLauncher()
    pipeline = LaunchPipeline(store, launcher, limits(), render=render)
    if start:
        pipeline.start()
    watcher = Watcher(ClusterSnapshot(observations=[]))
    return store, launcher, pipeline, watcher, supervision(store, watcher, pipeline)


def count(store: SweptStore, run_id: str) -> int:
    return disruptions(store.submissions[("algo", run_id)].template)


async def test_a_run_lost_with_nexus_is_queued_again_ahead_of_new_runs():
    store, _, pipeline, watcher, sup = setup()
    running(store, "r1")
    updated = await sup.apply(lost("r1"))
    assert updated is not None and updated.lifecycle_stage is S.BUFFERED
    assert store.stage("r1") is S.BUFFERED
    assert count(store, "r1") == 1
    annotations = store.submissions[("algo", "r1")].template["metadata"]["annotations"]
    assert annotations == {DISRUPTIONS_ANNOTATION: "1"}
    assert ("algo", "r1") in pipeline.in_flight and pipeline.depth() == 1
    assert watcher.deleted == []  # the lost Job is replaced by the launch, not deleted


async def test_the_run_fails_once_the_limit_is_spent():
    store, _, pipeline, watcher, sup = setup()
    running(store, "r1")
    entry = store.submissions[("algo", "r1")]
    store.submissions[("algo", "r1")] = msgspec.structs.replace(
        entry, template={"metadata": {"name": "r1", "annotations": {DISRUPTIONS_ANNOTATION: "2"}}}
    )
    await sup.apply(lost("r1"))
    run = store.run("r1")
    assert run.lifecycle_stage is S.FAILED
    assert run.algorithm_failure_cause == DISRUPTED_CAUSE
    assert "2 disruption(s), limit 2" in run.algorithm_failure_details
    assert watcher.deleted == [("shard-a", "r1")]
    assert pipeline.depth() == 0 and ("algo", "r1") not in pipeline.in_flight


async def test_a_limit_of_zero_fails_at_once():
    store, _, pipeline, watcher, _ = setup()
    sup = supervision(store, watcher, pipeline)
    sup.config.disruption_limit = 0
    running(store, "r1")
    await sup.apply(lost("r1"))
    assert store.stage("r1") is S.FAILED
    assert store.run("r1").algorithm_failure_cause == DISRUPTED_CAUSE


async def test_a_result_reported_before_the_crash_is_kept():
    store, _, pipeline, watcher, sup = setup()
    running(store, "r1")
    await store.transition("algo", "r1", S.COMPLETED, result_uri="s3://result")
    assert await sup.apply(lost("r1")) is None
    assert store.run("r1").lifecycle_stage is S.COMPLETED
    assert store.run("r1").result_uri == "s3://result"
    assert pipeline.depth() == 0 and count(store, "r1") == 0


async def test_a_buffered_run_is_left_to_its_sweep():
    """Lost before its RUNNING commit: the start-up sweep launches it; re-queueing it too
    would queue it twice."""
    store, _, pipeline, _, sup = setup()
    store.add("r1", S.BUFFERED)
    assert await sup.apply(lost("r1")) is None
    assert store.stage("r1") is S.BUFFERED and pipeline.depth() == 0


async def test_a_stale_observation_does_not_disrupt_a_run_launched_since():
    store, _, pipeline, _, sup = setup()
    observation = lost("r1")
    running(store, "r1", sent_ago=-1.0)  # sent after the executor found it lost
    assert await sup.apply(observation) is None
    assert store.stage("r1") is S.RUNNING and pipeline.depth() == 0


async def test_the_watch_and_the_reconcile_pass_re_queue_it_once():
    store, _, pipeline, _, sup = setup()
    running(store, "r1")
    results = await asyncio.gather(sup.apply(lost("r1")), sup.apply(lost("r1")))
    assert sum(result is not None for result in results) == 1
    assert count(store, "r1") == 1 and pipeline.depth() == 1


async def test_without_a_pipeline_here_the_run_is_lost():
    store, _, _, watcher, _ = setup()
    running(store, "r1")
    await supervision(store, watcher, None).apply(lost("r1"))
    assert store.stage("r1") is S.FAILED
    assert store.run("r1").algorithm_failure_cause == LOST_CAUSE


async def test_each_crash_launches_it_once_more_until_the_limit():
    """Crash after crash: one launch per disruption, LIMIT relaunches, then FAILED."""
    store, launcher, pipeline, _, sup = setup(start=True)
    try:
        running(store, "r1")
        for crash in range(1, LIMIT + 1):
            observation = lost("r1")
            await sup.apply(observation)
            await eventually(lambda: store.stage("r1") is S.RUNNING)
            await asyncio.sleep(0)  # let the commit task release its claim
            await eventually(lambda: ("algo", "r1") not in pipeline.in_flight)
            assert len(launcher.attempts("r1")) == crash
            assert count(store, "r1") == crash
            assert await sup.apply(observation) is None  # the same report again: stale
        await sup.apply(lost("r1"))
        assert store.stage("r1") is S.FAILED
        assert len(launcher.attempts("r1")) == LIMIT
    finally:
        await pipeline.stop()
