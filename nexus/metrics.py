"""A small Prometheus text-format registry: counters and gauges with labels.

Kept in-house because the needs are tiny (a few families, text exposition only) and it
avoids a global registry shared between test apps.
"""

from __future__ import annotations

from typing import Callable


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


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self.requests = self.counter("nexus_http_requests_total", "HTTP requests by route and status",
                                     ("route", "method", "code"))
        self.accepted = self.counter("nexus_runs_accepted_total", "Runs durably accepted",
                                     ("algorithm",))
        self.finished = self.counter("nexus_runs_finished_total",
                                     "Runs that reached a terminal stage here", ("stage",))

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> _Family:
        return self._families.setdefault(name, _Family(name, help_text, "counter", labels))

    def gauge(self, name: str, help_text: str, callback: Callable[[], float]) -> _Family:
        family = self._families.setdefault(name, _Family(name, help_text, "gauge", ()))
        family.callback = callback
        return family

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.render())
        return "\n".join(lines) + "\n"
