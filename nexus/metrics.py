"""Prometheus metrics on ``prometheus_client``, one registry per app.

Each app has its own :class:`Metrics` (so test apps in one process never share a
series), with the process collector (CPU, memory, descriptors), a build-info series, and
the families nexus feeds. Counter values are exact: the exposition writes every float
in full (12345678 as ``1.2345678e+07``), never rounded.

The use cases in ``nexus.core`` know nothing of metrics: :class:`MeteredExecutor` and
:class:`MeteredStore` wrap the ports they use (see ``nexus.roles.shared``) and count what passes
through — Job launches and failures by shard, and how long runs took by final stage.
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from nexus.core.listing import RunPage, RunQuery, StageCount
from nexus.core.models import (
    CallbackState,
    LifecycleStage,
    ParentRef,
    Run,
    RunEvent,
    SubmissionEntry,
)
from nexus.core.ports import ClusterSnapshot, Executor, JobObservation, RunStore
from nexus.errors import LaunchError

# ``*_created`` series double every counter's lines and nothing here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
# Seconds from acceptance to the final stage: algorithm runs last seconds to hours.
RUN_DURATION_BUCKETS = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)
# Seconds to answer a request: most answers take a millisecond, long polls up to minutes.
REQUEST_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


class CounterFamily:
    """A labelled counter: ``inc(*label_values, amount=1)``."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        (self._counter.labels(*label_values) if label_values else self._counter).inc(amount)


class HistogramFamily:
    """A labelled histogram: ``observe(value, *label_values)``."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def observe(self, value: float, *label_values: str) -> None:
        (self._histogram.labels(*label_values) if label_values else self._histogram).observe(value)


class Metrics:
    def __init__(self, version: str = "0.0.0") -> None:
        self.registry = CollectorRegistry()
        prometheus_client.ProcessCollector(registry=self.registry)
        build = Gauge(
            "nexus_build_info",
            "The running nexus: version and Python (always 1)",
            ("version", "python"),
            registry=self.registry,
        )
        build.labels(version, platform.python_version()).set(1)
        self._counters: dict[str, CounterFamily] = {}
        self.requests = self.counter(
            "nexus_http_requests_total",
            "HTTP requests by route template, method and status",
            ("route", "method", "code"),
        )
        self.request_seconds = self.histogram(
            "nexus_http_request_duration_seconds",
            "Seconds to answer a request, by route template and method",
            ("route", "method"),
            REQUEST_BUCKETS,
        )
        self.accepted = self.counter(
            "nexus_runs_accepted_total", "Runs durably accepted", ("algorithm",)
        )
        self.finished = self.counter(
            "nexus_runs_finished_total", "Runs that reached a terminal stage here", ("stage",)
        )
        self.launches = self.counter(
            "nexus_job_launches_total",
            "Jobs created, by shard (rate() gives the launch rate)",
            ("shard",),
        )
        self.launch_failures = self.counter(
            "nexus_job_launch_failures_total", "Failed Job creation attempts, by shard", ("shard",)
        )
        self.queue_wait = self.histogram(
            "nexus_queue_wait_seconds",
            "Seconds a run waited in the virtual queue until a worker took it (from its "
            "push, or the end of its retry's backoff), by tenant",
            ("tenant",),
            REQUEST_BUCKETS,
        )
        self.run_duration = self.histogram(
            "nexus_run_duration_seconds",
            "Seconds from acceptance to the final stage, for runs finished here",
            ("stage",),
            RUN_DURATION_BUCKETS,
        )

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> CounterFamily:
        """The counter ``name`` (made on first use: several backends may ask for it)."""
        if name not in self._counters:
            self._counters[name] = CounterFamily(
                Counter(name, help_text, labels, registry=self.registry)
            )
        return self._counters[name]

    def gauge(self, name: str, help_text: str, callback: Callable[[], float]) -> None:
        """A gauge read from ``callback`` at every scrape."""
        Gauge(name, help_text, registry=self.registry).set_function(callback)

    def labelled_gauge(
        self, name: str, help_text: str, label: str, callback: Callable[[], dict[str, int]]
    ) -> None:
        """A gauge with one series per key of ``callback()``, read at every scrape (a
        key that is gone has no series)."""
        self.registry.register(_MappingCollector(name, help_text, label, callback))

    def histogram(
        self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> HistogramFamily:
        return HistogramFamily(
            Histogram(name, help_text, labels, buckets=buckets, registry=self.registry)
        )

    def run_finished(self, stage: str, received_at: datetime | None) -> None:
        self.finished.inc(stage)
        if received_at is not None:
            if received_at.tzinfo is None:
                received_at = received_at.replace(tzinfo=UTC)
            elapsed = (datetime.now(UTC) - received_at).total_seconds()
            self.run_duration.observe(max(elapsed, 0.0), stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _MappingCollector(Collector):
    def __init__(
        self, name: str, help_text: str, label: str, callback: Callable[[], dict[str, int]]
    ) -> None:
        self._name, self._help, self._label, self._callback = name, help_text, label, callback

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._help, labels=(self._label,))
        for key, value in sorted(self._callback().items()):
            family.add_metric((key,), value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._help, labels=(self._label,))]


class MeteredExecutor:
    """An Executor that counts Job launches and failures by shard; the rest is passed on."""

    def __init__(self, inner: Executor, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def shards(self) -> Collection[str]:
        return self._inner.shards()

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        try:
            uid = await self._inner.launch(cluster, manifest)
        except LaunchError:
            self._metrics.launch_failures.inc(cluster)
            raise
        self._metrics.launches.inc(cluster)
        return uid

    async def cancel(self, cluster: str, run_id: str, policy: str) -> bool:
        return await self._inner.cancel(cluster, run_id, policy)

    async def logs(self, cluster: str, run_id: str, tail_lines: int) -> str:
        return await self._inner.logs(cluster, run_id, tail_lines)

    def observations(self) -> AsyncIterator[JobObservation]:
        return self._inner.observations()

    async def snapshot(self) -> ClusterSnapshot:
        return await self._inner.snapshot()

    async def delete_job(self, cluster: str, run_id: str) -> None:
        await self._inner.delete_job(cluster, run_id)


class MeteredStore:
    """A RunStore that records each run this process moves to a terminal stage; the
    rest is passed on."""

    def __init__(self, inner: RunStore, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def transition(
        self,
        algorithm: str,
        run_id: str,
        target: LifecycleStage,
        *,
        known: Run | None = None,
        **fields: Any,
    ) -> Run:
        run = await self._inner.transition(algorithm, run_id, target, known=known, **fields)
        if target.is_terminal:
            self._metrics.run_finished(target.value, run.received_at)
        return run

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def ping(self) -> None:
        await self._inner.ping()

    async def create(
        self, run: Run, submission: SubmissionEntry | None, idempotency_key: str | None = None
    ) -> str:
        return await self._inner.create(run, submission, idempotency_key)

    async def buffer(
        self,
        submission: SubmissionEntry,
        from_stage: LifecycleStage = LifecycleStage.NEW,
        *,
        known: Run | None = None,
    ) -> Run:
        return await self._inner.buffer(submission, from_stage, known=known)

    async def find_idempotent(self, algorithm: str, key: str) -> str | None:
        return await self._inner.find_idempotent(algorithm, key)

    async def get(self, algorithm: str, run_id: str) -> Run | None:
        return await self._inner.get(algorithm, run_id)

    async def get_submission(self, algorithm: str, run_id: str) -> SubmissionEntry | None:
        return await self._inner.get_submission(algorithm, run_id)

    async def update_tag(self, algorithm: str, run_id: str, tag: str) -> Run:
        return await self._inner.update_tag(algorithm, run_id, tag)

    async def by_tag(self, tag: str) -> list[Run]:
        return await self._inner.by_tag(tag)

    async def by_host_stage(self, host: str, stage: LifecycleStage) -> list[Run]:
        return await self._inner.by_host_stage(host, stage)

    async def children(self, parent: ParentRef) -> list[Run]:
        return await self._inner.children(parent)

    async def list_runs(self, query: RunQuery) -> RunPage:
        return await self._inner.list_runs(query)

    async def count_runs(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        return await self._inner.count_runs(since, until, algorithm)

    async def history(self, algorithm: str, run_id: str) -> list[RunEvent] | None:
        return await self._inner.history(algorithm, run_id)

    async def pending_callbacks(self, limit: int) -> list[Run]:
        return await self._inner.pending_callbacks(limit)

    async def update_callback(
        self,
        algorithm: str,
        run_id: str,
        expected: CallbackState | None,
        state: CallbackState,
        *,
        done: bool = False,
    ) -> Run | None:
        return await self._inner.update_callback(algorithm, run_id, expected, state, done=done)

    async def heartbeat(self, host: str, ttl: float) -> None:
        await self._inner.heartbeat(host, ttl)

    async def expired_hosts(self) -> list[str]:
        return await self._inner.expired_hosts()

    async def drop_lease(self, host: str) -> None:
        await self._inner.drop_lease(host)
