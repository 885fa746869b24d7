"""Durable launch records of the local executor, so a restarted nexus never starts a run twice.

A Kubernetes Job outlives the scheduler that created it, and creating it again is refused
because it is named by the run id. Local processes have neither property unless they are
recorded: each local Job keeps three files in the records folder, named by its run id:

``<id>.json``
    the Job (cluster, manifest, when it started, its attempt counters and, once it ended,
    its outcome), rewritten by rename so a crash leaves the old or the new one whole;
``<id>.lock``
    an ``flock`` taken by nexus *before* it spawns an attempt and inherited by the
    attempt's processes: while any of them lives the lock is held, with no window between
    spawn and record in which a crash could hide a live process;
``<id>.exit`` / ``<id>.pid``
    written by the attempt's wrapper shell: its process group id first thing, its exit
    code last, so a nexus that adopted the attempt (not its child, so it cannot wait for
    it) still learns how it ended.

Renames without fsync: a nexus crash leaves the page cache to the kernel, and a machine
crash takes the processes too, so nothing is lost that a fsync would have kept.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import msgspec


class LaunchRecord(msgspec.Struct, kw_only=True):
    run_id: str
    cluster: str
    manifest: dict[str, Any]
    started_at: float  # unix time of the first attempt: activeDeadlineSeconds counts from it
    failures: int = 0  # failed attempts counted against backoffLimit
    retries: int = 0  # attempts retried for any reason (the retry delay grows with them)
    outcome: str = ""  # the final Outcome's value once the Job ended
    message: str = ""
    finished_at: float = 0.0  # unix time


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LaunchRecord)


class LaunchRecords:
    """The records folder; every method is a few small file operations (call off the loop
    where it matters: the executor does the per-launch ones on the spawning thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str, suffix: str) -> Path:
        return self.folder / f"{run_id}.{suffix}"

    def exit_path(self, run_id: str) -> Path:
        return self._path(run_id, "exit")

    def pid_path(self, run_id: str) -> Path:
        return self._path(run_id, "pid")

    def save(self, record: LaunchRecord) -> None:
        path = self._path(record.run_id, "json")
        temporary = path.with_suffix(".json.tmp")
        temporary.write_bytes(_encoder.encode(record))
        os.replace(temporary, path)

    def load_all(self) -> list[LaunchRecord]:
        """Every readable record; one that cannot be decoded is dropped with its files
        (it could only come from a crash mid-write of a version without the rename)."""
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(_decoder.decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError):
                self.remove(path.stem)
        return records

    def remove(self, run_id: str) -> None:
        for suffix in ("json", "lock", "exit", "pid", "exit.tmp"):
            self._path(run_id, suffix).unlink(missing_ok=True)

    def lock(self, run_id: str) -> int:
        """Take the run's lock and return its descriptor (inheritable, for the attempt).

        Raises BlockingIOError when a live attempt still holds it."""
        fd = os.open(self._path(run_id, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def held(self, run_id: str) -> bool:
        """Whether an attempt's process still lives (it holds the lock)."""
        try:
            fd = self.lock(run_id)
        except BlockingIOError:
            return True
        os.close(fd)
        return False

    def exit_code(self, run_id: str) -> int | None:
        """The exit code the wrapper wrote for the last attempt, if it wrote one."""
        try:
            return int(self.exit_path(run_id).read_text())
        except (OSError, ValueError):
            return None

    def group(self, run_id: str) -> int | None:
        """The process group of the live attempt (the wrapper's pid)."""
        try:
            return int(self.pid_path(run_id).read_text())
        except (OSError, ValueError):
            return None

    def clear_attempt(self, run_id: str) -> None:
        """Forget the last attempt's exit code and group before starting another."""
        self.exit_path(run_id).unlink(missing_ok=True)
        self.pid_path(run_id).unlink(missing_ok=True)
