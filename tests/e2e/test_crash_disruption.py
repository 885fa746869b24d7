"""A crash is a disruption, not a failure: a burst survives two kill -9 of its nexus.

On embedded defaults a nexus killed with its cgroup or container takes its local
algorithm processes along (a plain kill -9 of nexus alone leaves them to be adopted: see
test_recovery.py). Each crash here is both: SIGKILL to the server, then SIGKILL to every
algorithm process group it started. A client keeps submitting throughout, retrying while
no server listens; every request answered 202 must end COMPLETED, none may be FAILED,
and no run may have been started more often than the crashes explain (one start, plus
one per crash it lived through).

Each crash waits for a condition (several algorithm processes alive), never for a time,
and nothing assumes how far the burst got: a run may be NEW, BUFFERED, RUNNING or done
at either kill. ``behave-patient`` retries its payload download and report while nexus
is down and allows no retry of its own (``maximumRetries: 0``), so a relaunch counted
against the retries would fail the run, and a second process would show in its
``.starts`` file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from support import API, pid_alive, wait_terminal

ALGORITHM = "behave-patient"
CRASHES = 2
LIVE_BEFORE_A_CRASH = 3  # algorithm processes alive when the server is killed
PACED = {
    # a burst a loaded 2-core machine can carry: a launch every 0.1 s, four at a time
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "10",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "2",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "4",
}


class Burst(threading.Thread):
    """Submits runs until stopped, through restarts; keeps the id of every 202."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.accepted: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            n = 0
            while not self.halt.is_set():
                try:
                    response = http.post(
                        f"{API}/run/{ALGORITHM}", json={"algorithmParameters": {"sleep": 1, "n": n}}
                    )
                except httpx.HTTPError:
                    time.sleep(0.1)  # no server (a crash): this request was not accepted
                    continue
                if response.status_code == 202:
                    self.accepted.append(response.json()["requestId"])
                n += 1
                time.sleep(0.05)


def _live_algorithms(server) -> int:
    """Algorithm processes alive now (each ``behave`` writes its pid when it starts)."""
    live = 0
    for pid_file in (server.data_dir / "behave").glob("*.pid"):
        run_id = pid_file.name.removesuffix(".pid")
        try:
            pid = int(pid_file.read_text())
            # that run's own process: pids are reused fast on a busy machine
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        live += b"behave.py" in cmdline and run_id.encode() in cmdline and pid_alive(pid)
    return live


def _wait_for_live_algorithms(server, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _live_algorithms(server) < count:
        assert server.process.poll() is None, f"nexus exited by itself:\n{server.log()}"
        assert time.monotonic() < deadline, f"fewer than {count} algorithms ever ran at once"
        time.sleep(0.02)


def _stages(server) -> dict[str, int]:
    with closing(sqlite3.connect(server.db_path, timeout=30)) as conn:
        rows = conn.execute(
            "SELECT lifecycle_stage, count(*) FROM checkpoints GROUP BY lifecycle_stage"
        ).fetchall()
    return dict(rows)


@pytest.mark.slow
def test_a_burst_through_two_crashes_completes_every_accepted_run(nexus_factory, tmp_path):
    data = tmp_path / "data"
    server = nexus_factory(env=PACED, data_dir=data)
    burst = Burst(server.url)
    burst.start()
    try:
        for _ in range(CRASHES):
            _wait_for_live_algorithms(server, LIVE_BEFORE_A_CRASH)
            server.kill()
            server.kill_algorithms()  # the crash takes the processes along
            server = nexus_factory(env=PACED, data_dir=data, port=server.port)
        # the burst goes on a little on the last server, then stops
        accepted_so_far = len(burst.accepted)
        deadline = time.monotonic() + 60
        while len(burst.accepted) < accepted_so_far + 20:
            assert time.monotonic() < deadline, "the last server accepted nothing"
            time.sleep(0.05)
    finally:
        burst.halt.set()
        burst.join(30)
    assert burst.accepted, "no run was accepted"

    with httpx.Client(base_url=server.url, timeout=30) as http:
        ended = {
            run_id: wait_terminal(http, run_id, ALGORITHM, timeout=300) for run_id in burst.accepted
        }
    not_completed = {
        run_id: body for run_id, body in ended.items() if body["status"] != "COMPLETED"
    }
    assert not not_completed, not_completed
    starts = {run_id: server.behave_starts(run_id) for run_id in burst.accepted}
    assert all(1 <= count <= 1 + CRASHES for count in starts.values()), starts
    # the crashes did hit running algorithms: some runs were launched again
    assert any(count > 1 for count in starts.values()), starts
    # and no run at all (even one whose 202 was lost with a crash) ended FAILED
    assert "FAILED" not in _stages(server), _stages(server)
