"""In-memory stand-ins for the launch path's ports, for unit tests of one module:
a run store with the real lifecycle checks, a launcher that records its calls."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from nexus.core import lifecycle
from nexus.core.callbacks import callback_pending
from nexus.core.history import created_event, transition_event
from nexus.core.listing import RunPage, RunQuery, StageCount, page_of
from nexus.core.models import CallbackState, Run, RunEvent, RunKey, SubmissionEntry
from nexus.core.models import LifecycleStage as S
from nexus.core.pipeline import LimitConfig
from nexus.errors import BackendUnavailable, NotFound


class MemoryStore:
    """Just what the pipeline uses of a RunStore, with the real lifecycle checks."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], Run] = {}
        self.submissions: dict[tuple[str, str], SubmissionEntry] = {}
        self.transitions: list[tuple[str, S]] = []
        self.unavailable = 0  # fail this many calls with BackendUnavailable
        self.idempotency: dict[tuple[str, str], str] = {}
        self.events: dict[tuple[str, str], list[RunEvent]] = {}

    def add(
        self,
        run_id: str,
        stage: S = S.NEW,
        *,
        cluster: str = "shard-a",
        job_uid: str = "",
        submission: bool = True,
        algorithm: str = "algo",
    ) -> RunKey:
        self.runs[(algorithm, run_id)] = Run(
            algorithm=algorithm,
            id=run_id,
            lifecycle_stage=stage,
            cluster=cluster,
            job_uid=job_uid,
            received_at=datetime.now(UTC),
        )
        if submission:
            self.submissions[(algorithm, run_id)] = SubmissionEntry(
                algorithm=algorithm,
                id=run_id,
                cluster=cluster,
                template={"metadata": {"name": run_id}},
            )
        return RunKey(algorithm, run_id, cluster=cluster)

    async def create(
        self, run: Run, submission: SubmissionEntry | None, idempotency_key: str | None = None
    ) -> str:
        self._maybe_fail()
        if idempotency_key:
            first = self.idempotency.setdefault((run.algorithm, idempotency_key), run.id)
            if first != run.id:
                return first
        self.runs[(run.algorithm, run.id)] = run
        self.events[(run.algorithm, run.id)] = [created_event(run)]
        return run.id

    async def find_idempotent(self, algorithm: str, key: str) -> str | None:
        self._maybe_fail()
        return self.idempotency.get((algorithm, key))

    def stage(self, run_id: str, algorithm: str = "algo") -> S:
        return self.runs[(algorithm, run_id)].lifecycle_stage

    def run(self, run_id: str, algorithm: str = "algo") -> Run:
        return self.runs[(algorithm, run_id)]

    def _maybe_fail(self) -> None:
        if self.unavailable:
            self.unavailable -= 1
            raise BackendUnavailable("store down")

    async def get(self, algorithm: str, run_id: str) -> Run | None:
        self._maybe_fail()
        return self.runs.get((algorithm, run_id))

    async def get_submission(self, algorithm: str, run_id: str) -> SubmissionEntry | None:
        self._maybe_fail()
        return self.submissions.get((algorithm, run_id))

    async def buffer(
        self, submission: SubmissionEntry, from_stage: S = S.NEW, *, known: Run | None = None
    ) -> Run:
        current = self.runs.get((submission.algorithm, submission.id))
        if current is not None:
            lifecycle.check(submission.id, current.lifecycle_stage, S.BUFFERED, from_stage)
        run = await self.transition(submission.algorithm, submission.id, S.BUFFERED)
        self.submissions[(submission.algorithm, submission.id)] = submission
        return run

    async def pending_callbacks(self, limit: int) -> list[Run]:
        self._maybe_fail()
        pending = [run for run in self.runs.values() if callback_pending(run)]
        return pending[:limit]

    async def update_callback(
        self,
        algorithm: str,
        run_id: str,
        expected: CallbackState | None,
        state: CallbackState,
        *,
        done: bool = False,
    ) -> Run | None:
        self._maybe_fail()
        current = self.runs[(algorithm, run_id)]
        if current.callback_state != expected or current.callback_done_at is not None:
            return None
        updated = msgspec.structs.replace(
            current, callback_state=state, callback_done_at=datetime.now(UTC) if done else None
        )
        self.runs[(algorithm, run_id)] = updated
        return updated

    async def list_runs(self, query: RunQuery) -> RunPage:
        self._maybe_fail()
        return page_of([run for run in self.runs.values() if query.matches(run)], query.limit)

    async def count_runs(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        self._maybe_fail()
        counts = Counter(
            (run.algorithm, run.lifecycle_stage)
            for run in self.runs.values()
            if RunQuery(algorithm=algorithm, since=since, until=until).matches(run)
        )
        return [
            StageCount(algorithm=name, stage=stage, count=count)
            for (name, stage), count in sorted(counts.items())
        ]

    async def history(self, algorithm: str, run_id: str) -> list[RunEvent] | None:
        self._maybe_fail()
        if (algorithm, run_id) not in self.runs:
            return None
        return list(self.events.get((algorithm, run_id), []))

    async def transition(
        self, algorithm: str, run_id: str, target: S, *, known: Run | None = None, **fields: Any
    ) -> Run:
        self._maybe_fail()
        run = self.runs.get((algorithm, run_id))
        if run is None:
            raise NotFound(run_id)
        lifecycle.check(run_id, run.lifecycle_stage, target)
        fields.setdefault("last_modified", datetime.now(UTC))
        self.events.setdefault((algorithm, run_id), []).append(
            transition_event(run, target, fields)
        )
        updated = msgspec.structs.replace(run, lifecycle_stage=target, **fields)
        self.runs[(algorithm, run_id)] = updated
        self.transitions.append((run_id, target))
        return updated


class FakeLauncher:
    def __init__(self, behaviour: Callable[[str, dict], Any] | None = None) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[float, str, str]] = []  # (monotonic time, cluster, run id)
        self.cancelled: list[tuple[str, str, str]] = []

    def shards(self):
        return {"shard-a", "shard-b"}

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        run_id = manifest["metadata"]["name"]
        self.calls.append((time.monotonic(), cluster, run_id))
        if self.behaviour is not None:
            result = self.behaviour(cluster, manifest)
            if asyncio.iscoroutine(result):
                result = await result
            if isinstance(result, BaseException):
                raise result
        return f"uid-{run_id}"

    async def cancel(self, cluster: str, run_id: str, policy: str) -> bool:
        self.cancelled.append((cluster, run_id, policy))
        return True

    async def logs(self, cluster: str, run_id: str, tail_lines: int) -> str:
        raise NotFound(f"no log for {run_id} in a fake launcher")

    def attempts(self, run_id: str) -> list[float]:
        return [at for at, _, launched in self.calls if launched == run_id]


async def render(run: Run) -> SubmissionEntry:
    """The BUFFERED step's renderer, reduced to what the fake launcher reads."""
    return SubmissionEntry(
        algorithm=run.algorithm,
        id=run.id,
        cluster=run.cluster,
        template={"metadata": {"name": run.id}},
    )


def limits(**changes) -> LimitConfig:
    values = {
        "rate": 1000.0,
        "burst": 1000,
        "base_delay": 0.01,
        "max_delay": 0.1,
        "max_attempts": 4,
        "workers": 2,
        "capacity": 100,
    }
    values.update(changes)
    return LimitConfig(**values)


class VirtualTime:
    """A wall clock that moves only when the test says so (``now`` is what the use
    cases take)."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
