"""A supervisor's shard scope (``supervisor.shards``): what it covers, how a bad setting
is refused, and that a per-shard supervisor leaves other shards' runs alone, whether it
judges RUNNING runs or takes over a dead scheduler's pending ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from fakes import FakeLauncher, limits, render
from test_pending_sweep import HOST, Payloads, SweptStore
from test_supervision import Watcher, fatal_exit, running

from nexus.backends.k8s.local_executor import LocalExecutor
from nexus.core.models import LifecycleStage as S
from nexus.core.pipeline import LaunchPipeline
from nexus.core.ports import ClusterSnapshot
from nexus.core.recovery import requeue_pending
from nexus.core.scope import ShardScope
from nexus.core.supervision import LOST_CAUSE, Supervision, SupervisionConfig
from nexus.errors import ConfigError
from nexus.settings import load_settings

DEAD = "dead-scheduler"


def test_an_empty_scope_covers_every_shard_and_runs_without_one():
    scope = ShardScope()
    assert scope.is_all and scope.covers("shard-a") and scope.covers("")
    assert scope.describe() == "every shard"


def test_a_named_scope_covers_exactly_its_shards():
    scope = ShardScope(["shard-b", "shard-a", "shard-a"])
    assert not scope.is_all
    assert scope.covers("shard-a") and scope.covers("shard-b")
    # A Go run has no recorded shard: only a supervisor of every shard judges it.
    assert not scope.covers("shard-c") and not scope.covers("") and not scope.covers("SHARD-A")
    assert scope.describe() == "shard(s) shard-a, shard-b"


def test_known_shards_pass_the_check(tmp_path):
    ShardScope(["shard-a"]).check({"shard-a", "shard-b"})
    ShardScope().check(set())  # every shard, however many there are
    # The local executor serves every shard name.
    ShardScope(["anything"]).check(LocalExecutor(tmp_path, tmp_path, tmp_path).shards())


@pytest.mark.parametrize(
    ("names", "named"),
    [
        (["shard-c"], ["'shard-c'"]),
        (["shard-a", "nope", "Shard-B"], ["'Shard-B'", "'nope'"]),
        (['shard-a\n{"level": "ERROR"}'], ["'shard-a\\n"]),
    ],
)
def test_an_unknown_shard_is_a_config_error_naming_the_key(names, named):
    with pytest.raises(ConfigError) as caught:
        ShardScope(names).check({"shard-a", "shard-b"})
    message = caught.value.message
    assert "supervisor.shards" in message and "known: shard-a, shard-b" in message
    for name in named:
        assert name in message
    assert "\n" not in message  # a hostile name cannot forge a log line


@pytest.mark.parametrize("names", [["x" * 100_000], [f"s{i}" for i in range(10_000)]])
def test_huge_or_many_unknown_names_are_shortened_in_the_message(names):
    with pytest.raises(ConfigError) as caught:
        ShardScope(names).check({"shard-a"})
    assert len(caught.value.message) < 600, caught.value.message


def test_the_setting_reads_yaml_and_a_comma_separated_env_value(tmp_path):
    assert load_settings(environ={}).supervisor.shards == []
    path = tmp_path / "nexus.yaml"
    path.write_text("supervisor:\n  shards: [shard-a, shard-b]\n")
    assert load_settings(path, environ={}).supervisor.shards == ["shard-a", "shard-b"]
    env = {"NEXUS__SUPERVISOR__SHARDS": "shard-b, shard-c"}
    assert load_settings(path, environ=env).supervisor.shards == ["shard-b", "shard-c"]


@pytest.mark.parametrize(
    "text", ["supervisor:\n  shards: shard-a\n", "supervisor:\n  shards: [1, {a: b}]\n"]
)
def test_a_malformed_setting_names_the_key(tmp_path, text):
    path = tmp_path / "nexus.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"supervisor\.shards"):
        load_settings(path, environ={})


def test_an_empty_shard_name_is_refused(tmp_path):
    path = tmp_path / "nexus.yaml"
    path.write_text("supervisor:\n  shards: ['shard-a', ' ']\n")
    with pytest.raises(ConfigError, match=r"supervisor\.shards may not hold an empty name"):
        load_settings(path, environ={})


# --- a supervisor of shard-a beside one of shard-b ---------------------------------------


class TakeoverStore(SweptStore):
    """A store where scheduler DEAD's lease expired."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[str] = []

    async def expired_hosts(self) -> list[str]:
        return [] if DEAD in self.dropped else [DEAD]

    async def drop_lease(self, host: str) -> None:
        self.dropped.append(host)


def of_host(store: SweptStore, run_id: str, stage: S, cluster: str, host: str = DEAD) -> None:
    store.add(run_id, stage, cluster=cluster)
    store.runs[("algo", run_id)] = msgspec.structs.replace(store.run(run_id), received_by_host=host)


def supervisor_of(store: SweptStore, watcher: Watcher, *shards: str) -> Supervision:
    """A supervisor of ``shards`` (all if none) that has long been observing them."""
    config = SupervisionConfig(
        success_grace=0.0,
        backoff_grace=0.0,
        host=HOST,
        reconcile_interval=1.0,
        lease_ttl=10.0,
        scope=ShardScope(shards),
    )
    pipeline = LaunchPipeline(store, FakeLauncher(), limits(), render=render)  # not started
    since = datetime.now(UTC) - timedelta(hours=1)
    return Supervision(store, Payloads(), watcher, pipeline, config, observing_since=since)


def dead_schedulers_runs() -> TakeoverStore:
    store = TakeoverStore()
    for cluster in ("shard-a", "shard-b"):
        of_host(store, f"new-{cluster}", S.NEW, cluster)
        of_host(store, f"buffered-{cluster}", S.BUFFERED, cluster)
        running(store, f"running-{cluster}", cluster)
        store.runs[("algo", f"running-{cluster}")] = msgspec.structs.replace(
            store.run(f"running-{cluster}"), received_by_host=DEAD
        )
    return store


def queued(supervisor: Supervision, *run_ids: str) -> set[str]:
    """Which of ``run_ids`` the supervisor claimed to launch again."""
    assert supervisor.pipeline is not None
    return {run_id for run_id in run_ids if ("algo", run_id) in supervisor.pipeline.in_flight}


PENDING = ("new-shard-a", "buffered-shard-a", "new-shard-b", "buffered-shard-b")


async def test_each_supervisor_takes_over_only_its_own_shards_runs():
    """Scheduler DEAD left a NEW, a BUFFERED and a RUNNING run (Job gone) on each shard.
    The shard-a supervisor re-queues and fails only shard-a's; shard-b's stay exactly as
    they were (unclaimed, not lost) for their own supervisor, and the dead scheduler's
    lease is dropped only once both shards' runs are taken care of."""
    store = dead_schedulers_runs()
    empty = Watcher(ClusterSnapshot(observations=[]))
    on_a = supervisor_of(store, empty, "shard-a")
    await on_a.reconcile()
    assert queued(on_a, *PENDING) == {"new-shard-a", "buffered-shard-a"}
    assert store.stage("running-shard-a") is S.FAILED
    assert store.run("running-shard-a").algorithm_failure_cause == LOST_CAUSE
    for run_id, stage in (
        ("new-shard-b", S.NEW),
        ("buffered-shard-b", S.BUFFERED),
        ("running-shard-b", S.RUNNING),
    ):
        assert store.stage(run_id) is stage
    assert store.dropped == []  # shard-b's runs are still the dead scheduler's

    on_b = supervisor_of(store, empty, "shard-b")
    await on_b.reconcile()
    assert queued(on_b, *PENDING) == {"new-shard-b", "buffered-shard-b"}
    assert store.stage("running-shard-b") is S.FAILED
    assert store.dropped == []  # re-queued, not yet launched: NEW/BUFFERED still


async def test_one_supervisor_of_every_shard_takes_over_all_of_them():
    store = dead_schedulers_runs()
    everything = supervisor_of(store, Watcher(ClusterSnapshot(observations=[])))
    await everything.reconcile()
    assert queued(everything, *PENDING) == set(PENDING)
    assert store.stage("running-shard-a") is S.FAILED
    assert store.stage("running-shard-b") is S.FAILED


async def test_an_observation_of_another_shard_is_ignored():
    """Even if a watcher reported another shard's Job (it should not: the Kubernetes
    executor watches only supervisor.shards), the run is not touched nor its Job deleted."""
    store = TakeoverStore()
    running(store, "fatal-on-b", "shard-b")
    fatal = fatal_exit("fatal-on-b", "shard-b")
    watcher = Watcher(ClusterSnapshot(observations=[fatal]))
    on_a = supervisor_of(store, watcher, "shard-a")
    assert await on_a.apply(fatal) is None
    await on_a.reconcile()
    assert store.stage("fatal-on-b") is S.RUNNING and watcher.deleted == []
    on_b = supervisor_of(store, watcher, "shard-b")
    await on_b.reconcile()
    assert store.stage("fatal-on-b") is S.FAILED
    assert watcher.deleted == [("shard-b", "fatal-on-b")]


async def test_requeue_pending_leaves_other_shards_runs_unclaimed():
    store = SweptStore()
    of_host(store, "on-a", S.BUFFERED, "shard-a")
    of_host(store, "on-b", S.BUFFERED, "shard-b")
    pipeline = LaunchPipeline(store, FakeLauncher(), limits(), render=render)
    count = await requeue_pending(store, Payloads(), pipeline, DEAD, scope=ShardScope(["shard-b"]))
    assert count == 1
    assert ("algo", "on-b") in pipeline.in_flight and ("algo", "on-a") not in pipeline.in_flight
