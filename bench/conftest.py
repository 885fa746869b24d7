"""Fixtures of the benchmarks: where results go, how long loads run, shared servers.

Every figure is a ratio against a baseline measured in the same run (these machines are
shared and noisy); :func:`record` files it with its goal, and at the end of the session
the figures are written as JSON to ``$BENCH_RESULTS`` (default bench/.results.json),
which ``python -m bench.report`` turns into bench/RESULTS.md.

Options: ``--bench-quick`` shortens every load (for a smoke run; the figures are then
marked quick), ``--bench-strict`` makes a missed target fail its test (by default a
miss is reported, not failed: several targets depend on the machine).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import servers

RESULTS = Path(os.environ.get("BENCH_RESULTS", Path(__file__).parent / ".results.json"))
_figures: list[dict[str, Any]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nexus bench")
    group.addoption(
        "--bench-quick", action="store_true", help="short loads: a smoke run, not figures to report"
    )
    group.addoption(
        "--bench-strict", action="store_true", help="fail a test whose target is missed"
    )


class Bench:
    """What a benchmark needs from the session: its size, and where its figures go."""

    def __init__(self, config: pytest.Config, workdir: Path) -> None:
        self.quick = bool(config.getoption("--bench-quick"))
        self.strict = bool(config.getoption("--bench-strict"))
        self.workdir = workdir

    def seconds(self, full: float) -> float:
        """How long one load round lasts."""
        return min(full, 2.0) if self.quick else full

    def count(self, full: int) -> int:
        return max(1, full // 20) if self.quick else full

    def record(
        self,
        target: str,
        figure: str,
        value: float | None,
        goal: str,
        met: bool | None,
        detail: dict[str, Any] | None = None,
        note: str = "",
    ) -> None:
        """File one figure; ``met`` None means not measured (``note`` says why)."""
        _figures.append(
            {
                "target": target,
                "figure": figure,
                "value": None if value is None else round(float(value), 4),
                "goal": goal,
                "met": met,
                "quick": self.quick,
                "note": note,
                "detail": detail or {},
                "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        print(
            f"\n[{target}] {figure} = {value} (goal {goal}) -> "
            f"{'met' if met else 'NOT MET' if met is False else 'not measured'} {note}"
        )
        if self.strict and met is False:
            pytest.fail(f"{target}: {figure} = {value}, goal {goal}")


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    return Bench(pytestconfig, tmp_path_factory.mktemp("bench"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _figures:
        return
    previous: list[dict[str, Any]] = []
    if os.environ.get("BENCH_RESULTS_APPEND") == "1" and RESULTS.exists():
        previous = json.loads(RESULTS.read_text()).get("figures", [])
    RESULTS.write_text(json.dumps({"figures": previous + _figures}, indent=1))


@pytest.fixture(scope="module")
def baseline_server(bench: Bench) -> Iterator[servers.Server]:
    with servers.baseline("sanic", bench.workdir) as server:
        yield server


@pytest.fixture(scope="module")
def raw_server(bench: Bench) -> Iterator[servers.Server]:
    with servers.baseline("raw", bench.workdir) as server:
        yield server


@pytest.fixture(scope="module")
def nexus_server(
    bench: Bench, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.Server]:
    with servers.nexus(tmp_path_factory.mktemp("nexus")) as server:
        yield server
