"""A backend that goes away under load: the answer is 202 (and the run is really stored)
or 503, nothing else; when the backend comes back, nexus recovers by itself.

These tests stop and start the servers of ``scripts/testenv`` (the ones named by the
NEXUS_TEST_* variables): run them alone, not next to other tests using those servers.
Runs are posted as dry runs so that the accept path (store + buffer writes) is what is
measured, without starting a process per run; a real run is launched after recovery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from contract.servers import (
    cassandra_settings_env,
    delete_prefix,
    drop_keyspace,
    run_testenv,
    s3_settings_env,
    unique,
)

API = "/algorithm/v1"
pytestmark = [pytest.mark.slow, pytest.mark.cassandra, pytest.mark.s3]
SLOWEST_ANSWER = 20.0  # seconds; a refusal must be quick, not a hung request
HELD_PATIENCE = 150  # seconds a held run retries its report: longer than any outage here


class Poster(threading.Thread):
    """Posts runs in a loop and records every answer as (when, status, id or message)."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.answers: list[tuple[float, int, str, float]] = []
        self.without_retry_after = 0  # 503 answers that do not say when to come back
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            n = 0
            while not self._halt.is_set():
                n += 1
                started = time.monotonic()
                try:
                    response = http.post(
                        f"{API}/run/behave",
                        params={"dryRun": "true"},
                        json={"algorithmParameters": {"n": n}},
                    )
                    detail = (
                        response.json()["requestId"]
                        if response.status_code == 202
                        else response.text
                    )
                    status = response.status_code
                    if status == 503 and "retry-after" not in response.headers:
                        self.without_retry_after += 1
                except httpx.HTTPError as exc:
                    status, detail = 0, repr(exc)
                now = time.monotonic()
                self.answers.append((now, status, detail, now - started))
                self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(90)

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for when, code, _, _ in list(self.answers) if code == status and when >= since)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or not self.is_alive():
                pytest.fail(
                    f"timed out after {timeout}s waiting for {what}; last answers: "
                    f"{self.answers[-5:]}",
                    pytrace=False,
                )
            time.sleep(0.1)


def finished(http: httpx.Client, algorithm: str, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"{API}/results/{algorithm}/requests/{run_id}", params={"wait": 5})
        assert response.status_code == 200, f"accepted run {run_id}: {response.text}"
        body = response.json()
        if body["status"] not in ("NEW", "BUFFERED", "RUNNING") or time.monotonic() > deadline:
            return body


def outage(nexus_factory, tmp_path, component: str, stop: str = "down") -> None:
    """Post runs, stop ``component`` (``down``: SIGTERM, ``kill``: SIGKILL, a crash), start
    it again, and check every answer and run.

    A crash keeps every acknowledged run only because the test Cassandra syncs its commit
    log before it acknowledges (commitlog_sync: group); with ``periodic`` a SIGKILLed single
    node loses what it acknowledged in the last period, whatever the client does. In
    production, replication with QUORUM writes is what makes a run survive a lost node.

    When Cassandra goes away, a few real runs are also held in the queue by a slow launch
    rate, so they are certainly in flight through the outage: their store retries run
    out, the pipeline leaves them to the sweep, and the sweep must find them once the
    store is back (a CI run once lost such a run because its owed sweeps were spent
    while the store was still down). The first held run is launched before the outage
    (and others may be, on a slow machine): it cannot report while the store is down, so
    held runs get a deadline and a report patience (retrying the receiver's 503s) longer
    than the outage, and every one of them must complete, whenever it was launched."""
    held_runs = 3 if component == "cassandra" else 0
    keyspace, prefix = unique("nexus_fault_"), unique("nexus-fault-")
    run_testenv("up", "cassandra")
    run_testenv("up", "seaweedfs")
    env = {
        **cassandra_settings_env(keyspace),
        **s3_settings_env(prefix),
        "NEXUS__SCYLLA_CQL_STORE__RECONNECT_MAX_DELAY": "2s",
        # One launch every 5 s, and store retries that give up within a second.
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.2",
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__MAX_ATTEMPTS": "3",
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__FAILURE_RATE_MAX_DELAY": "500ms",
        # A lease that outlives the outage: the supervisor must not take this host's
        # runs over (it would hide a scheduler that forgot its own).
        "NEXUS__SUPERVISOR__LEASE_TTL": "600s",
    }
    poster = None
    try:
        nexus = nexus_factory(env=env, data_dir=tmp_path / "nexus")
        poster = Poster(nexus.url)
        poster.start()
        poster.wait_until(lambda: poster.count(202) >= 5, 60, "runs accepted before the outage")
        held = []
        with httpx.Client(base_url=nexus.url, timeout=60) as http:
            for n in range(held_runs + 1 if held_runs else 0):  # the first takes the token
                response = http.post(
                    f"{API}/run/behave",
                    json={
                        "algorithmParameters": {"held": n, "report_patience": HELD_PATIENCE},
                        "customConfiguration": {
                            "runtimeEnvironment": {"deadlineSeconds": HELD_PATIENCE + 30}
                        },
                    },
                )
                assert response.status_code == 202, response.text
                held.append(response.json()["requestId"])
        run_testenv(stop, component)
        down, stopped_at = time.monotonic(), time.time()
        poster.wait_until(
            lambda: poster.count(503, since=down) >= 5, 60, f"503 answers while {component} is down"
        )
        run_testenv("up", component)
        up, back_at = time.monotonic(), time.time()
        poster.wait_until(
            lambda: poster.count(202, since=up) >= 5,
            120,
            f"runs accepted again after {component} came back",
        )
        poster.stop()

        codes = [a[1] for a in poster.answers]
        print(
            f"{component} outage: {codes.count(202)} accepted, {codes.count(503)} refused, "
            f"slowest answer {max(a[3] for a in poster.answers):.2f}s"
        )
        wrong = [a for a in poster.answers if a[1] not in (202, 503)]
        assert not wrong, f"answers other than 202/503: {wrong[:10]}"
        slow = [a for a in poster.answers if a[3] > SLOWEST_ANSWER]
        assert not slow, f"answers slower than {SLOWEST_ANSWER}s: {slow[:10]}"
        assert poster.without_retry_after == 0, "a 503 answer without Retry-After"
        accepted = [detail for _, status, detail, _ in poster.answers if status == 202]
        with httpx.Client(base_url=nexus.url, timeout=60) as http:
            # Every 202 is a stored run (read back after the restart) that finishes.
            for run_id in accepted:
                result = finished(http, "behave", run_id, timeout=60)
                assert result["status"] == "COMPLETED", (run_id, result)
            ended = {
                run_id: finished(http, "behave", run_id, timeout=120)["status"] for run_id in held
            }
            starts = {run_id: nexus.behave_start_times(run_id) for run_id in held}
            assert set(ended.values()) <= {"COMPLETED"}, (
                f"{component} stopped at {stopped_at:.3f}, back at {back_at:.3f}; held runs "
                f"ended {ended}, their algorithm started at {starts}"
            )
            # The service recovered by itself: a real run goes all the way.
            response = http.post(f"{API}/run/behave", json={"algorithmParameters": {}})
            assert response.status_code == 202, response.text
            result = finished(http, "behave", response.json()["requestId"], timeout=90)
            assert result["status"] == "COMPLETED", (result, nexus.log())
    finally:
        if poster is not None and poster.is_alive():
            poster.stop()
        run_testenv("up", component)
        drop_keyspace(keyspace)
        delete_prefix(prefix)


def test_cassandra_outage(nexus_factory, tmp_path):
    outage(nexus_factory, tmp_path, "cassandra")


def test_cassandra_crash(nexus_factory, tmp_path):
    outage(nexus_factory, tmp_path, "cassandra", stop="kill")


def test_s3_outage(nexus_factory, tmp_path):
    outage(nexus_factory, tmp_path, "seaweedfs")
