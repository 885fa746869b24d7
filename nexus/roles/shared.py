"""Backends shared by the roles of one process, opened once and closed in reverse order.

With ``--role all`` the scheduler, receiver and supervisor use the same store, buffer,
executor and launch pipeline; each role asks for what it needs and gets the one instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from nexus.backends import factory
from nexus.context import NexusContext
from nexus.core.access import AccessPolicy
from nexus.core.buffering import JobRenderer, RenderConfig
from nexus.core.callbacks import Notifier
from nexus.core.pipeline import LaunchPipeline, LimitConfig
from nexus.core.ports import Executor, PayloadBuffer, RunStore, TemplateSource
from nexus.core.signing import UrlSigner
from nexus.core.tenancy import Tenancy
from nexus.metrics import MeteredExecutor, MeteredStore
from nexus.version import nexus_version


class Component(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


C = TypeVar("C", bound=Component)


class Shared:
    """One of each backend for the roles of a process, opened on first use.

    The store and the executor come wrapped to feed the metrics (launches and failures
    by shard, run durations by final stage), so core stays unaware of them.
    """

    def __init__(self, ctx: NexusContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._opened: list[Component] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._store: MeteredStore | None = None
        self._signer: UrlSigner | None = None
        self._buffer: PayloadBuffer | None = None
        self._templates: TemplateSource | None = None
        self._executor: Executor | None = None  # as made, for its start() (local processes)
        self._metered_executor: MeteredExecutor | None = None
        self._renderer: JobRenderer | None = None
        self._pipeline: LaunchPipeline | None = None
        self._access: AccessPolicy | None = None
        self._notifier: Notifier | None = None

    async def _open(self, component: C) -> C:
        await component.open()
        self._opened.append(component)
        ping = getattr(component, "ping", None)
        if ping is not None:
            self.ctx.readiness.append(ping)
        return component

    async def adopt(self, component: C) -> C:
        """Open a component a role made itself: closed with the others, in reverse
        order, and its ``ping`` (if any) one of the readiness checks."""
        return await self._open(component)

    async def store(self) -> RunStore:
        if self._store is None:
            raw = await self._open(factory.make_store(self.settings))
            self._store = MeteredStore(raw, self.ctx.metrics)
        return self._store

    def signer(self) -> UrlSigner:
        if self._signer is None:
            self._signer = factory.make_signer(self.settings)
        return self._signer

    async def buffer(self) -> PayloadBuffer:
        if self._buffer is None:
            self._buffer = await self._open(factory.make_buffer(self.settings, self.signer()))
        return self._buffer

    async def templates(self) -> TemplateSource:
        if self._templates is None:
            self._templates = await self._open(factory.make_templates(self.settings))
        return self._templates

    async def executor(self) -> Executor:
        if self._metered_executor is None:
            raw = factory.make_executor(self.settings, self.ctx.metrics)
            self._executor = await self._open(raw)
            self._metered_executor = MeteredExecutor(raw, self.ctx.metrics)
        return self._metered_executor

    async def access(self) -> AccessPolicy:
        """Who may call the run API (``auth.mode``)."""
        if self._access is None:
            policy, checks = factory.make_access(self.settings, await self.templates())
            if checks is not None:
                await self._open(checks)
            if self.settings.auth.mode == "oidc" and not self.settings.auth.rules:
                self.ctx.log.warning(
                    "auth.mode oidc without auth.rules: only the templates' run-groups "
                    "and read-groups annotations grant access"
                )
            self._access = policy
        return self._access

    async def notifier(self) -> Notifier:
        """Completion webhooks: checks callback URLs at accept, delivers when runs end."""
        if self._notifier is None:
            notifier, sender = factory.make_notifier(self.settings, await self.store())
            await self._open(sender)
            self._notifier = notifier
        return self._notifier

    async def renderer(self) -> JobRenderer:
        """Renders Jobs for the pipeline's BUFFERED step (and the buffer endpoint)."""
        if self._renderer is None:
            settings = self.settings
            self._renderer = JobRenderer(
                await self.store(),
                await self.buffer(),
                await self.templates(),
                RenderConfig(
                    namespace=settings.runtime_namespace,
                    nexus_version=nexus_version(),
                    receiver_url=settings.receiver_base_url,
                    job_ttl=settings.kubernetes.job_ttl_seconds_after_finished,
                    payload_valid_for=settings.s3_buffer.payload_valid_for,
                    tokens=factory.make_run_tokens(settings),
                    token_lifetime=settings.auth.receiver_token_lifetime,
                ),
            )
        return self._renderer

    async def pipeline(self) -> LaunchPipeline:
        if self._pipeline is None:
            metrics = self.ctx.metrics
            limits = self.settings.s3_buffer.buffer_config
            pipeline = LaunchPipeline(
                await self.store(),
                await self.executor(),
                LimitConfig(
                    rate=limits.rate_limit_elements_per_second,
                    burst=limits.rate_limit_elements_burst,
                    base_delay=limits.failure_rate_base_delay,
                    max_delay=limits.failure_rate_max_delay,
                    max_attempts=limits.max_attempts,
                    workers=limits.workers,
                    capacity=limits.queue_capacity,
                    tenant_limit=limits.tenants.queued_run_limit or None,
                    tenant_limits=limits.tenants.limits,
                    tenant_weights=limits.tenants.weights,
                ),
                render=(await self.renderer()).render,
                on_change=self.ctx.watch.notify,
                on_dequeued=lambda taken: metrics.queue_wait.observe(taken.waited, taken.tenant),
                tenant_of=Tenancy(
                    await self.templates(), by_caller=limits.tenants.tenant_by == "caller"
                ).of_run,
            )
            self._pipeline = pipeline
            metrics.gauge("nexus_queue_depth", "Runs waiting in the virtual queue", pipeline.depth)
            metrics.labelled_gauge(
                "nexus_queue_tenant_depth",
                "Runs waiting in the virtual queue (over all shards), by tenant",
                "tenant",
                pipeline.tenant_depths,
            )
        return self._pipeline

    def serving(self) -> None:
        """The server listens: launching may begin. Not earlier, because a launched
        algorithm's first act is to fetch its payload, on embedded defaults from this very
        process, and runs re-queued at start-up would otherwise be launched into a closed
        port."""
        if self._pipeline is not None:
            self._pipeline.start()
        start = getattr(self._executor, "start", None)  # the local executor's
        if start is not None:
            start()

    def every(self, seconds: float, action: Callable[[], Awaitable[Any]], name: str) -> None:
        """Run ``action`` now and then every ``seconds``; a failure is logged, not fatal."""

        async def loop() -> None:
            while True:
                try:
                    await action()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.ctx.log.exception("%s failed; retrying in %ss", name, seconds)
                await asyncio.sleep(seconds)

        self.spawn(loop(), name)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coroutine, name=name))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._pipeline is not None:
            await self._pipeline.stop()
        for component in reversed(self._opened):
            await component.close()
