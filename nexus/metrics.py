"""A small Prometheus text-format registry: counters, gauges and histograms with labels.

Kept in-house because the needs are tiny (a few families, text exposition only) and it
avoids a global registry shared between test apps.

The use cases in ``nexus.core`` know nothing of metrics: :class:`MeteredLauncher` and
:class:`MeteredStore` wrap the ports they use (see ``nexus.app``) and count what passes
through — Job launches and failures by shard, and how long runs took by final stage.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timezone
from typing import Any, Callable

from nexus.errors import LaunchError

# Seconds from acceptance to the final stage: algorithm runs last seconds to hours.
RUN_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                        7200.0, 21600.0, 86400.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Family:
    def __init__(self, name: str, help_text: str, kind: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.kind, self.labels = name, help_text, kind, labels
        self.values: dict[tuple[str, ...], float] = {}
        self.callback: Callable[[], float] | None = None

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def set(self, value: float, *label_values: str) -> None:
        self.values[label_values] = value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        if self.callback is not None:
            self.values[()] = float(self.callback())
        for label_values, value in sorted(self.values.items()):
            if label_values:
                pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.labels, label_values))
                lines.append(f"{self.name}{{{pairs}}} {value:g}")
            else:
                lines.append(f"{self.name} {value:g}")
        return lines


class _Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        # label values -> (count per bucket, not cumulative; sum; count)
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *label_values: str) -> None:
        counts, totals = self.series.setdefault(label_values, ([0] * (len(self.buckets) + 1),
                                                               [0.0, 0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        totals[0] += value
        totals[1] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for label_values, (counts, (total, count)) in sorted(self.series.items()):
            pairs = [f'{k}="{_escape(v)}"' for k, v in zip(self.labels, label_values)]
            cumulative = 0
            for bound, bucket_count in zip((*self.buckets, float("inf")), counts):
                cumulative += bucket_count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = ",".join([*pairs, f'le="{le}"'])
                lines.append(f"{self.name}_bucket{{{labels}}} {cumulative}")
            suffix = "{" + ",".join(pairs) + "}" if pairs else ""
            lines.append(f"{self.name}_sum{suffix} {total:g}")
            lines.append(f"{self.name}_count{suffix} {count:g}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self.requests = self.counter("nexus_http_requests_total", "HTTP requests by route and status",
                                     ("route", "method", "code"))
        self.accepted = self.counter("nexus_runs_accepted_total", "Runs durably accepted",
                                     ("algorithm",))
        self.finished = self.counter("nexus_runs_finished_total",
                                     "Runs that reached a terminal stage here", ("stage",))
        self.launches = self.counter("nexus_job_launches_total",
                                     "Jobs created, by shard (rate() gives the launch rate)",
                                     ("shard",))
        self.launch_failures = self.counter("nexus_job_launch_failures_total",
                                            "Failed Job creation attempts, by shard", ("shard",))
        self.run_duration = self.histogram(
            "nexus_run_duration_seconds",
            "Seconds from acceptance to the final stage, for runs finished here",
            ("stage",), RUN_DURATION_BUCKETS)

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> _Family:
        return self._families.setdefault(name, _Family(name, help_text, "counter", labels))

    def gauge(self, name: str, help_text: str, callback: Callable[[], float]) -> _Family:
        family = self._families.setdefault(name, _Family(name, help_text, "gauge", ()))
        family.callback = callback
        return family

    def histogram(self, name: str, help_text: str, labels: tuple[str, ...],
                  buckets: tuple[float, ...]) -> _Histogram:
        return self._families.setdefault(name, _Histogram(name, help_text, labels, buckets))

    def run_finished(self, stage: str, received_at: datetime | None) -> None:
        self.finished.inc(stage)
        if received_at is not None:
            if received_at.tzinfo is None:
                received_at = received_at.replace(tzinfo=timezone.utc)
            elapsed = (datetime.now(timezone.utc) - received_at).total_seconds()
            self.run_duration.observe(max(elapsed, 0.0), stage)

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.render())
        return "\n".join(lines) + "\n"


class _Wrapper:
    """Delegates everything to the wrapped port except the methods it overrides."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class MeteredLauncher(_Wrapper):
    """An Executor (JobLauncher) that counts Job launches and failures by shard."""

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        try:
            uid = await self._inner.launch(cluster, manifest)
        except LaunchError:
            self._metrics.launch_failures.inc(cluster)
            raise
        self._metrics.launches.inc(cluster)
        return uid


class MeteredStore(_Wrapper):
    """A RunStore that records each run this process moves to a terminal stage."""

    async def transition(self, algorithm: str, run_id: str, target: Any, **fields: Any) -> Any:
        run = await self._inner.transition(algorithm, run_id, target, **fields)
        if target.is_terminal:
            self._metrics.run_finished(target.value, run.received_at)
        return run
