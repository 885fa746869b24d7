"""The event loop stays free while nexus launches local processes at its configured rate.

uvloop's subprocess spawn held the loop until each child had exec'd: a burst of launches
stopped every request, and a restart with a deep queue took long to serve. Spawns now
happen on a thread, so ``/health/live`` answers between them. The runs are accepted by a
first server whose limiter is parked, and launched by a second one on the same folder,
at the default rate (a burst of 50, then 20 a second), while the test asks for
``/health/live``. The bound is generous (a loaded machine must not fail it); the loop's
lag itself is measured in bench/test_loop_lag.py.
"""

from __future__ import annotations

import time

import httpx
import pytest
from support import API

RUNS = 200
GENEROUS = 1.0  # seconds
PARKED = {
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.001",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
}


@pytest.mark.slow
def test_health_answers_while_queued_runs_are_launched(nexus_factory, tmp_path):
    data = tmp_path / "data"
    first = nexus_factory(env=PARKED, data_dir=data)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        for _ in range(RUNS):
            response = http.post(f"{API}/run/noop", json={"algorithmParameters": {}})
            assert response.status_code == 202, response.text
    first.stop()
    second = nexus_factory(data_dir=data, port=first.port)
    worst = 0.0
    launched = 0
    with httpx.Client(base_url=second.url, timeout=30) as http:
        deadline = time.monotonic() + 120
        while launched < RUNS - 1 and time.monotonic() < deadline:
            started = time.monotonic()
            assert http.get("/health/live").status_code == 200
            worst = max(worst, time.monotonic() - started)
            launched = _launched(http)
            time.sleep(0.01)
    # one run was launched by the first server (the parked bucket's single token)
    assert launched >= RUNS - 1, f"only {launched} of {RUNS} runs were launched"
    assert worst < GENEROUS, f"/health/live took {worst:.2f}s while launching"


def _launched(http: httpx.Client) -> int:
    """Jobs launched so far by this server, all shards (the counter's samples summed)."""
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in http.get("/metrics").text.splitlines()
        if line.startswith("nexus_job_launches_total{")
    )
