"""Supervision's reconcile pass over a partial snapshot: a shard that does not answer
neither stops the others nor makes its own runs look lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from test_pending_sweep import HOST, Payloads, SweptStore

from nexus.core.models import LifecycleStage as S
from nexus.core.ports import ClusterSnapshot, JobObservation, Outcome
from nexus.core.supervision import FATAL_CAUSE, LOST_CAUSE, Supervision, SupervisionConfig
from nexus.errors import BackendUnavailable


class HostStore(SweptStore):
    async def expired_hosts(self) -> list[str]:
        return []


class Watcher:
    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot_value = snapshot
        self.deleted: list[tuple[str, str]] = []

    async def snapshot(self) -> ClusterSnapshot:
        return self.snapshot_value

    async def delete_job(self, cluster: str, run_id: str) -> None:
        self.deleted.append((cluster, run_id))


def running(store: HostStore, run_id: str, cluster: str) -> None:
    store.add(run_id, S.RUNNING, cluster=cluster)
    store.runs[("algo", run_id)] = msgspec.structs.replace(
        store.run(run_id), received_by_host=HOST, sent_at=datetime.now(UTC) - timedelta(hours=1)
    )


def fatal_exit(run_id: str, cluster: str) -> JobObservation:
    """What the watcher says of a run whose algorithm exited with a fatal code."""
    return JobObservation(
        algorithm="algo",
        run_id=run_id,
        cluster=cluster,
        outcome=Outcome.FATAL_EXIT,
        since=datetime.now(UTC),
        message="exit code 42",
    )


def supervision(
    store: HostStore, watcher: Watcher, since: timedelta = timedelta(hours=1)
) -> Supervision:
    """A supervisor that began observing ``since`` ago (well past the 1 s grace)."""
    return Supervision(
        store,
        Payloads(),
        watcher,
        None,
        SupervisionConfig(
            success_grace=1.0, backoff_grace=1.0, host=HOST, reconcile_interval=1.0, lease_ttl=10.0
        ),
        observing_since=datetime.now(UTC) - since,
    )


async def test_a_missing_jobs_grace_starts_when_the_supervisor_starts_observing():
    """After a restart, a RUNNING run sent long ago is not lost before the new process
    had its grace to see the Job (a process that survived the crash reports later)."""
    store = HostStore()
    running(store, "sent-an-hour-ago", "shard-a")
    watcher = Watcher(ClusterSnapshot(observations=[]))
    await supervision(store, watcher, since=timedelta(0)).reconcile()
    assert store.stage("sent-an-hour-ago") is S.RUNNING
    await supervision(store, watcher, since=timedelta(seconds=2)).reconcile()
    assert store.stage("sent-an-hour-ago") is S.FAILED
    assert store.run("sent-an-hour-ago").algorithm_failure_cause == LOST_CAUSE


async def test_an_unreachable_shard_does_not_stop_the_others():
    store = HostStore()
    running(store, "fatal-on-a", "shard-a")
    running(store, "quiet-on-b", "shard-b")  # its Job was not listed: shard-b is down
    running(store, "gone-on-a", "shard-a")  # not listed although shard-a answered: lost
    fatal = fatal_exit("fatal-on-a", "shard-a")
    watcher = Watcher(
        ClusterSnapshot(observations=[fatal], unreachable={"shard-b": "connection refused"})
    )
    await supervision(store, watcher).reconcile()
    assert store.stage("fatal-on-a") is S.FAILED
    assert store.run("fatal-on-a").algorithm_failure_cause == FATAL_CAUSE
    assert watcher.deleted == [("shard-a", "fatal-on-a")]
    assert store.stage("gone-on-a") is S.FAILED
    assert store.run("gone-on-a").algorithm_failure_cause == LOST_CAUSE
    assert store.stage("quiet-on-b") is S.RUNNING  # not judged on a shard nobody saw


async def test_a_snapshot_that_fails_entirely_changes_nothing():
    store = HostStore()
    running(store, "r1", "shard-a")

    class Down(Watcher):
        async def snapshot(self) -> ClusterSnapshot:
            raise BackendUnavailable("no shard answered")

    with pytest.raises(BackendUnavailable):
        await supervision(store, Down(ClusterSnapshot(observations=[]))).reconcile()
    assert store.stage("r1") is S.RUNNING


class CountingStore(HostStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, algorithm: str, run_id: str):
        self.reads.append(run_id)
        return await super().get(algorithm, run_id)


def succeeded(run_id: str) -> JobObservation:
    return msgspec.structs.replace(
        fatal_exit(run_id, "shard-a"),
        outcome=Outcome.SUCCEEDED,
        since=datetime.now(UTC) - timedelta(hours=1),
    )


async def test_a_run_seen_finished_is_not_read_again():
    """A finished Job stays listed until its TTL: every later pass judges it from memory."""
    store = CountingStore()
    running(store, "failed-here", "shard-a")  # the supervisor finishes it
    store.add("reported", S.COMPLETED, cluster="shard-a")  # finished by its own report
    watcher = Watcher(
        ClusterSnapshot(observations=[fatal_exit("failed-here", "shard-a"), succeeded("reported")])
    )
    sup = supervision(store, watcher)
    await sup.reconcile()
    assert store.stage("failed-here") is S.FAILED
    assert sorted(store.reads) == ["failed-here", "reported"]
    store.reads.clear()
    await sup.reconcile()
    await sup.apply(succeeded("reported"))
    assert store.reads == []
    assert store.stage("reported") is S.COMPLETED  # and nothing judged it once more
    assert watcher.deleted == [("shard-a", "failed-here")]  # deleted once, when it failed


async def test_a_cancelled_runs_job_is_deleted_each_time_it_is_seen_running():
    store = CountingStore()
    store.add("cancelled", S.CANCELLED, cluster="shard-a")
    alive = msgspec.structs.replace(fatal_exit("cancelled", "shard-a"), outcome=Outcome.RUNNING)
    watcher = Watcher(ClusterSnapshot(observations=[]))
    sup = supervision(store, watcher)
    assert await sup.apply(alive) is None
    assert await sup.apply(alive) is None
    assert store.reads == ["cancelled"]
    assert watcher.deleted == [("shard-a", "cancelled")] * 2


async def test_the_memory_of_finished_runs_is_bounded(monkeypatch):
    import nexus.core.supervision as supervision_module

    monkeypatch.setattr(supervision_module, "FINISHED_REMEMBERED", 2)
    store = CountingStore()
    for run_id in ("r1", "r2", "r3"):
        store.add(run_id, S.COMPLETED, cluster="shard-a")
    sup = supervision(store, Watcher(ClusterSnapshot(observations=[])))
    for run_id in ("r1", "r2", "r3", "r3", "r2", "r1"):
        await sup.apply(succeeded(run_id))
    assert store.reads == ["r1", "r2", "r3", "r1"]  # r1, the oldest, was forgotten
