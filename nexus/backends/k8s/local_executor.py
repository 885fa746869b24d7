"""Local executor: runs each Job's container command as a child process (embedded mode).

It reads the very manifest that would be sent to Kubernetes and honours what the Job
controller would: ``activeDeadlineSeconds`` (the process is killed and the run is
DEADLINE_EXCEEDED), ``backoffLimit`` (failed attempts retried with a growing delay, then
BACKOFF_LIMIT), and ``podFailurePolicy`` (a fatal exit code ends the Job at once, a
transient one is retried without counting). ``python``/``python3`` as the command means
the interpreter nexus runs on, so examples work inside a virtualenv. Each process gets
the Job's env (and not nexus's own ``NEXUS__`` settings); its output goes to
``<logs>/<run id>.log``. It stands in for every shard name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from nexus.core.ports import ClusterSnapshot, JobObservation, Outcome
from nexus.errors import LaunchError

log = logging.getLogger("nexus.executor")

DEFAULT_BACKOFF_LIMIT = 6  # the Kubernetes default


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


def _keep_fds_from_children() -> None:
    """Mark every descriptor of this process close-on-exec before spawning.

    uvloop (Sanic's loop) ignores ``close_fds``, and Sanic makes its listening socket
    inheritable: an algorithm would inherit it, and one outliving a killed nexus would hold
    the port so nexus could not start again on it.
    """
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            try:
                fd = int(name)
                if fd > 2 and os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except (ValueError, OSError):
                continue
        return


class _LocalJob:
    def __init__(self, run_id: str, cluster: str, manifest: dict[str, Any]) -> None:
        self.run_id = run_id
        self.cluster = cluster
        self.manifest = manifest
        labels = manifest["metadata"].get("labels", {})
        self.algorithm = labels.get("science.sneaksanddata.com/algorithm-template-name", "")
        self.outcome = Outcome.RUNNING
        self.message = ""
        self.since = datetime.now(timezone.utc)
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.finished_at: float | None = None

    def observation(self) -> JobObservation:
        # The local "Job uid" is the run id (what launch() returns), so the supervisor can
        # record it when it is first to see the process.
        return JobObservation(algorithm=self.algorithm, run_id=self.run_id, cluster=self.cluster,
                              outcome=self.outcome, since=self.since, message=self.message,
                              job_uid=self.run_id)


class LocalExecutor:
    """JobLauncher and ClusterWatcher for processes on this machine."""

    def __init__(self, workdir: str | Path, logs: str | Path, *, retry_base: float = 0.5,
                 retry_max: float = 10.0) -> None:
        self._workdir = Path(workdir)
        self._logs = Path(logs)
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._jobs: dict[str, _LocalJob] = {}
        self._events: asyncio.Queue[JobObservation] = asyncio.Queue()

    def shards(self) -> _AnyShard:
        return _AnyShard()

    async def open(self) -> None:
        self._logs.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            await self._stop(job)

    # --- JobLauncher -------------------------------------------------------------------

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        run_id = manifest["metadata"]["name"]
        if run_id in self._jobs:
            return run_id
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        if not container.get("command"):
            raise LaunchError("the template's command is empty", retryable=False)
        job = _LocalJob(run_id, cluster, manifest)
        self._jobs[run_id] = job
        job.task = asyncio.create_task(self._supervise(job), name=f"local-job-{run_id}")
        return run_id

    async def cancel(self, cluster: str, run_id: str, policy: str) -> bool:
        job = self._jobs.pop(run_id, None)
        if job is None:
            return False
        if policy != "Orphan":
            await self._stop(job)
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

    # --- the process ---------------------------------------------------------------------

    def _expire_finished(self) -> None:
        now = time.monotonic()
        for run_id, job in list(self._jobs.items()):
            ttl = job.manifest["spec"].get("ttlSecondsAfterFinished")
            if job.finished_at is not None and ttl is not None and now - job.finished_at > ttl:
                del self._jobs[run_id]

    def _report(self, job: _LocalJob, outcome: Outcome, message: str) -> None:
        job.outcome, job.message = outcome, message
        job.since = datetime.now(timezone.utc)
        if outcome is not Outcome.RUNNING:
            job.finished_at = time.monotonic()
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

    async def _stop(self, job: _LocalJob) -> None:
        process = job.process
        if process is not None and process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if job.task is not None and job.task is not asyncio.current_task():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)

    async def _supervise(self, job: _LocalJob) -> None:
        spec = job.manifest["spec"]
        deadline = spec.get("activeDeadlineSeconds")
        started = time.monotonic()
        try:
            if deadline is not None:
                await asyncio.wait_for(self._attempts(job), timeout=deadline)
            else:
                await self._attempts(job)
        except TimeoutError:
            if job.process is not None and job.process.returncode is None:
                os.killpg(job.process.pid, signal.SIGKILL)
                await job.process.wait()
            self._report(job, Outcome.DEADLINE_EXCEEDED,
                         f"Job was active longer than specified deadline ({deadline}s, ran "
                         f"{time.monotonic() - started:.1f}s)")

    async def _attempts(self, job: _LocalJob) -> None:
        spec = job.manifest["spec"]
        container = spec["template"]["spec"]["containers"][0]
        backoff_limit = spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
        fatal, transient = _exit_rules(job.manifest)
        failures = 0
        retries = 0
        while True:
            code = await self._run_once(job, container)
            if code is None:
                return
            if code == 0:
                self._report(job, Outcome.SUCCEEDED, "Job completed (exit code 0)")
                return
            if code in fatal:
                self._report(job, Outcome.FATAL_EXIT,
                             f"Container exited with fatal exit code {code} (podFailurePolicy FailJob)")
                return
            if code not in transient:
                failures += 1
                if failures > backoff_limit:
                    self._report(job, Outcome.BACKOFF_LIMIT,
                                 f"Job has reached the specified backoff limit ({backoff_limit}); "
                                 f"last exit code {code}")
                    return
            await asyncio.sleep(min(self._retry_base * 2 ** retries, self._retry_max))
            retries += 1

    async def _run_once(self, job: _LocalJob, container: dict[str, Any]) -> int | None:
        """Run the process once; its exit code, or None when it could not start."""
        command = self._command(container)
        log_path = self._logs / f"{job.run_id}.log"
        _keep_fds_from_children()
        try:
            with open(log_path, "ab") as output:
                job.process = await asyncio.create_subprocess_exec(
                    *command, cwd=self._workdir, env=self._env(container),
                    stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                    start_new_session=True)
        except OSError as exc:
            self._report(job, Outcome.FAILED_TO_START,
                         f"Cannot start {command[0]!r}: {exc.strerror or exc}")
            return None
        if job.outcome is not Outcome.RUNNING or job.message == "":
            self._report(job, Outcome.RUNNING, f"Process {job.process.pid} started")
        code = await job.process.wait()
        return 128 - code if code < 0 else code
