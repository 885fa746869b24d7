"""A nexus killed the moment it has spawned an algorithm never launches that run twice.

The window that matters on embedded defaults is between the spawn of a run's process and
its RUNNING commit: a restart then finds the run still BUFFERED and launches it again,
unless the launch was recorded and the live process is adopted. Each round waits for a
new child of the server (seen from its fork on, so the kill lands before the commit)
and kills the server with SIGKILL at once; the next server starts on the same folder and
port.

``behave-patient`` retries its payload download and its report while no server listens,
and allows no retry of its own (``maximumRetries: 0``): each run has exactly one process
unless nexus started a second one, and ``behave`` appends one line per process it runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from support import create, wait_terminal

ALGORITHM = "behave-patient"
RUNS = 12
CRASHES = 10
PACED = {
    # a launch every 0.5 s, one at a time, so every round has a fresh spawn to hit
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "2",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
    # runs whose lost Job would be failed after this: a double launch must not hide
    # behind a failure, and a live process must be adopted well before it
    "NEXUS__SUPERVISOR__JOB_SUCCESS_GRACE": "10s",
}


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, from the moment they are forked (read from
    each thread's ``children`` list: a scan of /proc would be too slow to catch one)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _kill_at_next_spawn(server, seen: set[int], timeout: float = 60.0) -> bool:
    """SIGKILL ``server`` as soon as it has a child not in ``seen``; False if none came."""
    pid = server.process.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = _children(pid) - seen
        if fresh:
            server.kill()
            seen |= fresh
            return True
        if server.process.poll() is not None:
            raise AssertionError(f"nexus exited by itself:\n{server.log()}")
        time.sleep(0.001)
    return False


@pytest.mark.slow
def test_a_kill_right_after_a_spawn_never_launches_a_run_twice(nexus_factory, tmp_path):
    data = tmp_path / "data"
    server = nexus_factory(env=PACED, data_dir=data)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        runs = [create(http, {"sleep": 1, "n": i}, algorithm=ALGORITHM) for i in range(RUNS)]
    seen: set[int] = set()
    crashes = 0
    for _ in range(CRASHES):
        if not _kill_at_next_spawn(server, seen):
            break
        crashes += 1
        server = nexus_factory(env=PACED, data_dir=data, port=server.port)
    assert crashes >= 3, f"only {crashes} spawns were caught to crash on"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ended = {run_id: wait_terminal(http, run_id, ALGORITHM, timeout=120) for run_id in runs}
    starts = {run_id: server.behave_starts(run_id) for run_id in runs}
    assert all(body["status"] == "COMPLETED" for body in ended.values()), ended
    assert all(count == 1 for count in starts.values()), (starts, crashes)
