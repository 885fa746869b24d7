"""Target 4: launching Jobs on a real API server (the control plane of scripts/testenv).

Two figures, both against what the API server itself can take, measured in the same run:

* limiter off (rate 0 = unlimited): Jobs created per second by nexus's launch pipeline
  over Jobs created per second by a bare loop of the same ``kubernetes`` client creating
  the same Jobs (the manifest nexus stored for a run, renamed) with the same concurrency
  as nexus's launch workers (goal >= 0.8);
* the same, with the runs accepted *before* the timed window (launch path alone): a
  first nexus accepts them with its launch rate parked and stops; a second one on the
  same data folder and instance id finds them at start-up and launches them with the
  limiter off. The bare loop gets its manifests for free, so this is the like-for-like
  figure; the first one also charges nexus for accepting the runs over HTTP while it
  launches them, on the same 2 cores as the API server;
* limiter on at a rate below that: the rate nexus holds over the configured one
  (goal within 5%).

nexus's rate is read from its own count of the API server's answers
(``nexus_kube_api_responses_total{verb="create",code="201"}`` on /metrics), sampled while
it runs, from the first Job to the last. Without a running control plane (or without the
Kubernetes executor) the figures are filed as "not measured" with the reason.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import load, servers

RUNS = 600
WORKERS = 16
CREATES = re.compile(
    r'^nexus_kube_api_responses_total\{(?=[^}]*verb="create")(?=[^}]*code="201")'
    r"[^}]*\} (\S+)$",
    re.M,
)


def _created(server: servers.Server) -> int:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        return int(sum(float(v) for v in CREATES.findall(answer.read().decode())))


def _post(server: servers.Server, algorithm: str, runs: int, timeout: float) -> threading.Thread:
    """Post ``runs`` runs from a thread (8 keep-alive connections); the thread is returned."""
    request = load.build_request(
        "POST", f"/algorithm/v1/run/{algorithm}", b'{"algorithmParameters":{"bench":true}}'
    )
    poster = threading.Thread(
        target=load.closed_loop,
        args=(server.host, server.port, request),
        kwargs={"connections": 8, "total": runs, "duration": timeout},
    )
    poster.start()
    return poster


def _creation_rate(
    server: servers.Server, jobs: int, timeout: float, counted_from_start: bool = False
) -> tuple[float, int]:
    """Jobs/s ``server`` creates between the first sample that saw a Job and its
    ``jobs``-th, and how many it created. ``counted_from_start``: count every Job since the
    process started (one that launches at start-up may have begun before it answered)."""
    base = 0 if counted_from_start else _created(server)
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), _created(server) - base))
        if samples[-1][1] >= jobs:
            break
        time.sleep(0.05)
    first = next(((t, n) for t, n in samples if n >= 1), None)
    last = samples[-1]
    if first is None or last[0] <= first[0]:
        return 0.0, last[1]
    return (last[1] - first[1]) / (last[0] - first[0]), last[1]


def _nexus_launch_rate(
    server: servers.Server, algorithm: str, runs: int, timeout: float
) -> tuple[float, int]:
    """Post ``runs`` runs and time the Jobs nexus creates, from the first to the last."""
    poster = _post(server, algorithm, runs, timeout)
    try:
        return _creation_rate(server, runs, timeout)
    finally:
        poster.join(timeout)


def _bare_rate(kubeconfig: str, namespace: str, manifest: dict, runs: int) -> float:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    batch = client.BatchV1Api(api)
    prefix = f"bare-{uuid.uuid4().hex[:6]}"

    def create(i: int) -> None:
        job = {
            **manifest,
            "metadata": {**manifest["metadata"], "name": f"{prefix}-{i}", "namespace": namespace},
        }
        batch.create_namespaced_job(namespace, job)

    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(create, range(runs)))
    seconds = time.perf_counter() - start
    api.close()
    return runs / seconds


def test_4_launch_rate(bench, tmp_path):
    reason = servers.kube_unavailable()
    figures = (
        "Jobs/s nexus scheduler / bare kubernetes-client loop (limiter off)",
        "launch rate nexus / configured rate (limiter on)",
        "Jobs/s nexus / bare loop, runs accepted before the window (limiter off)",
    )
    if reason:
        for figure, goal in zip(figures, (">= 0.8", "within 5%", ">= 0.8"), strict=True):
            bench.record("4", figure, None, goal, None, note=f"not measured: {reason}")
        pytest.skip(reason)

    sys.path.insert(0, str(servers.REPO / "tests" / "integration"))
    import control_plane as cp  # the integration suite's API client
    import test_kubernetes as kt  # and its resource helpers

    kubeconfig = os.environ["NEXUS_TEST_KUBECONFIG"]
    kube = cp.Kube(kubeconfig)
    namespace = kube.create_namespace(f"nexus-bench-{uuid.uuid4().hex[:8]}")
    runs = 100 if bench.quick else RUNS
    try:
        cp.install_crds(kube)  # and wait until they are served: a fresh control plane
        kt.workgroup(kube, namespace, "wg-a", "shard-a")
        kt.template(kube, namespace, "bench", {"nexus.test/hold": "true"}, deadline=3600)
        shard_dir = tmp_path / "shards"
        shard_dir.mkdir()
        kt.shard_kubeconfig(kubeconfig, shard_dir / "shard-a.kubeconfig")

        def start(name: str, rate: float | str, burst: int) -> servers.Server:
            env = kt.kube_env(kubeconfig, namespace, shard_dir)
            env.update(
                {
                    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": str(WORKERS),
                    "NEXUS__KUBERNETES__CLIENT_QPS": "10000",
                    "NEXUS__KUBERNETES__CLIENT_BURST": "10000",
                    "NEXUS__SUPERVISOR__RECONCILE_INTERVAL": "60s",
                }
            )
            server = servers.nexus(tmp_path / name, name=name, rate=str(rate), extra=env)
            server.env["NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST"] = str(burst)
            return server.start(timeout=120)

        unlimited = start("nexus-unlimited", 0, 1)
        try:
            nexus_rate, created = _nexus_launch_rate(unlimited, "bench", runs, timeout=300)
            job = kube.jobs(namespace)[0]
            manifest = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "labels": job["metadata"].get("labels", {}),
                    "annotations": job["metadata"].get("annotations", {}),
                },
                "spec": {
                    k: v for k, v in job["spec"].items() if k not in ("selector", "manualSelector")
                },
            }
            manifest["spec"]["template"]["metadata"].setdefault("labels", {})
            for key in list(manifest["spec"]["template"]["metadata"]["labels"]):
                if key.startswith(
                    (
                        "controller-uid",
                        "batch.kubernetes.io/controller-uid",
                        "job-name",
                        "batch.kubernetes.io/job-name",
                    )
                ):
                    del manifest["spec"]["template"]["metadata"]["labels"][key]
        finally:
            unlimited.stop()
        bare_rate = _bare_rate(kubeconfig, namespace, manifest, runs)
        ratio = nexus_rate / bare_rate if bare_rate else 0.0
        bench.record(
            "4",
            figures[0],
            ratio,
            ">= 0.8",
            ratio >= 0.8,
            {
                "nexus_jobs_per_s": round(nexus_rate, 1),
                "bare_jobs_per_s": round(bare_rate, 1),
                "runs": runs,
                "jobs_created_by_nexus": created,
                "workers": WORKERS,
            },
        )

        # Launch path alone: accept with the rate parked (the bucket's one token launches
        # one run), stop, and time a restart on the same folder launching the rest.
        parked = start("nexus-preloaded", servers.PARKED_RATE, 1)
        try:
            _post(parked, "bench", runs, timeout=300).join(300)
        finally:
            parked.stop()
        resumed = start("nexus-preloaded", 0, 1)
        try:
            preloaded_rate, launched = _creation_rate(
                resumed, runs - 1, timeout=300, counted_from_start=True
            )
        finally:
            resumed.stop()
        bare_again = _bare_rate(kubeconfig, namespace, manifest, runs)
        bare_mean = (bare_rate + bare_again) / 2
        ratio = preloaded_rate / bare_mean if bare_mean else 0.0
        bench.record(
            "4",
            figures[2],
            ratio,
            ">= 0.8",
            ratio >= 0.8,
            {
                "nexus_jobs_per_s": round(preloaded_rate, 1),
                "bare_jobs_per_s_before_and_after": [round(bare_rate, 1), round(bare_again, 1)],
                "runs": runs,
                "jobs_created_after_restart": launched,
                "workers": WORKERS,
            },
        )

        configured = max(5.0, round(min(nexus_rate, bare_rate) * 0.5))
        limited = start("nexus-limited", configured, 1)
        try:
            held, created = _nexus_launch_rate(
                limited, "bench", runs, timeout=runs / configured * 3 + 60
            )
        finally:
            limited.stop()
        error = abs(held / configured - 1)
        bench.record(
            "4",
            figures[1],
            held / configured,
            "within 5% (0.95 .. 1.05)",
            error <= 0.05,
            {"configured_per_s": configured, "held_per_s": round(held, 2), "jobs_created": created},
        )
    finally:
        kube.delete_namespace(namespace)
        kube.close()
