"""Backends shared by the roles of one process, opened once and closed in reverse order.

With ``--role all`` the scheduler, receiver and supervisor use the same store, buffer,
executor and launch pipeline; each role asks for what it needs and gets the one instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sanic import Sanic

from nexus.backends import factory
from nexus.core.buffering import JobRenderer, RenderConfig
from nexus.core.pipeline import LaunchPipeline, LimitConfig
from nexus.core.tenancy import Tenancy
from nexus.version import nexus_version


class Shared:
    def __init__(self, app: Sanic) -> None:
        self.app = app
        self.settings = app.ctx.settings
        self._opened: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._cache: dict[str, Any] = {}

    async def _get(self, name: str, build: Callable[[], Any], ready: bool = True) -> Any:
        if name not in self._cache:
            component = build()
            await component.open()
            self._opened.append(component)
            self._cache[name] = component
            if ready and hasattr(component, "ping"):
                self.app.ctx.readiness.append(component.ping)
        return self._cache[name]

    async def store(self):
        return await self._get("store", lambda: factory.make_store(self.settings))

    def signer(self):
        if "signer" not in self._cache:
            self._cache["signer"] = factory.make_signer(self.settings)
        return self._cache["signer"]

    async def buffer(self):
        return await self._get("buffer", lambda: factory.make_buffer(self.settings, self.signer()))

    async def templates(self):
        return await self._get("templates", lambda: factory.make_templates(self.settings))

    async def executor(self):
        return await self._get(
            "executor", lambda: factory.make_executor(self.settings, self.app.ctx.metrics)
        )

    async def renderer(self) -> JobRenderer:
        """Renders Jobs for the pipeline's BUFFERED step (and the buffer endpoint)."""
        if "renderer" not in self._cache:
            settings = self.settings
            self._cache["renderer"] = JobRenderer(
                await self.store(),
                await self.buffer(),
                await self.templates(),
                RenderConfig(
                    namespace=settings.runtime_namespace,
                    nexus_version=nexus_version(),
                    receiver_url=settings.receiver_base_url,
                    job_ttl=settings.kubernetes.job_ttl_seconds_after_finished,
                    payload_valid_for=settings.s3_buffer.payload_valid_for,
                ),
            )
        return self._cache["renderer"]

    async def pipeline(self) -> LaunchPipeline:
        if "pipeline" not in self._cache:
            metrics = self.app.ctx.metrics
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
                on_change=self.app.ctx.watch.notify,
                on_dequeued=lambda taken: metrics.queue_wait.observe(taken.waited, taken.tenant),
                tenant_of=Tenancy(await self.templates()).of_run,
            )
            self._cache["pipeline"] = pipeline
            metrics.gauge("nexus_queue_depth", "Runs waiting in the virtual queue", pipeline.depth)
            metrics.labelled_gauge(
                "nexus_queue_tenant_depth",
                "Runs waiting in the virtual queue (over all shards), by tenant",
                "tenant",
                pipeline.tenant_depths,
            )
        return self._cache["pipeline"]

    def serving(self) -> None:
        """The server listens: launching may begin. Not earlier, because a launched
        algorithm's first act is to fetch its payload, on embedded defaults from this very
        process, and runs re-queued at start-up would otherwise be launched into a closed
        port."""
        pipeline = self._cache.get("pipeline")
        if pipeline is not None:
            pipeline.start()
        start = getattr(self._cache.get("executor"), "start", None)  # the local executor's
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
                    self.app.ctx.log.exception("%s failed; retrying in %ss", name, seconds)
                await asyncio.sleep(seconds)

        self.spawn(loop(), name)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coroutine, name=name))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        pipeline = self._cache.get("pipeline")
        if pipeline is not None:
            await pipeline.stop()
        for component in reversed(self._opened):
            await component.close()
