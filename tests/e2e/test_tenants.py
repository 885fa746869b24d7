"""Tenants: a label names a run's tenant, whose limit on queued runs is a 429 that names
it and writes nothing; depth and wait per tenant are in /metrics."""

from __future__ import annotations

import httpx
from support import API, assert_error, create, wait_stage
from test_health_metrics import parse_metrics

TEAM = "behave-team-x"  # its workgroup carries science.sneaksanddata.com/tenant: team-x
LIMITED = {
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__LIMITS": "team-x=2",
    # one worker, one launch and then a long wait: later runs stay queued
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.01",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "1",
}


def test_a_tenant_over_its_limit_is_refused_by_name_and_others_are_not(nexus_factory):
    server = nexus_factory(env=LIMITED)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        create(http, {}, algorithm=TEAM)  # launched with the burst's token
        waiting = create(http, {}, algorithm=TEAM)  # taken by the worker, waits for a token
        wait_stage(http, waiting, "BUFFERED", algorithm=TEAM)
        queued = [create(http, {}, algorithm=TEAM) for _ in range(2)]  # team-x's limit
        before = server.written()
        refused = http.post(f"{API}/run/{TEAM}", json={"algorithmParameters": {}})
        message = assert_error(refused, 429, "tenant 'team-x'", "2 runs queued")
        assert "queue is full" in message
        assert int(refused.headers["retry-after"]) >= 1
        assert server.written() == before  # refused before anything was written
        other = create(http, {})  # tenant "behave" (its template's name) still has room
        samples = parse_metrics(http.get("/metrics").text)
        assert samples['nexus_queue_tenant_depth{tenant="team-x"}'] == 2
        assert samples['nexus_queue_tenant_depth{tenant="behave"}'] == 1
        # the two runs the worker took have waited in the queue: their waits are counted
        assert samples['nexus_queue_wait_seconds_count{tenant="team-x"}'] == 2
        for run_id in queued:
            wait_stage(http, run_id, "NEW", algorithm=TEAM)
        wait_stage(http, other, "NEW")
