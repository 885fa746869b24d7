"""The launch of one run: the decisions between the queue and a RUNNING run (SPEC §5).

NEW -> BUFFERED (its Job is rendered and stored with the stage change: the payload was
stored before the run was accepted), then a token of its shard's launch rate, then the
Job is created, then the run is committed RUNNING. Each step reads the run as the store
has it now, so a run cancelled or finished meanwhile goes no further.

This module decides; it holds no queue, timer or claim. The pipeline
(:mod:`nexus.core.pipeline`) owns the lanes, workers, the token buckets and the retries'
backoff, and hands each popped run to :meth:`Launch.run` with a way to wait for a token
and whether a failed attempt may still be retried; what comes back tells it what to do
with the run's claim. So the rules are tested here on their own, in virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple

from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, RunKey, SubmissionEntry
from nexus.core.ports import JobLauncher, RunStore
from nexus.errors import BackendUnavailable, InvalidTransition, LaunchError, NotFound

log = logging.getLogger("nexus.pipeline")

DRY_RUN_UID = "dry-run"
LAUNCH_FAILED_CAUSE = (
    "Algorithm submission was buffered, but failed to launch on the target cluster: "
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Step(Enum):
    """What became of an attempt that did not create a Job."""

    DONE = "done"  # nothing more to do now: finished, failed, cancelled, gone or RUNNING
    RETRY = "retry"  # the Job could not be created, and the attempt may be retried


class Launched(NamedTuple):
    """The Job exists; the run is still to be committed RUNNING (:meth:`Launch.commit`)."""

    run: Run
    uid: str
    cluster: str


# Waits for a launch token of the shard; True when it had to wait (the run may have
# changed meanwhile).
TokenWait = Callable[[str], Awaitable[bool]]


class Launch:
    def __init__(
        self,
        store: RunStore,
        launcher: JobLauncher,
        render: Callable[[Run], Awaitable[SubmissionEntry]],
        on_change: Callable[[str, str], None],
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._launcher = launcher
        self._render = render
        self._on_change = on_change
        self._now = now
        self.launched = 0
        self.failures = 0  # failed Job creations, retried or not

    async def run(self, key: RunKey, *, token: TokenWait, may_retry: bool) -> Launched | Step:
        """Take ``key``'s run as far as it goes now. BackendUnavailable (the store or the
        template source is down) propagates: nothing was decided."""
        run = await self._store.get(key.algorithm, key.id)
        if run is None or run.lifecycle_stage.is_terminal or run.lifecycle_stage is S.RUNNING:
            return Step.DONE
        entry: SubmissionEntry | None = None
        if run.lifecycle_stage is S.NEW:
            rendered = await self._buffer(run)
            if rendered is None:
                return Step.DONE
            run, entry = rendered
        if run.job_uid == DRY_RUN_UID:
            await self._transition(run, S.COMPLETED, sent_at=self._now())
            return Step.DONE
        if entry is None:
            entry = await self._store.get_submission(run.algorithm, run.id)
        if entry is None:
            await self._fail(
                run, "no Job was stored", "The submission buffer has no entry for this run."
            )
            return Step.DONE
        if await token(entry.cluster):
            # A cancel may have landed while this run waited for its token: a run that has
            # no Job yet must not get one (SPEC §2).
            current = await self._store.get(run.algorithm, run.id)
            if current is None or current.lifecycle_stage is not S.BUFFERED:
                return Step.DONE
        try:
            uid = await self._launcher.launch(entry.cluster, entry.template)
        except LaunchError as exc:
            self.failures += 1
            if exc.retryable and may_retry:
                log.info(
                    "launch of %s/%s failed (attempt %d), retrying: %s",
                    run.algorithm,
                    run.id,
                    key.attempt + 1,
                    exc.message,
                )
                return Step.RETRY
            await self._fail(
                run, exc.message, f"Gave up after {key.attempt + 1} attempt(s): {exc.message}"
            )
            return Step.DONE
        self.launched += 1
        return Launched(run, uid, entry.cluster)

    async def _buffer(self, run: Run) -> tuple[Run, SubmissionEntry] | None:
        """Render the Job and move the run to BUFFERED with it; None when the run goes no
        further (it failed to render, or was cancelled meanwhile).

        A run that cannot be rendered (a missing workgroup, a record the renderer cannot
        use) would fail again on every try: it fails now, with the reason, instead of
        going round the sweep for ever. A template source that is down
        (BackendUnavailable) is retried like a store outage."""
        reason = ""
        entry: SubmissionEntry | None = None
        try:
            entry = await self._render(run)
        except BackendUnavailable:
            raise
        except LaunchError as exc:
            reason = exc.message
        except Exception as exc:
            log.exception("rendering the Job of %s/%s failed", run.algorithm, run.id)
            reason = repr(exc)
        if entry is None:
            await self._fail(run, reason, f"Rendering its Job failed: {reason}")
            return None
        try:
            buffered = await self._store.buffer(entry, known=run)
        except (InvalidTransition, NotFound):  # cancelled meanwhile
            return None
        self._on_change(run.algorithm, run.id)
        return buffered, entry

    async def commit(self, launched: Launched) -> None:
        """Commit RUNNING; a run cancelled while its Job was being created gets its Job
        deleted. Raises NexusError when the store fails: the run is then BUFFERED with a
        Job, which the supervisor's watch records as RUNNING when it sees it, and which
        a later launch finds (launching is idempotent) and commits."""
        run, uid, cluster = launched
        committed = await self._transition(run, S.RUNNING, job_uid=uid, sent_at=self._now())
        if committed is None:
            current = await self._store.get(run.algorithm, run.id)
            if current is not None and current.lifecycle_stage is S.CANCELLED:
                # Cancelled while we were creating the Job: do not leave it running.
                await self._launcher.cancel(cluster, run.id, "Background")

    async def _fail(self, run: Run, reason: str, details: str) -> None:
        await self._transition(
            run,
            S.SCHEDULING_FAILED,
            algorithm_failure_cause=LAUNCH_FAILED_CAUSE + reason,
            algorithm_failure_details=details,
        )

    async def _transition(self, run: Run, target: S, **fields: Any) -> Run | None:
        try:
            updated = await self._store.transition(
                run.algorithm, run.id, target, known=run, **fields
            )
        except (InvalidTransition, NotFound):
            return None
        self._on_change(run.algorithm, run.id)
        return updated
