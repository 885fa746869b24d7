"""Scheduler role: the public run API, the virtual queue, the lease, and self-recovery."""

from __future__ import annotations

from nexus.api import data, listing, overview, runs, ui
from nexus.context import NexusApp
from nexus.core.catalog import RunCatalog
from nexus.core.recovery import PendingSweep, requeue_pending
from nexus.core.scheduling import Scheduler, SchedulerConfig
from nexus.roles.shared import Shared


def routes(app: NexusApp) -> None:
    app.blueprint(runs.bp)
    app.blueprint(overview.bp)
    app.blueprint(listing.bp)
    app.blueprint(data.bp)
    app.blueprint(ui.bp)


async def start(app: NexusApp, shared: Shared) -> None:
    settings = shared.settings
    store = await shared.store()
    buffer = await shared.buffer()
    pipeline = await shared.pipeline()
    notifier = await shared.notifier()
    app.ctx.access = await shared.access()
    app.ctx.signer = shared.signer()
    app.ctx.buffer = buffer
    app.ctx.catalog = RunCatalog(store)
    app.ctx.scheduler = Scheduler(
        store,
        buffer,
        await shared.templates(),
        await shared.executor(),
        pipeline,
        app.ctx.watch,
        await shared.renderer(),
        SchedulerConfig(
            instance_id=settings.instance_id,
            payload_valid_for=settings.s3_buffer.payload_valid_for,
            max_wait=settings.max_wait,
            tenant_by_caller=settings.s3_buffer.buffer_config.tenants.tenant_by == "caller",
        ),
        notifier=notifier,
    )
    supervisor = settings.supervisor
    host = settings.instance_id
    # Whatever this host left NEW/BUFFERED before a restart is ours to finish.
    await store.heartbeat(host, supervisor.lease_ttl)
    await requeue_pending(store, buffer, pipeline, host)
    shared.every(
        supervisor.heartbeat_interval,
        lambda: store.heartbeat(host, supervisor.lease_ttl),
        "lease heartbeat",
    )
    shared.every(
        supervisor.reconcile_interval,
        PendingSweep(store, buffer, pipeline, host, supervisor.reconcile_interval),
        "pending-run sweep",
    )
    shared.every(settings.webhooks.sweep_interval, notifier.sweep, "webhook sweep")
