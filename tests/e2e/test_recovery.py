"""Restart recovery: a process killed with runs NEW, BUFFERED and RUNNING loses none of them.

Each test kills a real ``nexus --role all`` with SIGKILL (no clean-up at all) and starts
another one on the same data folder. The new process listens on the same port because
the stored Jobs carry payload URLs of that address (on a cluster they would name a
Service). Counting launches uses the ``<run id>.starts`` file that ``behave`` appends to
on every start, so a run launched twice would show two lines.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing

import httpx
import pytest
from support import API, TERMINAL, create, metadata, wait_stage, wait_terminal

SLOW = {
    # one launch every 5 s after a burst of 2, one worker: later runs wait NEW/BUFFERED
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.2",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "2",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
}


def _pid_written(server, run_id: str, timeout: float = 15.0) -> None:
    path = server.data_dir / "behave" / f"{run_id}.pid"
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{run_id} never started"
        time.sleep(0.05)


def _start_mixed_runs(http: httpx.Client, server) -> dict[str, list[str]]:
    """Two RUNNING (sleeping), one BUFFERED (waiting for a token), three NEW."""
    running = [create(http, {"sleep": 3}) for _ in range(2)]
    buffered = create(http, {})
    new = [create(http, {"n": i}) for i in range(3)]
    for run_id in running:
        wait_stage(http, run_id, "RUNNING")
        _pid_written(server, run_id)
    wait_stage(http, buffered, "BUFFERED")
    for run_id in new:
        assert metadata(http, run_id)["lifecycle_stage"] == "NEW"
    return {"running": running, "buffered": [buffered], "new": new}


def _unfinished_rows(server) -> int:
    with closing(sqlite3.connect(server.db_path, timeout=10)) as conn:
        marks = ", ".join("?" for _ in TERMINAL)
        return conn.execute(
            f"SELECT count(*) FROM checkpoints WHERE lifecycle_stage NOT IN ({marks})",
            sorted(TERMINAL),
        ).fetchone()[0]


def _assert_all_finished(http: httpx.Client, server, runs: dict[str, list[str]]) -> None:
    for run_id in runs["buffered"] + runs["new"]:
        body = wait_terminal(http, run_id, timeout=60)
        assert body["status"] == "COMPLETED", (run_id, body)
        assert server.behave_starts(run_id) == 1, run_id  # launched once, after the restart
    for run_id in runs["running"]:
        body = wait_terminal(http, run_id, timeout=60)
        # Its process outlived the killed server (a pod outlives its scheduler): the new
        # server adopted it (it was recorded before it was spawned), so it is not lost.
        assert body["status"] == "COMPLETED", body
        assert server.behave_starts(run_id) == 1, run_id  # never launched again
    assert _unfinished_rows(server) == 0


def test_restart_after_kill_finishes_every_accepted_run(nexus_factory, tmp_path):
    data = tmp_path / "data"
    first = nexus_factory(env=SLOW, data_dir=data)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        runs = _start_mixed_runs(http, first)
    first.kill()

    second = nexus_factory(data_dir=data, port=first.port)  # default, fast launch rate
    with httpx.Client(base_url=second.url, timeout=30) as http:
        _assert_all_finished(http, second, runs)
        # still one record per run, under the same host
        for run_id in runs["new"]:
            assert metadata(http, run_id)["received_by_host"] == "test-host"


def test_runs_of_a_dead_scheduler_are_taken_over_when_its_lease_expires(nexus_factory, tmp_path):
    data = tmp_path / "data"
    lease = {"NEXUS__SUPERVISOR__LEASE_TTL": "2s", "NEXUS__SUPERVISOR__HEARTBEAT_INTERVAL": "500ms"}
    first = nexus_factory(env={**SLOW, **lease, "NEXUS__INSTANCE_ID": "host-a"}, data_dir=data)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        runs = _start_mixed_runs(http, first)
    first.kill()

    # Another instance: it owns none of these runs, its supervisor must adopt them.
    second = nexus_factory(
        env={**lease, "NEXUS__INSTANCE_ID": "host-b"}, data_dir=data, port=first.port
    )
    with httpx.Client(base_url=second.url, timeout=30) as http:
        _assert_all_finished(http, second, runs)
        assert metadata(http, runs["new"][0])["received_by_host"] == "host-a"


def test_graceful_restart_keeps_pending_runs(nexus_factory, tmp_path):
    data = tmp_path / "data"
    first = nexus_factory(env=SLOW, data_dir=data)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        create(http, {})  # the burst's tokens
        create(http, {})
        pending = [create(http, {"n": i}) for i in range(3)]
        assert {metadata(http, run_id)["lifecycle_stage"] for run_id in pending} <= {
            "NEW",
            "BUFFERED",
        }
    first.stop()
    second = nexus_factory(data_dir=data, port=first.port)
    with httpx.Client(base_url=second.url, timeout=30) as http:
        for run_id in pending:
            assert wait_terminal(http, run_id, timeout=60)["status"] == "COMPLETED"
            assert second.behave_starts(run_id) == 1


def test_kill_during_a_burst_of_requests_loses_no_accepted_run(nexus_factory, tmp_path):
    data = tmp_path / "data"
    first = nexus_factory(data_dir=data)
    accepted: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=first.url, timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        f"{API}/run/behave",
                        params={"dryRun": "true"},
                        json={"algorithmParameters": {"x": 1}},
                    )
                except httpx.HTTPError:
                    return  # the server died under us: this request was not accepted
                if response.status_code == 202:
                    accepted.append(response.json()["requestId"])

    threads = [threading.Thread(target=client_loop) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(accepted) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill()
    stop.set()
    for thread in threads:
        thread.join(15)
    assert len(accepted) >= 30, "too few requests were accepted before the kill"

    second = nexus_factory(data_dir=data, port=first.port)
    with httpx.Client(base_url=second.url, timeout=30) as http:
        for run_id in accepted:
            assert wait_terminal(http, run_id, timeout=60)["status"] == "COMPLETED"
    # and no run at all (even one whose 202 never reached its client) is left unfinished
    deadline = time.monotonic() + 30
    while _unfinished_rows(second):
        assert time.monotonic() < deadline, "some accepted runs never finished"
        time.sleep(0.2)


@pytest.mark.parametrize("signal_name", ["kill", "stop"])
def test_a_restarted_server_answers_for_finished_runs(nexus_factory, tmp_path, signal_name):
    data = tmp_path / "data"
    first = nexus_factory(data_dir=data)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        done = create(http, {"value": 3})
        body = wait_terminal(http, done)
    getattr(first, signal_name)()
    second = nexus_factory(data_dir=data, port=first.port)
    with httpx.Client(base_url=second.url, timeout=30) as http:
        assert wait_terminal(http, done) == body
        # the signing secret is kept in the data folder: old URLs still work
        assert httpx.get(body["resultUri"]).json()["echo"] == {"value": 3}
        assert httpx.get(metadata(http, done)["payload_uri"]).json() == {"value": 3}
