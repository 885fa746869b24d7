"""Two real control planes: testenv's "kube" (where templates live) and "kube2" (a
second, independent cluster: its own etcd, CA and KWOK nodes) as shards of one nexus.

Needs NEXUS_TEST_KUBECONFIG and NEXUS_TEST_KUBECONFIG_2
(``eval "$(scripts/testenv env kube kube2)"``).
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from control_plane import wait_for
from test_kubernetes import (
    act_as_algorithm,
    finished,
    kube_env,
    submit,
    template,
    wait_stage,
    workgroup,
)

pytestmark = pytest.mark.kube


def test_the_second_control_plane_is_a_cluster_of_its_own(kube, kube2, namespace):
    """Not the same API server under another name: a namespace made in one is not in the
    other, and each has its own Ready KWOK nodes (so Jobs run there)."""
    assert kube.host != kube2.host
    assert kube2.call("GET", f"/api/v1/namespaces/{namespace}") is None
    nodes = kube2.call("GET", "/api/v1/nodes", labelSelector="type=kwok")["items"]
    assert nodes and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in nodes
    )


def test_a_run_goes_through_on_a_shard_in_another_cluster(
    kube, kube2, kubeconfig, kubeconfig_2, namespace, namespace_2, tmp_path, nexus_factory
):
    """The template and its workgroup live in the first cluster; the workgroup names
    shard "far", whose kubeconfig is the second cluster's. The Job is created there (and
    not in the first cluster), its Pod runs on kube2's KWOK node, and the run completes."""
    workgroup(kube, namespace, "wg-far", "far")
    template(kube, namespace, "on-far", {"nexus.test/hold": "true"}, workgroup_name="wg-far")
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    shutil.copyfile(kubeconfig_2, shard_dir / "far.kubeconfig")
    nexus = nexus_factory(env=kube_env(kubeconfig, namespace, shard_dir))
    with httpx.Client(base_url=nexus.url, timeout=60) as http:
        run_id = submit(http, "on-far")
        wait_stage(http, "on-far", run_id, {"RUNNING"})
        assert kube.job(namespace, run_id) is None
        pods = wait_for(
            lambda: [p for p in kube2.pods(namespace, run_id) if p["spec"].get("nodeName")],
            30,
            f"the Pod of {run_id} to be scheduled",
        )
        assert pods[0]["spec"].get("nodeName", "").startswith("kwok-node-"), pods[0]
        act_as_algorithm(kube2, namespace, "on-far", run_id)
        done = finished(http, "on-far", run_id)
        assert done["status"] == "COMPLETED", (done, nexus.log())
        result = json.loads(httpx.get(done["resultUri"], timeout=10).content)
        assert result["shard"] == "far"
