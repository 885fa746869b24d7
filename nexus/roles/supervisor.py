"""Supervisor role: follows Jobs to their end and finishes what dead schedulers left."""

from __future__ import annotations

from nexus.context import NexusApp
from nexus.core.scope import ShardScope
from nexus.core.supervision import Supervision, SupervisionConfig
from nexus.roles.shared import Shared


def routes(app: NexusApp) -> None:
    """The supervisor serves only health and metrics."""


async def start(app: NexusApp, shared: Shared) -> None:
    settings = shared.settings.supervisor
    executor = await shared.executor()
    scope = ShardScope(settings.shards)
    scope.check(executor.shards())  # before anything is watched or judged
    app.ctx.log.info("supervising the runs of %s", scope.describe())
    supervision = Supervision(
        await shared.store(),
        await shared.buffer(),
        executor,
        await shared.pipeline(),
        SupervisionConfig(
            success_grace=settings.job_success_grace,
            backoff_grace=settings.backoff_grace,
            host=shared.settings.instance_id,
            reconcile_interval=settings.reconcile_interval,
            lease_ttl=settings.lease_ttl,
            disruption_limit=settings.disruption_limit,
            scope=scope,
        ),
        on_change=app.ctx.watch.notify,
    )
    app.ctx.supervision = supervision
    shared.spawn(supervision.watch_forever(), "supervisor watch")
    shared.spawn(supervision.reconcile_forever(), "supervisor reconcile")
