"""Issue 13: the crate's RunQueue — fair share between tenants, and launch threads.

Two figures:

* **Fair share.** Tenant A holds 50,000 queued runs; tenant B submits one run a second.
  The launcher is paced: it takes one run from the lane every ``1 / RATE`` seconds, as
  nexus's launch workers do when the token bucket is the bottleneck (and with 50,000 runs
  queued it always is). The figure is B's mean queue wait with A's backlog over B's mean
  wait with A absent, the same paced launcher in both, so the ratio isolates the queue's
  discipline from the rate limit (goal: within 2x). With A absent a run of B waits for
  the launcher's next tick, half a tick on average. The same simulation with A and B
  sharing one tenant (one FIFO, the queue without fair share) is reported beside it.
  Time is virtual (the crate's ``ManualClock``): B's runs arrive at a random phase in
  each second, the waits are the queue's own ``Dequeued.waited``, and 600 virtual
  seconds take well under a second of real time.
* **Launch threads.** Threads that each block in ``RunQueue.pop_wait`` (the GIL
  released) and create the popped run's Job through the ``kubernetes`` client against
  the real API server of scripts/testenv: Jobs/s with 8 threads over Jobs/s with one,
  rounds interleaved (reported, no target: on 2 cores shared with the API server the
  server's CPU is the limit). The Jobs are created suspended, so no Pod is made and
  the API server's work per Job is the create alone.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid

import pytest

from bench import servers
from nexus._rust_queue import ManualClock, RunQueue

BACKLOG = 50_000
RATE = 100.0  # launches per second of the paced launcher
SECONDS = 600  # virtual seconds of B submitting one run per second
LANE = "shard-a"


def _b_waits(backlog: int, b_tenant: str, seconds: int, seed: int = 13) -> list[float]:
    """B's queue waits over ``seconds`` virtual seconds, A holding ``backlog`` runs."""
    clock = ManualClock()
    queue = RunQueue(clock=clock)
    queue.configure_lane(LANE, backlog + seconds + 1)
    for i in range(backlog):
        queue.push(LANE, "team-a", ("a", i))
    rng = random.Random(seed)
    arrivals = [second + rng.random() for second in range(seconds)]
    waits: list[float] = []
    next_arrival = 0
    for tick in range(1, int(seconds * RATE) + 1):
        at = tick / RATE
        while next_arrival < len(arrivals) and arrivals[next_arrival] <= at:
            clock.advance(max(0.0, arrivals[next_arrival] - clock.now()))
            queue.push(LANE, b_tenant, ("b", next_arrival))
            next_arrival += 1
        clock.advance(max(0.0, at - clock.now()))
        taken = queue.pop(LANE)
        if taken is not None and taken.item[0] == "b":
            waits.append(taken.waited)
    return waits


def test_13_fair_share(bench):
    seconds = 60 if bench.quick else SECONDS
    alone = _b_waits(0, "team-b", seconds)
    shared = _b_waits(BACKLOG, "team-b", seconds)
    fifo = _b_waits(BACKLOG, "team-a", seconds)  # one tenant: the queue without fair share
    mean_alone, mean_shared = statistics.fmean(alone), statistics.fmean(shared)
    ratio = mean_shared / mean_alone
    bench.record(
        "13",
        "tenant B's mean queue wait with A's 50,000 queued / with A absent (paced launcher)",
        ratio,
        "<= 2.0",
        ratio <= 2.0,
        {
            "b_runs_launched": [len(alone), len(shared), len(fifo)],
            "b_mean_wait_ms_alone": round(mean_alone * 1e3, 2),
            "b_mean_wait_ms_with_a": round(mean_shared * 1e3, 2),
            "b_max_wait_ms_with_a": round(max(shared) * 1e3, 2),
            "b_mean_wait_s_one_fifo": round(statistics.fmean(fifo), 1) if fifo else None,
            "b_max_wait_s_one_fifo": round(max(fifo), 1) if fifo else None,
            "b_runs_launched_one_fifo": len(fifo),
            "launcher_rate_per_s": RATE,
            "virtual_seconds": seconds,
        },
    )


def _launch_round(batch, namespace: str, threads: int, runs: int, prefix: str) -> float:
    """Jobs/s of ``threads`` threads popping ``runs`` queued runs and creating their Jobs."""
    queue = RunQueue()
    queue.configure_lane(LANE, runs)
    for i in range(runs):
        queue.push(LANE, "bench", i)
    errors: list[BaseException] = []

    def work() -> None:
        while (taken := queue.pop_wait(LANE, 0.2)) is not None:
            name = f"{prefix}-{taken.item}"
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "suspend": True,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "algorithm", "image": "bench:never-run"}],
                        }
                    },
                },
            }
            try:
                batch.create_namespaced_job(namespace, job)
            except Exception as exc:  # noqa: BLE001 - counted and reported by the caller
                errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)
    seconds = time.perf_counter() - start
    if errors:
        raise AssertionError(f"{len(errors)} Job creates failed, first: {errors[0]!r}")
    return runs / seconds


def test_13_launch_threads(bench):
    figure = "Jobs/s, 8 launch threads / 1, popping the crate's RunQueue (real API server)"
    reason = servers.kube_unavailable()
    if reason:
        bench.record("13", figure, None, "reported", None, note=f"not measured: {reason}")
        pytest.skip(reason)
    from kubernetes import client, config

    kubeconfig = os.environ["NEXUS_TEST_KUBECONFIG"]
    api = config.new_client_from_config(config_file=kubeconfig)
    api.configuration.connection_pool_maxsize = 8
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 8
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    namespace = f"nexus-bench-threads-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    runs = 40 if bench.quick else 300
    rates: dict[int, list[float]] = {1: [], 8: []}
    try:
        for round_ in range(1 if bench.quick else 3):
            for threads in rates:
                prefix = f"t{threads}-r{round_}"
                rates[threads].append(_launch_round(batch, namespace, threads, runs, prefix))
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")
        api.close()
    one, eight = statistics.median(rates[1]), statistics.median(rates[8])
    bench.record(
        "13",
        figure,
        eight / one,
        "reported (> 1 means the threads launch in parallel)",
        None,
        {
            "jobs_per_s_1_thread": [round(r, 1) for r in rates[1]],
            "jobs_per_s_8_threads": [round(r, 1) for r in rates[8]],
            "runs_per_round": runs,
            "cores": os.cpu_count(),
        },
        note="reported, no target",
    )
