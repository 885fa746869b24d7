"""Controller role: keeps every shard supplied with the templates, workgroups, Secrets
and ConfigMaps of the controller cluster (docs/controller.md). Wiring only.

What triggers a sync of a template or workgroup: any change to it or to a Secret or
ConfigMap it reads (the controller cluster's watches), any change to our copy in a
shard (the shards' watches: drift), a shard listed afresh (a start, or a shard back
after an outage), and every ``controller.resync-interval``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nexus.backends.k8s.client import ApiMetrics, ShardClient
from nexus.backends.k8s.config_sync import KubeConfigSource, KubeShardObjects
from nexus.backends.k8s.lease import KubeLease
from nexus.backends.k8s.shards import discover_shards, home_client
from nexus.context import NexusApp
from nexus.core import config_sync as cs
from nexus.core.controller import ConfigController, ControllerConfig
from nexus.core.leadership import Leadership
from nexus.core.workqueue import Key, QueueLimits, WorkQueue
from nexus.roles.shared import Shared

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def routes(app: NexusApp) -> None:
    """The controller serves only health and metrics."""


class _Triggers:
    """Turns what the watches see into keys for the work queue."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue
        self.source: KubeConfigSource | None = None

    def source_changed(self, kind: str, name: str) -> None:
        if kind in (cs.TEMPLATE, cs.WORKGROUP):
            self.queue.add((kind, name))
            return
        if self.source is None:
            return
        for template in self.source.names(cs.TEMPLATE):
            obj = self.source.get(cs.TEMPLATE, template) or {}
            secrets, config_maps = cs.references(obj.get("spec") or {})
            if name in (secrets if kind == cs.SECRET else config_maps):
                self.queue.add((cs.TEMPLATE, template))

    def shard_changed(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if kind in (cs.TEMPLATE, cs.WORKGROUP):
            self.queue.add((kind, meta.get("name", "")))
            return
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == cs.TEMPLATE:
                self.queue.add((cs.TEMPLATE, ref.get("name", "")))

    def resync(self) -> None:
        if self.source is not None:
            for kind in (cs.TEMPLATE, cs.WORKGROUP):
                for name in self.source.names(kind):
                    self.queue.add((kind, name))


async def start(app: NexusApp, shared: Shared) -> None:
    settings = shared.settings
    config = settings.controller
    namespace = config.namespace or settings.runtime_namespace
    metrics = app.ctx.metrics
    reconcile_seconds = metrics.histogram(
        "nexus_controller_reconcile_seconds",
        "Seconds one sync of a template or workgroup took, by kind and result",
        ("kind", "result"),
        RECONCILE_BUCKETS,
    )
    shard_errors = metrics.counter(
        "nexus_controller_shard_errors_total",
        "Syncs that could not bring a shard in step (no answer, refused writes), by shard",
        ("shard",),
    )

    def done(key: Key, seconds: float, ok: bool) -> None:
        reconcile_seconds.observe(seconds, key[0], "ok" if ok else "error")

    controller: ConfigController | None = None

    async def handle(key: Key) -> None:
        assert controller is not None  # set before the queue starts
        await controller.reconcile(*key)

    queue = WorkQueue(
        handle,
        QueueLimits(
            rate=config.rate_limit_elements_per_second,
            burst=config.rate_limit_elements_burst,
            base_delay=config.failure_rate_base_delay,
            max_delay=config.failure_rate_max_delay,
            workers=config.workers,
        ),
        on_done=done,
    )
    metrics.gauge(
        "nexus_controller_queue_depth", "Templates and workgroups waiting for a sync", queue.depth
    )
    triggers = _Triggers(queue)
    api_metrics = ApiMetrics(metrics)
    limits = settings.kubernetes

    def clients() -> tuple[ShardClient, list[ShardClient]]:
        # Blocking: reading kubeconfigs may run exec credential plugins.
        home = home_client(
            settings,
            "controller",
            namespace,
            "--role controller watches",
            metrics=api_metrics,
            request_timeout=config.request_timeout,
        )
        shards = [
            ShardClient(
                shard,
                qps=limits.client_qps,
                burst=limits.client_burst,
                metrics=api_metrics,
                request_timeout=config.request_timeout,
            )
            for shard in discover_shards(settings)
        ]
        return home, shards

    home, shard_clients = await asyncio.to_thread(clients)
    source = KubeConfigSource(home, namespace, triggers.source_changed)
    triggers.source = source
    shards = [
        KubeShardObjects(client, namespace, config.alias, triggers.shard_changed, triggers.resync)
        for client in shard_clients
    ]
    controller = ConfigController(
        source,
        shards,
        ControllerConfig(alias=config.alias, namespace=namespace),
        on_shard_error=lambda shard: shard_errors.inc(shard),
    )
    await shared.adopt(source)
    for shard in shards:
        await shared.adopt(shard)

    async def lead() -> None:
        queue.start()
        triggers.resync()

    leadership = Leadership(
        KubeLease(
            home,
            namespace,
            f"{config.alias}-configuration-controller",
            settings.instance_id,
            config.lease_duration,
        ),
        config.lease_duration,
        on_lead=lead,
        on_follow=queue.stop,
    )
    metrics.gauge(
        "nexus_controller_leader",
        "1 while this replica holds the leader Lease and syncs, 0 on standby",
        lambda: float(leadership.leading),
    )
    shared.spawn(leadership.run_forever(), "controller leader election")

    async def resync() -> None:
        triggers.resync()

    shared.every(config.resync_interval, resync, "controller resync")
