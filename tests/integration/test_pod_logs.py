"""The log route on the real test API server: nexus finds the run's Pod by its Job's
label and reads its log through the API server, which asks the node (kwok's server,
serving the testenv's container log for every Pod: scripts/testenv.d/kube.sh)."""

from __future__ import annotations

import os

import httpx
from test_kubernetes import (
    start,
    submit_when_known,
    template,
    wait_for,
    wait_stage,
    workgroup,
)

POD_LOG = os.environ.get("NEXUS_TESTENV_KUBE_POD_LOG", "kwok: simulated container output")


def test_the_log_route_reads_the_runs_pod(kube, kubeconfig, namespace, tmp_path, nexus_factory):
    nexus = start(nexus_factory, kubeconfig, namespace, tmp_path)
    workgroup(kube, namespace, "wg-a", "shard-a")
    template(kube, namespace, "hello", {"nexus.test/hold": "true"})
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        run_id = submit_when_known(http, "hello")
        wait_stage(http, "hello", run_id, {"RUNNING"})
        wait_for(
            lambda: [
                p for p in kube.pods(namespace, run_id) if p["status"].get("phase") == "Running"
            ],
            60,
            "a Running Pod",
        )
        answer = http.get(f"/algorithm/v1/logs/hello/requests/{run_id}", params={"tail": "5"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text.strip() == POD_LOG

        dried = http.post(
            "/algorithm/v1/run/hello", params={"dryRun": "true"}, json={"algorithmParameters": {}}
        )
        assert dried.status_code == 202, dried.text
        dry = dried.json()["requestId"]
        refused = http.get(f"/algorithm/v1/logs/hello/requests/{dry}")
        assert refused.status_code == 404 and "not been launched" in refused.text
