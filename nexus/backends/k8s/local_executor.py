"""Local executor: runs each Job's container command as a process (embedded mode).

It reads the very manifest that would be sent to Kubernetes and honours what the Job
controller would: ``activeDeadlineSeconds`` (the process is killed and the run is
DEADLINE_EXCEEDED), ``backoffLimit`` (failed attempts retried with a growing delay, then
BACKOFF_LIMIT), and ``podFailurePolicy`` (a fatal exit code ends the Job at once, a
transient one is retried without counting). ``python``/``python3`` as the command means
the interpreter nexus runs on, so examples work inside a virtualenv. Each process gets
the Job's env (and not nexus's own ``NEXUS__`` settings); its output goes to
``<logs>/<run id>.log``. It stands in for every shard name.

Like a Job, a local Job outlives the nexus that started it and is never started twice:
each is recorded before its process is spawned (:mod:`.local_records`), and a restarted
nexus adopts the attempts still alive and takes the outcome of those that ended while it
was down. An attempt that left no process and no exit code never ran (nexus died between
record and spawn) or was killed along with nexus (a kill -9 of its cgroup or container
takes the processes too): its Job is reported DISRUPTED, like a Pod lost with its node,
and the supervisor decides whether the run is launched again (core.supervision). Such a
launch replaces the lost Job and continues it: its deadline still counts from the first
start and its earlier failed attempts still count against ``backoffLimit``; the lost
attempt does not. Attempts it must start itself after a restart wait for
:meth:`LocalExecutor.start`, called once nexus serves the payloads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nexus.backends.k8s import local_process
from nexus.backends.k8s.local_process import tail
from nexus.backends.k8s.local_records import LaunchRecord, LaunchRecords
from nexus.core.ports import ClusterSnapshot, JobObservation, Outcome
from nexus.errors import LaunchError, NotFound

log = logging.getLogger("nexus.executor")

DEFAULT_BACKOFF_LIMIT = 6  # the Kubernetes default
_ADOPTED_POLL = 0.2  # seconds between checks that an adopted attempt still runs
# An adopted attempt that ended without writing its exit code was killed (its wrapper
# too): counted as the container runtime would report a SIGKILL.
_KILLED = 128 + signal.SIGKILL


class _AnyShard:
    """Every shard name is served locally."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self):
        return iter(("local",))

    def __len__(self) -> int:
        return 1


def _exit_rules(manifest: dict[str, Any]) -> tuple[set[int], set[int]]:
    fatal: set[int] = set()
    transient: set[int] = set()
    for rule in manifest["spec"].get("podFailurePolicy", {}).get("rules", ()):
        codes = set(rule.get("onExitCodes", {}).get("values", ()))
        if rule.get("action") == "FailJob":
            fatal |= codes
        elif rule.get("action") == "Ignore":
            transient |= codes
    return fatal, transient


class _LocalJob:
    def __init__(self, record: LaunchRecord, *, resumed: bool = False) -> None:
        self.record = record
        self.run_id = record.run_id
        self.cluster = record.cluster
        self.manifest = record.manifest
        labels = self.manifest["metadata"].get("labels", {})
        self.algorithm = labels.get("science.sneaksanddata.com/algorithm-template-name", "")
        self.outcome = Outcome.RUNNING
        self.message = ""
        self.since = datetime.now(UTC)
        self.resumed = resumed  # taken over from a previous nexus: spawns wait for start()
        self.process: subprocess.Popen[bytes] | None = None
        self.group: int | None = None  # process group of the live attempt
        self.task: asyncio.Task[None] | None = None
        self.finished_at: float | None = None  # monotonic

    def observation(self) -> JobObservation:
        # The local "Job uid" is the run id (what launch() returns), so the supervisor can
        # record it when it is first to see the process.
        return JobObservation(
            algorithm=self.algorithm,
            run_id=self.run_id,
            cluster=self.cluster,
            outcome=self.outcome,
            since=self.since,
            message=self.message,
            job_uid=self.run_id,
        )


class LocalExecutor:
    """JobLauncher and ClusterWatcher for processes on this machine."""

    def __init__(
        self,
        workdir: str | Path,
        logs: str | Path,
        records: str | Path,
        *,
        retry_base: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        self._workdir = Path(workdir)
        self._logs = Path(logs)
        self._records = LaunchRecords(Path(records))
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._jobs: dict[str, _LocalJob] = {}
        self._events: asyncio.Queue[JobObservation] = asyncio.Queue()
        self._serving = asyncio.Event()

    def shards(self) -> _AnyShard:
        return _AnyShard()

    async def open(self) -> None:
        self._logs.mkdir(parents=True, exist_ok=True)
        self._records.open()
        for record in self._records.load_all():
            self._restore(record)

    def start(self) -> None:
        """nexus serves payloads now: attempts taken over at open() may start processes."""
        self._serving.set()

    async def close(self) -> None:
        """Stop watching; the processes go on, as Pods outlive a stopped scheduler, and
        the next nexus on this data folder adopts them."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- JobLauncher -------------------------------------------------------------------

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        run_id = manifest["metadata"]["name"]
        lost = self._jobs.get(run_id)
        if lost is not None and lost.outcome is not Outcome.DISRUPTED:
            return run_id
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        if not container.get("command"):
            raise LaunchError("the template's command is empty", retryable=False)
        record = LaunchRecord(
            run_id=run_id, cluster=cluster, manifest=manifest, started_at=time.time()
        )
        if lost is not None:  # launched again after a disruption: the same Job goes on
            before = lost.record
            record.started_at, record.failures = before.started_at, before.failures
            record.retries = before.retries
        job = _LocalJob(record)
        self._jobs[run_id] = job
        # Like a Job's create call, this returns once the process exists: the caller
        # commits RUNNING next, and a run RUNNING without a process would be lost.
        if await self._start_attempt(job):
            if self._jobs.get(run_id) is job:
                self._begin(job, first=functools.partial(self._wait_attempt, job))
            else:  # cancelled while it was being spawned
                self._kill(job)
        return run_id

    async def logs(self, cluster: str, run_id: str, tail_lines: int) -> str:
        path = self._logs / f"{run_id}.log"
        try:
            return await asyncio.to_thread(tail, path, tail_lines)
        except FileNotFoundError:
            raise NotFound(f"No log for request '{run_id}': its process has not started") from None

    async def cancel(self, cluster: str, run_id: str, policy: str) -> bool:
        job = self._jobs.pop(run_id, None)
        if job is None:
            return False
        if policy != "Orphan":
            await self._stop(job)
        self._records.remove(run_id)
        return True

    # --- ClusterWatcher ----------------------------------------------------------------

    async def observations(self) -> AsyncIterator[JobObservation]:
        while True:
            yield await self._events.get()

    async def snapshot(self) -> ClusterSnapshot:
        self._expire_finished()
        return ClusterSnapshot(observations=[job.observation() for job in self._jobs.values()])

    async def delete_job(self, cluster: str, run_id: str) -> None:
        job = self._jobs.pop(run_id, None)
        if job is not None:
            await self._stop(job)
            self._records.remove(run_id)

    # --- restart -----------------------------------------------------------------------

    def _restore(self, record: LaunchRecord) -> None:
        """Take over one Job recorded by a previous nexus."""
        run_id = record.run_id
        job = _LocalJob(record, resumed=True)
        if record.outcome:
            job.outcome, job.message = Outcome(record.outcome), record.message
            job.since = datetime.fromtimestamp(record.finished_at, UTC)
            job.finished_at = time.monotonic() - max(time.time() - record.finished_at, 0.0)
            self._jobs[run_id] = job
            return
        if self._records.held(run_id):
            job.group = self._records.group(run_id)
            job.message = f"Process group {job.group} adopted after a restart"
            log.info("adopted the live process of %s", run_id)
            self._begin(job, first=functools.partial(self._adopted_attempt, job))
            return
        code = self._records.exit_code(run_id)
        if code is None:
            # It never ran or was killed with nexus: no process is left (none holds the
            # lock), so launching the run again cannot start a second one. Kept, files
            # and all, until then: a crash before that finds it lost again.
            job.outcome = Outcome.DISRUPTED
            job.message = "Its process was lost with a crashed nexus (no exit code)"
            job.finished_at = time.monotonic()
            self._jobs[run_id] = job
            self._events.put_nowait(job.observation())
            return
        self._begin(job, first=functools.partial(_ended, code))

    async def _adopted_attempt(self, job: _LocalJob) -> int:
        """Wait for an attempt this process did not start (it cannot wait for its exit)."""
        while self._records.held(job.run_id):
            await asyncio.sleep(_ADOPTED_POLL)
        code = self._records.exit_code(job.run_id)
        return _KILLED if code is None else code

    # --- the process ---------------------------------------------------------------------

    def _begin(self, job: _LocalJob, first: Callable[[], Awaitable[int | None]]) -> None:
        self._jobs[job.run_id] = job
        job.task = asyncio.create_task(self._supervise(job, first), name=f"local-job-{job.run_id}")

    def _expire_finished(self) -> None:
        now = time.monotonic()
        for run_id, job in list(self._jobs.items()):
            ttl = job.manifest["spec"].get("ttlSecondsAfterFinished")
            if job.finished_at is not None and ttl is not None and now - job.finished_at > ttl:
                del self._jobs[run_id]
                self._records.remove(run_id)

    def _report(self, job: _LocalJob, outcome: Outcome, message: str) -> None:
        job.outcome, job.message = outcome, message
        job.since = datetime.now(UTC)
        if outcome is not Outcome.RUNNING:
            job.finished_at = time.monotonic()
            record = job.record
            record.outcome, record.message = outcome.value, message
            record.finished_at = job.since.timestamp()
            self._records.save(record)
        self._events.put_nowait(job.observation())

    def _command(self, container: dict[str, Any]) -> list[str]:
        command = list(container.get("command", ())) + list(container.get("args", ()))
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable
        return command

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
        for item in container.get("env", ()):
            if "value" in item:
                env[item["name"]] = str(item["value"])
        return env

    def _kill(self, job: _LocalJob) -> None:
        if job.process is not None and job.process.returncode is not None:
            return
        group = job.process.pid if job.process is not None else job.group
        if group is not None and (job.process is not None or self._records.held(job.run_id)):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def _stop(self, job: _LocalJob) -> None:
        self._kill(job)
        if job.task is not None and job.task is not asyncio.current_task():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)

    async def _supervise(self, job: _LocalJob, first: Callable[[], Awaitable[int | None]]) -> None:
        deadline = job.manifest["spec"].get("activeDeadlineSeconds")
        try:
            if deadline is not None:
                remaining = deadline - (time.time() - job.record.started_at)
                await asyncio.wait_for(self._attempts(job, first), timeout=max(remaining, 0.0))
            else:
                await self._attempts(job, first)
        except TimeoutError:
            self._kill(job)
            if job.process is not None:
                await local_process.wait_exit(job.process)
            self._report(
                job,
                Outcome.DEADLINE_EXCEEDED,
                f"Job was active longer than specified deadline ({deadline}s, ran "
                f"{time.time() - job.record.started_at:.1f}s)",
            )

    async def _attempts(self, job: _LocalJob, first: Callable[[], Awaitable[int | None]]) -> None:
        """Attempts until the Job ends; ``first`` waits for the code of the one under way
        (a callable, not a coroutine: a task cancelled before it ran would leave that
        coroutine never awaited)."""
        spec = job.manifest["spec"]
        backoff_limit = spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
        fatal, transient = _exit_rules(job.manifest)
        record = job.record
        attempt = first
        while True:
            code = await attempt()
            if code is None:
                return
            if code == 0:
                self._report(job, Outcome.SUCCEEDED, "Job completed (exit code 0)")
                return
            if code in fatal:
                self._report(
                    job,
                    Outcome.FATAL_EXIT,
                    f"Container exited with fatal exit code {code} (podFailurePolicy FailJob)",
                )
                return
            if code not in transient:
                record.failures += 1
                if record.failures > backoff_limit:
                    self._report(
                        job,
                        Outcome.BACKOFF_LIMIT,
                        f"Job has reached the specified backoff limit ({backoff_limit}); "
                        f"last exit code {code}",
                    )
                    return
            await asyncio.sleep(min(self._retry_base * 2**record.retries, self._retry_max))
            record.retries += 1
            attempt = functools.partial(self._run_once, job)

    async def _run_once(self, job: _LocalJob) -> int | None:
        """Run a further attempt; its exit code, or None when it could not start."""
        if job.resumed:
            await self._serving.wait()
        return await self._wait_attempt(job) if await self._start_attempt(job) else None

    async def _start_attempt(self, job: _LocalJob) -> bool:
        """Spawn the attempt off the loop; False (and the Job failed) if it cannot start."""
        container = job.manifest["spec"]["template"]["spec"]["containers"][0]
        command = self._command(container)
        try:
            job.process = await asyncio.to_thread(self._spawn, job, command, self._env(container))
        except OSError as exc:
            self._report(
                job, Outcome.FAILED_TO_START, f"Cannot start {command[0]!r}: {exc.strerror or exc}"
            )
            return False
        job.group = job.process.pid
        if job.outcome is not Outcome.RUNNING or job.message == "":
            self._report(job, Outcome.RUNNING, f"Process {job.process.pid} started")
        return True

    async def _wait_attempt(self, job: _LocalJob) -> int:
        assert job.process is not None
        code = await local_process.wait_exit(job.process)
        return 128 - code if code < 0 else code

    def _spawn(
        self, job: _LocalJob, command: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """On a worker thread: record the attempt, take its lock, start it."""
        records, run_id = self._records, job.run_id
        records.clear_attempt(run_id)
        records.save(job.record)
        lock = records.lock(run_id)
        try:
            return local_process.spawn(
                command,
                cwd=self._workdir,
                env=env,
                log_path=self._logs / f"{run_id}.log",
                pid_path=records.pid_path(run_id),
                exit_path=records.exit_path(run_id),
                keep_fd=lock,
            )
        finally:
            os.close(lock)  # the attempt holds the lock from here on


async def _ended(code: int) -> int:
    """An attempt that ended while no nexus watched it."""
    return code
