"""Scheduler role: the public run API, the virtual queue, the lease, and self-recovery."""

from __future__ import annotations

import importlib.metadata
import time

from sanic import Sanic

from nexus.api import data, runs
from nexus.core.pipeline import LaunchPipeline
from nexus.core.recovery import requeue_pending
from nexus.core.scheduling import Scheduler, SchedulerConfig
from nexus.roles.shared import Shared


def nexus_version() -> str:
    try:
        return importlib.metadata.version("nexus")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def routes(app: Sanic) -> None:
    app.blueprint(runs.bp)
    app.blueprint(data.bp)


async def start(app: Sanic, shared: Shared) -> None:
    settings = shared.settings
    store = await shared.store()
    buffer = await shared.buffer()
    pipeline = await shared.pipeline()
    app.ctx.signer = shared.signer()
    app.ctx.buffer = buffer
    app.ctx.scheduler = Scheduler(
        store, buffer, await shared.templates(), await shared.executor(), pipeline,
        app.ctx.watch,
        SchedulerConfig(
            instance_id=settings.instance_id,
            namespace=settings.runtime_namespace,
            nexus_version=nexus_version(),
            payload_valid_for=settings.s3_buffer.payload_valid_for,
            receiver_url=settings.receiver_base_url,
            job_ttl=settings.kubernetes.job_ttl_seconds_after_finished,
            max_wait=settings.max_wait,
        ),
    )
    supervisor = settings.supervisor
    host = settings.instance_id
    # Whatever this host left NEW/BUFFERED before a restart is ours to finish.
    await store.heartbeat(host, supervisor.lease_ttl)
    await requeue_pending(store, buffer, pipeline, host)
    shared.every(supervisor.heartbeat_interval,
                 lambda: store.heartbeat(host, supervisor.lease_ttl), "lease heartbeat")
    shared.every(supervisor.reconcile_interval,
                 _sweep(store, buffer, pipeline, host, supervisor.reconcile_interval),
                 "pending-run sweep")


def _sweep(store, buffer, pipeline: LaunchPipeline, host: str, interval: float):
    """The periodic sweep of this host's NEW/BUFFERED runs, skipped while it has nothing
    to find.

    It reads every such row, so with a deep queue it is O(queue) work that stalls the
    event loop (seconds at 100,000 queued runs: the p99 of every accept around it). Runs
    accepted here stay in the pipeline until they finish unless the pipeline reports one
    left behind (``pipeline.left_behind``), so sweeps run only after such a report, for
    two intervals: long enough for ``min_age`` to let the run through.
    """
    seen = {"mark": pipeline.left_behind, "at": time.monotonic()}

    async def sweep() -> None:
        if pipeline.left_behind != seen["mark"]:
            seen["mark"], seen["at"] = pipeline.left_behind, time.monotonic()
        elif time.monotonic() - seen["at"] > 2 * interval:
            return
        await requeue_pending(store, buffer, pipeline, host, min_age=interval)

    return sweep
