"""What ``nexus wait`` shows while runs settle.

On a terminal: a status line redrawn in place (a bar, counts by outcome, elapsed time),
with each run's final line printed above it as it settles. Anywhere else (a pipe, a log
file): one plain line per run as it settles, nothing redrawn.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from nexus_run_client.errors import NexusClientError
from nexus_run_client.models import RunResult

BAR_WIDTH = 24


def describe(outcome: RunResult | NexusClientError, request_id: str = "") -> str:
    """One line for a run: id, stage, and its result URI or failure cause."""
    if isinstance(outcome, NexusClientError):
        return f"{request_id}\tERROR\t{outcome}"
    detail = outcome.result_uri if outcome.succeeded else outcome.run_error_message
    return f"{outcome.request_id}\t{outcome.status}\t{detail}".rstrip("\t")


class Progress:
    def __init__(
        self, request_ids: list[str], stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.ids = request_ids
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.completed = self.failed = self.errors = 0

    @property
    def settled(self) -> int:
        return self.completed + self.failed + self.errors

    def settle(self, index: int, outcome: RunResult | NexusClientError) -> None:
        if isinstance(outcome, NexusClientError):
            self.errors += 1
        elif outcome.succeeded:
            self.completed += 1
        elif outcome.finished:
            self.failed += 1
        else:
            return  # still running when the deadline passed: reported at the end
        self._clear()
        self.stream.write(describe(outcome, self.ids[index]) + "\n")
        self.refresh()

    def status_line(self) -> str:
        total = len(self.ids)
        filled = BAR_WIDTH * self.settled // total if total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {self.settled}/{total} finished: {self.completed} completed, "
            f"{self.failed} failed, {self.errors} errors, "
            f"{total - self.settled} waiting ({time.monotonic() - self.started:.0f}s)"
        )

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")

    def refresh(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + self.status_line())
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + self.status_line() + "\n")
            self.stream.flush()


class StageLine:
    """``run --wait``'s stages on standard error, so standard output keeps only the result:
    redrawn in place on a terminal, a plain line per change otherwise."""

    def __init__(
        self, request_id: str, stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.request_id = request_id
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.drawn = False

    def show(self, result: RunResult) -> None:
        elapsed = time.monotonic() - self.started
        if self.live:
            self.stream.write(f"\r\033[K{self.request_id}  {result.status}  ({elapsed:.0f}s)")
            self.drawn = True
        else:
            self.stream.write(f"{self.request_id}\t{result.status}\t{elapsed:.1f}s\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
