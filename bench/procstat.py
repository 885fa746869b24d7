"""CPU time of processes from /proc: the test servers' and any pid's.

CPU per run is the steadiest figure on a shared machine (rates move with whatever else
runs), so the benches read every process's utime + stime before and after a window.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TESTENV_CACHE = Path(os.environ.get("NEXUS_TESTENV_CACHE", Path.home() / ".cache/nexus-testenv"))


def _pid_file(name: str) -> list[int]:
    path = TESTENV_CACHE / "run" / name
    try:
        return [int(path.read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


def _pids_by_name(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def server_pids() -> dict[str, list[int]]:
    """The test servers' processes: the testenv pid files, else by command name."""
    found = {
        "cassandra": _pid_file("cassandra.pid") or _pids_by_name("java"),
        "seaweedfs": _pid_file("seaweedfs.pid") or _pids_by_name("weed"),
        "api server": _pid_file("kube/apiserver.pid") + _pid_file("kube2/apiserver.pid")
        or _pids_by_name("kube-apiserver"),
    }
    return {k: [p for p in v if Path(f"/proc/{p}").exists()] for k, v in found.items()}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (all their threads); a gone pid counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class CpuWindow:
    """CPU seconds of named groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._before = {k: cpu_seconds(v) for k, v in self.groups.items()}

    def stop(self) -> None:
        self.seconds = {k: cpu_seconds(v) - self._before[k] for k, v in self.groups.items()}

    def ms_per(self, count: int) -> dict[str, float]:
        return {k: round(v * 1e3 / max(1, count), 3) for k, v in self.seconds.items()}
