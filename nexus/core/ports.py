"""The ports: what the use cases need from the outside world, as Protocols.

Each has one implementation per technology under ``nexus.backends`` and one contract
suite under ``tests/contract`` run against all of them. Implementations raise only
``nexus.errors`` classes: BackendUnavailable when their server does not answer.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any, Protocol

import msgspec

from nexus.core.listing import RunPage, RunQuery, StageCount
from nexus.core.models import (
    CallbackState,
    LifecycleStage,
    ParentRef,
    Run,
    RunEvent,
    SubmissionEntry,
    Template,
    Workgroup,
)


class RunStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""

    async def create(
        self, run: Run, submission: SubmissionEntry | None, idempotency_key: str | None = None
    ) -> str:
        """Write a NEW run and its submission entry atomically and return ``run.id``.

        With an idempotency key already used for ``run.algorithm``, write nothing and return
        the id of the run that first used it.
        """

    async def buffer(
        self,
        submission: SubmissionEntry,
        from_stage: LifecycleStage = LifecycleStage.NEW,
        *,
        known: Run | None = None,
    ) -> Run:
        """The BUFFERED step's write: store the run's rendered Job and move the run from
        ``from_stage`` to BUFFERED, so a BUFFERED run always has its Job. One transaction
        where the store has them; otherwise the Job row first (a crash in between leaves
        a run whose Job is rendered and written again). Raise NotFound, or
        InvalidTransition when the run is not at ``from_stage`` now (NEW for a launch;
        RUNNING only for a disruption's re-queue, so a launch that read NEW never moves
        a run another process took to RUNNING back); then the stage is unchanged.
        ``known`` as in :meth:`transition`."""

    async def find_idempotent(self, algorithm: str, key: str) -> str | None: ...
    async def get(self, algorithm: str, run_id: str) -> Run | None: ...
    async def get_submission(self, algorithm: str, run_id: str) -> SubmissionEntry | None: ...

    async def transition(
        self,
        algorithm: str,
        run_id: str,
        target: LifecycleStage,
        *,
        known: Run | None = None,
        **fields: Any,
    ) -> Run:
        """Compare-and-set the stage (and ``fields``) if the lifecycle allows it from the
        stage stored now; return the updated run. Raise NotFound or InvalidTransition.

        ``known``: the run as the caller read it just before. A store that must read
        the run before its compare-and-set may start from it instead: a stale copy is
        caught by the compare-and-set on the stage, and costs a read and a retry, never
        a wrong write (the change writes only the stage, ``fields`` and the history)."""

    async def update_tag(self, algorithm: str, run_id: str, tag: str) -> Run: ...
    async def by_tag(self, tag: str) -> list[Run]: ...
    async def by_host_stage(self, host: str, stage: LifecycleStage) -> list[Run]:
        """The runs ``host`` accepted that are at ``stage`` now, an unfinished stage
        (lifecycle.require_unfinished): recovery and supervision look for work left
        behind, and a store need not index the finished runs of a host."""

    async def children(self, parent: ParentRef) -> list[Run]: ...

    async def list_runs(self, query: RunQuery) -> RunPage:
        """A page of the runs ``query`` matches, newest first (core.listing): at most
        ``query.limit``, maybe fewer with a next position; no next position only on
        the last page."""

    async def count_runs(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        """How many runs received in [since, until) are at each stage now, per algorithm
        (only ``algorithm``'s when given); stages without runs are left out."""

    async def history(self, algorithm: str, run_id: str) -> list[RunEvent] | None:
        """The run's events (core.history), oldest first; None when there is no run."""

    async def pending_callbacks(self, limit: int) -> list[Run]:
        """Up to ``limit`` finished runs whose webhook is neither delivered nor given up
        (core.callbacks.callback_pending), the longest finished first."""

    async def update_callback(
        self,
        algorithm: str,
        run_id: str,
        expected: CallbackState | None,
        state: CallbackState,
        *,
        done: bool = False,
    ) -> Run | None:
        """Compare-and-set the run's webhook state from ``expected`` (as read) to
        ``state``; ``done`` marks it delivered or given up (it leaves the pending index).
        None, and nothing written, when the state is no longer ``expected`` or the webhook
        is done. Raise NotFound."""

    async def heartbeat(self, host: str, ttl: float) -> None:
        """Renew ``host``'s lease for ``ttl`` seconds."""

    async def expired_hosts(self) -> list[str]: ...
    async def drop_lease(self, host: str) -> None: ...


class PayloadBuffer(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def put(self, algorithm: str, run_id: str, data: bytes | memoryview) -> None: ...
    async def get(self, algorithm: str, run_id: str) -> bytes:
        """Raise NotFound when there is no payload."""

    async def exists(self, algorithm: str, run_id: str) -> bool: ...
    def payload_url(self, algorithm: str, run_id: str, valid_for: float) -> str:
        """A URL the algorithm can GET its payload from, valid for ``valid_for`` seconds."""

    def result_urls(self, algorithm: str, run_id: str, valid_for: float) -> tuple[str, str]:
        """(upload URL for PUT, download URL for GET) of the run's result object."""

    async def put_result(self, algorithm: str, run_id: str, data: bytes) -> None: ...
    async def get_result(self, algorithm: str, run_id: str) -> bytes: ...


class TemplateSource(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def template(self, name: str) -> Template | None: ...
    async def workgroup(self, name: str) -> Workgroup | None: ...
    async def catalog(self) -> tuple[list[Template], list[Workgroup]]:
        """Every usable template and workgroup now, each list sorted by name (the UI)."""


class JobLauncher(Protocol):
    def shards(self) -> Collection[str]: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        """Create the Job; return its uid. An existing Job of that name counts as success.
        Raise LaunchError(retryable=...) on failure."""

    async def cancel(self, cluster: str, run_id: str, policy: str) -> bool:
        """Delete the run's Job with the propagation policy; False when there is none."""

    async def logs(self, cluster: str, run_id: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines the run's newest Pod (or process) wrote. Raise
        NotFound when it has none (not started, or deleted with its Job), and
        BackendUnavailable when the cluster cannot give them."""


class Outcome(str, enum.Enum):
    """What a cluster says about a run's Job, whatever the executor."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FATAL_EXIT = "FATAL_EXIT"
    OOM_KILLED = "OOM_KILLED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    BACKOFF_LIMIT = "BACKOFF_LIMIT"
    FAILED_TO_START = "FAILED_TO_START"
    IMAGE_PULL_BACKOFF = "IMAGE_PULL_BACKOFF"
    CRASH_BACKOFF = "CRASH_BACKOFF"
    LOST = "LOST"
    # The Job's process was lost with a crashed nexus, without an exit code (a kill -9 of
    # its cgroup or container takes the local processes along): as a Pod lost with its
    # node, a disruption, not a failure of the algorithm. Only the local executor knows it.
    DISRUPTED = "DISRUPTED"


class JobObservation(msgspec.Struct, frozen=True, kw_only=True):
    algorithm: str
    run_id: str
    cluster: str
    outcome: Outcome
    since: datetime
    message: str = ""
    job_uid: str = ""  # when known: recorded if the supervisor is first to see the Job


class ClusterSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every run Job of the shards that answered a re-list, and why the others did not.

    A shard that cannot be reached must not stop the supervision of the others, nor make
    its own RUNNING runs look lost (their Jobs were not seen because nobody looked).
    """

    observations: list[JobObservation]
    unreachable: dict[str, str] = msgspec.field(default_factory=dict)  # shard -> why


class ClusterWatcher(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def observations(self) -> AsyncIterator[JobObservation]:
        """Changes as they happen (watch)."""

    async def snapshot(self) -> ClusterSnapshot:
        """The state of every run Job now (periodic re-list: watches are lossy). A shard
        that does not answer is named in ``unreachable``; only when no shard answers, or
        for a bug, does this raise."""

    async def delete_job(self, cluster: str, run_id: str) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Executor(JobLauncher, ClusterWatcher, Protocol):
    """Both sides of one cluster technology (local processes, or Kubernetes shards)."""


# --- the configuration controller (core/controller.py) --------------------------------


class ConfigSource(Protocol):
    """The controller cluster: its templates, workgroups, Secrets and ConfigMaps in the
    controller namespace (read from a cache its watches keep, as the API server's JSON),
    and the few writes the controller makes there."""

    def get(self, kind: str, name: str) -> dict[str, Any] | None: ...
    def names(self, kind: str) -> list[str]: ...
    async def set_owners(self, obj: dict[str, Any], owners: list[dict[str, Any]]) -> dict[str, Any]:
        """Set the object's ownerReferences; Conflict if it changed since it was read."""

    async def write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Set the object's status (its status subresource); Conflict as above."""

    async def event(
        self, involved: dict[str, Any], warning: bool, reason: str, message: str
    ) -> None:
        """Record an Event about ``involved``; a failure to record one is only logged."""


class ShardObjects(Protocol):
    """One shard's controller namespace. Calls time out; BackendUnavailable when the
    API server does not answer, Conflict when a write lost a race."""

    name: str

    async def get(self, kind: str, name: str) -> dict[str, Any] | None: ...
    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def replace(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def delete(self, kind: str, name: str, uid: str) -> None:
        """Delete the object if it still has ``uid``; a missing one is not an error."""


class LeaderLease(Protocol):
    """A lease only one holder has at a time (a coordination.k8s.io Lease)."""

    async def acquire_or_renew(self) -> bool:
        """Take the lease if it is free or expired, renew it if ours: whether we hold it.
        BackendUnavailable when its server does not answer."""
