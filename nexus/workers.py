"""``nexus --workers N``: several server processes of one role on one port.

Each worker is an ordinary ``nexus --role R --reuse-port`` child with its own instance id,
``<instance-id>-<k>`` (k = 1..N), because the instance id names a scheduler's lease and
the runs it recovers: two processes under one id would each take the other's runs for
their own. The kernel spreads new connections over the workers (SO_REUSEPORT).

This parent serves nothing. It restarts a worker that dies (a crash, an OOM kill) under
the same id, so the new process finds its predecessor's pending runs at start-up, with
a backoff while it keeps dying; it forwards SIGTERM/SIGINT to every worker and waits for
them (SIGKILL after ``stop_grace``); a worker that exits with 2 (bad settings) within
its first seconds stops them all with 2, since restarting would only repeat the error.

Only the roles whose state is all in the shared store and buffer may run as several
workers: the scheduler and the receiver. The supervisor and the controller elect one
leader anyway, and ``all`` on embedded defaults runs its algorithms as local child
processes that only the worker which started them can follow.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("nexus.workers")

SCALABLE_ROLES = ("scheduler", "receiver")
CONFIG_ERROR = 2
_MAX_BACKOFF = 30.0
_HEALTHY_AFTER = 10.0  # a worker that lived this long starts its backoff over
_PR_SET_PDEATHSIG = 1


class Worker:
    """One slot: the child process serving as ``instance_id``, restarted when it dies."""

    def __init__(self, argv: Sequence[str], instance_id: str) -> None:
        self.argv = list(argv)
        self.instance_id = instance_id
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff = 1.0
        self.restart_at: float | None = None

    def start(self) -> None:
        env = {**os.environ, "NEXUS__INSTANCE_ID": self.instance_id}
        self.process = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("worker %s started (pid %d)", self.instance_id, self.process.pid)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this parent dies, even by SIGKILL, so no
    worker is left serving the port unsupervised (Linux's PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_workers(
    count: int,
    worker_argv: Sequence[str],
    base_instance_id: str,
    stop_grace: float = 25.0,  # inside the chart's terminationGracePeriodSeconds (30)
    poll: float = 0.2,
) -> int:
    """Start ``count`` workers running ``worker_argv`` and keep them running until
    SIGTERM/SIGINT; the exit status."""
    workers = [Worker(worker_argv, f"{base_instance_id}-{k}") for k in range(1, count + 1)]
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for worker in workers:
            worker.start()
        while not stopping.wait(poll):
            status = _tend(workers)
            if status:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(workers, stop_grace)
    return status


def _tend(workers: list[Worker]) -> int:
    """Restart the workers that died; CONFIG_ERROR when one can never start."""
    now = time.monotonic()
    for worker in workers:
        process = worker.process
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                worker.start()
            continue
        if process is None or (code := process.poll()) is None:
            continue
        lived = now - worker.started_at
        if code == CONFIG_ERROR and lived < _HEALTHY_AFTER:
            log.error("worker %s refused its settings (exit 2): stopping", worker.instance_id)
            return CONFIG_ERROR
        if lived >= _HEALTHY_AFTER:
            worker.backoff = 1.0
        log.warning(
            "worker %s exited with %s; restarting it in %.0fs",
            worker.instance_id,
            code,
            worker.backoff,
        )
        worker.restart_at = now + worker.backoff
        worker.backoff = min(worker.backoff * 2, _MAX_BACKOFF)
    return 0


def _stop_all(workers: list[Worker], grace: float) -> None:
    for worker in workers:
        worker.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for worker in workers:
        if worker.process is None:
            continue
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %s did not stop in %.0fs: killed", worker.instance_id, grace)
            worker.process.kill()
            worker.process.wait()


def worker_command(role: str, config: str | None, host: str | None, port: int | None) -> list[str]:
    """The command line of one worker: the same role and settings, ``--reuse-port``."""
    command = [sys.executable, "-m", "nexus.cli", "--role", role]
    if config:
        command += ["--config", config]
    if host:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    return [*command, "--reuse-port"]
