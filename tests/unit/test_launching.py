"""The launch use case on its own, in virtual time: no queue, no worker, no sleep.

The clock is a function the test moves; the token wait is a stand-in that records the
shard and can let something happen "while the run waited" (a cancel).
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from fakes import FakeLauncher, MemoryStore, VirtualTime, render

from nexus.core.launching import (
    DRY_RUN_UID,
    LAUNCH_FAILED_CAUSE,
    Launch,
    Launched,
    Step,
)
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, SubmissionEntry
from nexus.errors import BackendUnavailable, LaunchError

T0 = VirtualTime().now()


class Tokens:
    """Grants every token; ``waited`` says whether the grant had to wait, and
    ``meanwhile`` runs during that wait."""

    def __init__(self, waited: bool = False, meanwhile=None) -> None:
        self.waited = waited
        self.meanwhile = meanwhile
        self.shards: list[str] = []

    async def __call__(self, cluster: str) -> bool:
        self.shards.append(cluster)
        if self.meanwhile is not None:
            await self.meanwhile()
        return self.waited


def launch_with(store: MemoryStore, launcher: FakeLauncher, clock: VirtualTime, renderer=render):
    changes: list[str] = []
    use_case = Launch(store, launcher, renderer, lambda a, r: changes.append(r), now=clock.now)
    return use_case, changes


async def test_a_new_run_is_buffered_launched_and_committed_running_at_the_virtual_now():
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1", cluster="shard-b")
    launch, changes = launch_with(store, launcher, clock)
    tokens = Tokens()
    step = await launch.run(key, token=tokens, may_retry=True)
    assert isinstance(step, Launched) and step.uid == "uid-r1" and step.cluster == "shard-b"
    assert store.stage("r1") is S.BUFFERED  # RUNNING only once committed
    assert tokens.shards == ["shard-b"]
    clock.at = T0 + timedelta(hours=3)
    await launch.commit(step)
    run = store.run("r1")
    assert run.lifecycle_stage is S.RUNNING and run.job_uid == "uid-r1"
    assert run.sent_at == T0 + timedelta(hours=3)
    assert [stage for _, stage in store.transitions] == [S.BUFFERED, S.RUNNING]
    assert changes == ["r1", "r1"]
    assert launch.launched == 1 and launch.failures == 0


@pytest.mark.parametrize("stage", [S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED])
async def test_a_run_past_buffered_is_left_alone(stage):
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1", stage)
    launch, _ = launch_with(store, launcher, clock)
    assert await launch.run(key, token=Tokens(), may_retry=True) is Step.DONE
    assert store.transitions == [] and launcher.calls == []


async def test_a_run_that_does_not_render_fails_with_the_reason():
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1")

    async def broken(run: Run) -> SubmissionEntry:
        raise LaunchError("workgroup 'wg' does not exist", retryable=False)

    launch, _ = launch_with(store, launcher, clock, broken)
    assert await launch.run(key, token=Tokens(), may_retry=True) is Step.DONE
    run = store.run("r1")
    assert run.lifecycle_stage is S.SCHEDULING_FAILED
    assert run.algorithm_failure_cause == LAUNCH_FAILED_CAUSE + "workgroup 'wg' does not exist"
    assert launcher.calls == []


async def test_a_template_source_outage_decides_nothing():
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1")

    async def down(run: Run) -> SubmissionEntry:
        raise BackendUnavailable("template source down")

    launch, _ = launch_with(store, launcher, clock, down)
    with pytest.raises(BackendUnavailable):
        await launch.run(key, token=Tokens(), may_retry=True)
    assert store.stage("r1") is S.NEW and store.transitions == []


async def test_a_run_cancelled_while_it_waited_for_its_token_gets_no_job():
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1")

    async def cancel() -> None:
        await store.transition("algo", "r1", S.CANCELLED)

    launch, _ = launch_with(store, launcher, clock)
    step = await launch.run(key, token=Tokens(waited=True, meanwhile=cancel), may_retry=True)
    assert step is Step.DONE
    assert launcher.calls == [] and store.stage("r1") is S.CANCELLED


async def test_a_retryable_failure_is_retried_while_attempts_remain_then_fails():
    store, clock = MemoryStore(), VirtualTime()
    launcher = FakeLauncher(lambda cluster, manifest: LaunchError("API 500", retryable=True))
    key = store.add("r1")
    launch, _ = launch_with(store, launcher, clock)
    assert await launch.run(key, token=Tokens(), may_retry=True) is Step.RETRY
    assert store.stage("r1") is S.BUFFERED  # the retry finds it there
    last = msgspec.structs.replace(key, attempt=3)
    assert await launch.run(last, token=Tokens(), may_retry=False) is Step.DONE
    run = store.run("r1")
    assert run.lifecycle_stage is S.SCHEDULING_FAILED
    assert run.algorithm_failure_details == "Gave up after 4 attempt(s): API 500"
    assert launch.failures == 2 and launch.launched == 0


async def test_a_permanent_failure_is_not_retried():
    store, clock = MemoryStore(), VirtualTime()
    launcher = FakeLauncher(lambda cluster, manifest: LaunchError("forbidden", retryable=False))
    key = store.add("r1")
    launch, _ = launch_with(store, launcher, clock)
    assert await launch.run(key, token=Tokens(), may_retry=True) is Step.DONE
    assert store.stage("r1") is S.SCHEDULING_FAILED and len(launcher.calls) == 1


async def test_a_dry_run_completes_at_the_virtual_now_without_a_job():
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1", S.BUFFERED, job_uid=DRY_RUN_UID)
    clock.at = T0 + timedelta(minutes=5)
    launch, _ = launch_with(store, launcher, clock)
    tokens = Tokens()
    assert await launch.run(key, token=tokens, may_retry=True) is Step.DONE
    run = store.run("r1")
    assert run.lifecycle_stage is S.COMPLETED and run.sent_at == T0 + timedelta(minutes=5)
    assert launcher.calls == [] and tokens.shards == []  # a dry run spends no token


async def test_a_buffered_run_without_its_job_fails():
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1", S.BUFFERED, submission=False)
    launch, _ = launch_with(store, launcher, clock)
    assert await launch.run(key, token=Tokens(), may_retry=True) is Step.DONE
    run = store.run("r1")
    assert run.lifecycle_stage is S.SCHEDULING_FAILED
    assert run.algorithm_failure_cause == LAUNCH_FAILED_CAUSE + "no Job was stored"


@pytest.mark.parametrize(
    ("meanwhile", "job_deleted"),
    [
        (S.CANCELLED, True),  # cancelled while its Job was created: do not leave it running
        (S.COMPLETED, False),  # reported before the commit: the commit must not undo it
    ],
)
async def test_a_run_that_changed_while_its_job_was_created_keeps_the_change(
    meanwhile, job_deleted
):
    store, launcher, clock = MemoryStore(), FakeLauncher(), VirtualTime()
    key = store.add("r1")
    launch, _ = launch_with(store, launcher, clock)
    step = await launch.run(key, token=Tokens(), may_retry=True)
    assert isinstance(step, Launched)
    await store.transition("algo", "r1", meanwhile)
    await launch.commit(step)
    assert store.stage("r1") is meanwhile
    assert launcher.cancelled == ([("shard-a", "r1", "Background")] if job_deleted else [])
