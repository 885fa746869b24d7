"""Issue 12 item 5: how long ``nexus --role controller`` takes to bring 200 templates,
each with one Secret and one ConfigMap, to two shards, and how many API requests it
spends doing so, per object synced. Reported, no target.

The controller cluster is testenv's "kube"; the shards are "kube" itself ("near": the
sources are already there, the controller only checks them) and "kube2" ("far": every
object is copied). Converged means every template's status says Ready with both shards
in ``syncedToClusters``, and "far" holds every Secret and ConfigMap with our labels.
The sources are written before the controller starts, so what is timed (from its start
to convergence) and counted is the controller alone: its own count of API requests
(``nexus_kube_api_responses_total``, every cluster) and its process's CPU, from /proc.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import urllib.request
import uuid

import pytest

from bench import servers

TEMPLATES = 200
ALIAS = "bench-controller"
CONVERGE_TIMEOUT = 900.0
_RESPONSES = re.compile(r"^nexus_kube_api_responses_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def _requests(controller: servers.Server) -> dict[str, float]:
    """API responses the controller has had so far, by verb (every cluster)."""
    with urllib.request.urlopen(controller.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    by_verb: dict[str, float] = {}
    for labels, value in _RESPONSES.findall(text):
        verb = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("verb", "?")
        by_verb[verb] = by_verb.get(verb, 0.0) + float(value)
    return by_verb


def test_12_controller_converges_on_two_shards(bench, tmp_path):
    figures = (
        "seconds for 200 templates (+1 Secret, +1 ConfigMap each) to converge on two shards",
        "API requests per object synced (controller's own count)",
    )
    reason = servers.kube_unavailable()
    if not reason and not os.environ.get("NEXUS_TEST_KUBECONFIG_2"):
        reason = "NEXUS_TEST_KUBECONFIG_2 not set: run `scripts/testenv up kube2` first"
    if reason:
        for figure in figures:
            bench.record("12", figure, None, "reported", None, note=f"not measured: {reason}")
        pytest.skip(reason)

    for folder in ("tests", "tests/integration"):  # the integration suite's helpers
        sys.path.insert(0, str(servers.REPO / folder))
    import test_controller as tc  # the integration suite's object helpers
    import test_kubernetes as kt

    count = max(10, TEMPLATES // 10) if bench.quick else TEMPLATES
    kubeconfig, kubeconfig_2 = (
        os.environ["NEXUS_TEST_KUBECONFIG"],
        os.environ["NEXUS_TEST_KUBECONFIG_2"],
    )
    near, far = kt.Kube(kubeconfig), kt.Kube(kubeconfig_2)
    namespace = f"nexus-bench-ctl-{uuid.uuid4().hex[:8]}"
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copyfile(kubeconfig, shards / "near.kubeconfig")
    shutil.copyfile(kubeconfig_2, shards / "far.kubeconfig")
    port = servers.free_port()
    controller = servers.Server(
        "controller",
        [sys.executable, "-m", "nexus.cli", "--role", "controller", "--port", str(port)],
        port,
        env={
            **servers.nexus_env(tmp_path / "data"),
            "NEXUS__KUBE_CONFIG_PATH": kubeconfig,
            "NEXUS__SHARD_KUBE_CONFIG_PATH": str(shards),
            "NEXUS__CONTROLLER__NAMESPACE": namespace,
            "NEXUS__CONTROLLER__ALIAS": ALIAS,
            # The defaults a deployment gets, but for the overall rate: the issue asks how
            # fast it converges, not how fast the default limit lets it.
            "NEXUS__CONTROLLER__RATE_LIMIT_ELEMENTS_PER_SECOND": "1000",
            "NEXUS__CONTROLLER__RATE_LIMIT_ELEMENTS_BURST": "1000",
            "NEXUS__CONTROLLER__WORKERS": "8",
            "NEXUS__KUBERNETES__CLIENT_QPS": "1000",
            "NEXUS__KUBERNETES__CLIENT_BURST": "1000",
        },
        log_path=tmp_path / "controller.log",
    )
    try:
        for client in (near, far):
            kt.install_crds(client)
            client.create_namespace(namespace)
        kt.workgroup(near, namespace, "wg-far", "far")
        # The sources first, then the controller: what is timed is the controller alone
        # bringing a namespace of templates to both shards (as after a restart, or when it
        # is first deployed), not how fast this loop writes them.
        begun = time.monotonic()
        for i in range(count):
            tc.secret(near, namespace, f"s-{i}", password=f"p{i}")
            tc.config_map(near, namespace, f"c-{i}", KEY=f"v{i}")
            tc.algorithm(near, namespace, f"t-{i}", [f"s-{i}"], [f"c-{i}"])
        written = time.monotonic() - begun
        started = time.monotonic()
        controller.start(timeout=120)

        def converged() -> bool:
            items = near.call(
                "GET", f"/apis/{kt.GROUP}/v1/namespaces/{namespace}/nexusalgorithmtemplates"
            )["items"]
            done = [
                t
                for t in items
                if tc.ready(t).get("status") == "True"
                and {"near", "far"} <= set((t.get("status") or {}).get("syncedToClusters") or [])
            ]
            if len(done) < count:
                return False
            selector = f"{tc.APP_LABEL}={ALIAS}"
            secrets = far.call(
                "GET", f"/api/v1/namespaces/{namespace}/secrets", labelSelector=selector
            )
            maps = far.call(
                "GET", f"/api/v1/namespaces/{namespace}/configmaps", labelSelector=selector
            )
            return len(secrets["items"]) >= count and len(maps["items"]) >= count

        kt.wait_for(
            converged, CONVERGE_TIMEOUT, f"{count} templates in step on both shards", every=1.0
        )
        seconds = time.monotonic() - started
        spent, cpu = _requests(controller), controller.cpu_seconds()
    finally:
        controller.stop()
        for client in (near, far):
            client.delete_namespace(namespace)
            client.close()

    total = sum(spent.values())
    # Objects synced: each template, its Secret and its ConfigMap, to the shard that needs
    # a copy ("far"), plus the workgroup; "near" holds the sources themselves.
    objects = 3 * count + 1
    detail = {
        "templates": count,
        "objects_synced": objects,
        "seconds_writing_sources": round(written, 1),
        "requests_by_verb": {verb: int(n) for verb, n in sorted(spent.items()) if n},
        "controller_cpu_s": round(cpu, 2),
        "controller_cpu_ms_per_object": round(1000 * cpu / objects, 2),
    }
    bench.record("12", figures[0], seconds, "reported", None, detail, note="reported, no target")
    bench.record(
        "12", figures[1], total / objects, "reported", None, detail, note="reported, no target"
    )
