"""Target 4: launching Jobs on a real API server (the control plane of scripts/testenv).

Figures against what the API server itself can take, measured in the same run:

* limiter off (rate 0 = unlimited): Jobs created per second by nexus's launch pipeline
  over Jobs created per second by a bare loop of the same ``kubernetes`` client creating
  the same Jobs (the manifest nexus stored for a run, renamed) with the same concurrency
  as nexus's launch workers (goal >= 0.8);
* the same, with the runs accepted *before* the timed window (launch path alone): a
  first nexus accepts them with its launch rate parked and stops; a second one on the
  same data folder and instance id finds them at start-up and launches them with the
  limiter off. The bare loop gets its manifests for free, so this is the like-for-like
  figure (goal >= 0.9, issue 10); the first one also charges nexus for accepting the
  runs over HTTP while it launches them, on the same 2 cores as the API server;
* the API server's CPU per Job in those two windows, nexus's over the bare loop's (goal
  <= 1.0: no reads or patches beyond the create), with nexus's own count of its API
  requests per Job beside it, and each process's CPU per Job;
* limiter on at a rate below that: the rate nexus holds over the configured one
  (goal within 5%).

nexus's rate is read from its own count of the API server's answers
(``nexus_kube_api_responses_total{verb="create",code="201"}`` on /metrics), sampled while
it runs, from the first Job to the last. Without a running control plane (or without the
Kubernetes executor) the figures are filed as "not measured" with the reason.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench import load, servers
from bench.procstat import CpuWindow, server_pids
from bench.profiling import summarise

RUNS = 600
WORKERS = 16
CREATES = re.compile(
    r'^nexus_kube_api_responses_total\{(?=[^}]*verb="create")(?=[^}]*code="201")'
    r"[^}]*\} (\S+)$",
    re.M,
)
REQUESTS = re.compile(r"^nexus_kube_api_responses_total\{[^}]*\} (\S+)$", re.M)


def _api_counts(server: servers.Server) -> tuple[int, int]:
    """Jobs created (201s) and every answer of the API server so far, from /metrics."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return (
        int(sum(float(v) for v in CREATES.findall(text))),
        int(sum(float(v) for v in REQUESTS.findall(text))),
    )


def _launched(server: servers.Server) -> int:
    """Jobs this process created, from its launch lanes (``GET shards``): a cheap read
    to sample every 50 ms, where rendering /metrics costs nexus's event loop ~16 ms (a
    profile showed a fifth of its CPU going to the bench's own scraping)."""
    with urllib.request.urlopen(server.url + "/algorithm/v1/shards", timeout=10) as answer:
        return sum(lane["launched"] for lane in json.loads(answer.read()))


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


class Window:
    """What a launch window cost: CPU per Job of each process, API requests per Job.

    The window ends with the last create. The work the Jobs cause after it (the Job
    controller making their Pods, KWOK's status changes) is not waited for, so part of
    it can land in the next window: the API requests per Job, counted by nexus's own
    client, are the steadier figure."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.cpu = CpuWindow(groups)
        self.jobs = self.requests = 0

    def detail(self) -> dict[str, object]:
        return {
            "cpu_ms_per_job": self.cpu.ms_per(self.jobs),
            "api_requests_per_job": round(self.requests / max(1, self.jobs), 3),
            "jobs_in_window": self.jobs,
        }


def _creation_rate(
    server: servers.Server,
    jobs: int,
    timeout: float,
    counted_from_start: bool = False,
    window: Window | None = None,
) -> tuple[float, int]:
    """Jobs/s ``server`` creates between the first sample that saw a Job and its
    ``jobs``-th, and how many it created. ``counted_from_start``: count every Job since the
    process started (one that launches at start-up may have begun before it answered).
    ``window``, if given, gets the CPU and the API requests spent between those samples."""
    base = 0 if counted_from_start else _launched(server)
    samples: list[tuple[float, int]] = []
    requests_at_first = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launched = _launched(server) - base
        if window is not None and launched >= 1 and not any(n for _, n in samples):
            window.cpu.start()  # at the first sample that sees a Job
            requests_at_first = _api_counts(server)[1]
        samples.append((time.monotonic(), launched))
        if launched >= jobs:
            break
        time.sleep(0.05)
    first = next((sample for sample in samples if sample[1] >= 1), None)
    last = samples[-1]
    if window is not None and first is not None:
        window.cpu.stop()
        window.jobs = last[1] - first[1]
        window.requests = _api_counts(server)[1] - requests_at_first
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


def bare_manifest(job: dict) -> dict:
    """The Job nexus created, as a bare loop creates it again under other names: without
    what the API server added (its selector, the controller's labels)."""
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "labels": job["metadata"].get("labels", {}),
            "annotations": job["metadata"].get("annotations", {}),
        },
        "spec": {k: v for k, v in job["spec"].items() if k not in ("selector", "manualSelector")},
    }
    labels = manifest["spec"]["template"]["metadata"].setdefault("labels", {})
    for key in list(labels):
        if key.startswith(
            (
                "controller-uid",
                "batch.kubernetes.io/controller-uid",
                "job-name",
                "batch.kubernetes.io/job-name",
            )
        ):
            del labels[key]
    return manifest


def _bare_rate(
    kubeconfig: str, namespace: str, manifest: dict, runs: int, window: Window | None = None
) -> float:
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

    if window is not None:
        window.cpu.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(create, range(runs)))
    seconds = time.perf_counter() - start
    if window is not None:
        window.cpu.stop()
        window.jobs = window.requests = runs  # one create per Job, nothing else
    api.close()
    return runs / seconds


def test_4_launch_rate(bench, tmp_path):
    reason = servers.kube_unavailable()
    figures = (
        "Jobs/s nexus scheduler / bare kubernetes-client loop (limiter off)",
        "launch rate nexus / configured rate (limiter on)",
        "Jobs/s nexus / bare loop, runs accepted before the window (limiter off)",
        "API-server CPU per Job, nexus launching / bare loop (limiter off)",
    )
    # The launch path alone: target 4 asked 0.8, issue 10 raised it to 0.9.
    goals = (">= 0.8", "within 5%", ">= 0.9", "<= 1.0")
    if reason:
        for figure, goal in zip(figures, goals, strict=True):
            bench.record("4", figure, None, goal, None, note=f"not measured: {reason}")
        pytest.skip(reason)

    cp, kt = servers.integration_helpers()

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

        def start(
            name: str, rate: float | str, burst: int, profile: Path | None = None
        ) -> servers.Server:
            env = kt.kube_env(kubeconfig, namespace, shard_dir)
            env.update(
                {
                    "NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": str(WORKERS),
                    "NEXUS__KUBERNETES__CLIENT_QPS": "10000",
                    "NEXUS__KUBERNETES__CLIENT_BURST": "10000",
                    "NEXUS__SUPERVISOR__RECONCILE_INTERVAL": "60s",
                }
            )
            profiled: dict[str, Any] = {}
            if profile is not None:
                args = ["--profile", str(profile), "--profiler", "cprofile"]
                profiled = {"launcher": "bench.serve", "extra_args": args}
            server = servers.nexus(
                tmp_path / name, name=name, rate=str(rate), extra=env, **profiled
            )
            server.env["NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST"] = str(burst)
            return server.start(timeout=120)

        unlimited = start("nexus-unlimited", 0, 1)
        try:
            nexus_rate, created = _nexus_launch_rate(unlimited, "bench", runs, timeout=300)
            manifest = bare_manifest(kube.jobs(namespace)[0])
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
        nexus_window = Window({"nexus": [resumed.pid], **server_pids()})
        try:
            preloaded_rate, launched = _creation_rate(
                resumed, runs - 1, timeout=300, counted_from_start=True, window=nexus_window
            )
        finally:
            resumed.stop()
        bare_window = Window({"bare loop": [os.getpid()], **server_pids()})
        bare_again = _bare_rate(kubeconfig, namespace, manifest, runs, window=bare_window)
        bare_mean = (bare_rate + bare_again) / 2
        ratio = preloaded_rate / bare_mean if bare_mean else 0.0
        # The API server's own work per Job: what nexus costs the cluster beyond the
        # create itself (its Job watch, reads, patches). Both windows are the launch path
        # alone, the bare one measured just after nexus's.
        api_nexus = nexus_window.cpu.ms_per(nexus_window.jobs)["api server"]
        api_bare = bare_window.cpu.ms_per(bare_window.jobs)["api server"]
        api_ratio = api_nexus / api_bare if api_bare else 0.0
        bench.record(
            "4",
            figures[3],
            api_ratio,
            "<= 1.0",
            api_ratio <= 1.0,
            {
                "api_server_cpu_ms_per_job": {"nexus": api_nexus, "bare": api_bare},
                "api_requests_per_job": {
                    "nexus": nexus_window.detail()["api_requests_per_job"],
                    "bare": 1.0,
                },
                "note": "nexus's requests per Job are counted by its own client metrics",
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
        profile: dict[str, Any] = {}
        # Where the launch path's time goes: the same again, profiled, after the other
        # figures (its Jobs and Pods would load the API server under them).
        if ratio < 0.9:
            out = Path(os.environ.get("BENCH_PROFILE_DIR", tmp_path)) / "launch-path.prof.txt"
            half = max(50, runs // 2)
            parked = start("nexus-profiled", servers.PARKED_RATE, 1)
            try:
                _post(parked, "bench", half, timeout=300).join(300)
            finally:
                parked.stop()
            resumed = start("nexus-profiled", 0, 1, profile=out)
            try:
                _creation_rate(resumed, half - 1, timeout=300, counted_from_start=True)
            finally:
                resumed.stop()
            summary = summarise(out.with_suffix(".json"))
            profile = {
                "profile_file": str(out),
                "areas_pct": summary["areas_pct"],
                "top_self_pct": summary["top_self_pct"],
            }
        bench.record(
            "4",
            figures[2],
            ratio,
            goals[2],
            ratio >= 0.9,
            {
                "nexus_jobs_per_s": round(preloaded_rate, 1),
                "bare_jobs_per_s_before_and_after": [round(bare_rate, 1), round(bare_again, 1)],
                "runs": runs,
                "jobs_created_after_restart": launched,
                "workers": WORKERS,
                "nexus": nexus_window.detail(),
                "bare": bare_window.detail(),
                **profile,
            },
        )
    finally:
        kube.delete_namespace(namespace)
        kube.close()
