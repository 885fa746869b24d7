"""Recovered runs go ahead of new ones: runs taken over from a dead scheduler launch
before the new runs already waiting in the same lane.

A first nexus (``host-a``) accepts runs it cannot launch yet and is killed. A second one
(``host-b``, same data folder and port, one worker and a slow launch rate) accepts a
thousand new runs, which queue in its lane; then ``host-a``'s lease is expired in the
store and the supervisor of ``host-b`` takes its runs over. Those must be the next
launches, ahead of the hundreds of new runs still waiting. Only the order is asserted
(from each run's ``sent_at``), never a rate or a duration.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import datetime

import httpx
from support import create, wait_stage

RECOVERED = 10
NEW = 1000
WORKERS = 1
HELD = {
    # host-a: one launch (its burst), then nothing for a long while
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.001",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
    # its runs are taken over only when the test expires its lease
    "NEXUS__SUPERVISOR__LEASE_TTL": "1h",
    "NEXUS__INSTANCE_ID": "host-a",
}
SLOW = {
    # host-b: launches slow enough that its new runs are still queued at the takeover
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "2",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": str(WORKERS),
    "NEXUS__INSTANCE_ID": "host-b",
}


def _launched(server) -> list[str]:
    """Ids of the runs launched so far, in the order they were launched."""
    with closing(sqlite3.connect(server.db_path, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT id, sent_at FROM checkpoints WHERE sent_at IS NOT NULL AND sent_at != ''"
        ).fetchall()
    return [run_id for run_id, sent in sorted(rows, key=lambda row: datetime.fromisoformat(row[1]))]


def _expire_lease(server, host: str) -> None:
    with closing(sqlite3.connect(server.db_path, timeout=10)) as conn:
        conn.execute("UPDATE leases SET expires_at = 0 WHERE host = ?", (host,))
        conn.commit()


def test_runs_taken_over_launch_before_queued_new_runs(nexus_factory, tmp_path):
    data = tmp_path / "data"
    first = nexus_factory(env=HELD, data_dir=data)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        launched = create(http, {})
        wait_stage(http, launched, {"RUNNING", "COMPLETED"})
        recovered = [create(http, {"n": i}) for i in range(RECOVERED)]
    first.kill()

    second = nexus_factory(env=SLOW, data_dir=data, port=first.port)
    with httpx.Client(base_url=second.url, timeout=30) as http:
        new = [create(http, {"m": i}) for i in range(NEW)]
    _expire_lease(second, "host-a")

    deadline = time.monotonic() + 120
    while not set(recovered) <= set(_launched(second)):
        assert time.monotonic() < deadline, "the runs taken over were not launched"
        time.sleep(0.2)
    order = [run_id for run_id in _launched(second) if run_id != launched]
    first_recovered = min(order.index(run_id) for run_id in recovered)
    # From the first recovered launch on, the runs taken over come next; at most one new
    # run per worker, already taken from the queue when they arrived, comes among them.
    burst = order[first_recovered : first_recovered + RECOVERED + WORKERS]
    assert set(recovered) <= set(burst), burst
    # and new runs were still waiting behind them: they went ahead, not last
    assert set(new) - set(order), "every new run had launched: the order shows nothing"
