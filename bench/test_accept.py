"""Targets 1, 3, 6 and 7: accepting runs over HTTP on the embedded defaults.

Every figure is nexus against a baseline measured in the same run, interleaved round by
round (baseline, nexus, baseline, nexus, ...) so that the machine's noise hits both:

1. durable accepts/s of ``POST /algorithm/v1/run/behave`` (2 KB body) over the req/s of a
   bare Sanic endpoint that only decodes the same body and answers 202 (goal >= 0.5);
3. p99 latency at a fixed (open-loop) rate of half nexus's maximum, over the bare
   endpoint's p99 at that same rate (goal <= 2, issue 10);
6. RSS of a nexus process holding 100,000 queued runs (goal <= 200 MB);
7. accepts/s of two nexus processes sharing one port (SO_REUSEPORT) over one process
   (goal >= 1.5 where the machine leaves room).

The accept servers keep accepted runs queued (launch rate ~0, see bench.servers) so the
executor does not start thousands of processes; the runs are real, not dry runs.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench import load, servers
from bench.profiling import profile_accept

CONNECTIONS = 64
PATH = f"/algorithm/v1/run/{servers.ALGORITHM}"
REQUEST = load.build_request("POST", PATH, servers.payload_body(2048))
# Shared between tests of this module: nexus's maximum rate, measured by target 1.
_measured: dict[str, float] = {}


def _closed(
    server: servers.Server, seconds: float, connections: int = CONNECTIONS, total: int = 1_000_000
) -> tuple[load.LoadResult, dict[str, float]]:
    cpu0 = server.thread_cpu()
    result = load.closed_loop(
        server.host, server.port, REQUEST, connections=connections, total=total, duration=seconds
    )
    cpu1 = server.thread_cpu()
    per_request = {k: (cpu1[k] - cpu0.get(k, 0.0)) / max(1, result.ok) * 1e6 for k in cpu1}
    return result, per_request


def _median_cpu(samples: list[dict[str, float]]) -> dict[str, int]:
    keys = {k for sample in samples for k in sample}
    return {
        k: round(statistics.median(s.get(k, 0.0) for s in samples))
        for k in sorted(keys)
        if statistics.median(s.get(k, 0.0) for s in samples) >= 1
    }


def test_1_accept_rate_vs_bare_sanic(bench, benchmark, baseline_server, nexus_server, raw_server):
    seconds = bench.seconds(6.0)
    # The driver's own ceiling: a canned-answer server costs almost nothing per request.
    ceiling, _ = _closed(raw_server, bench.seconds(4.0))
    for server in (baseline_server, nexus_server):  # warm up both
        _closed(server, 1.0, total=2_000)

    rounds: dict[str, list[load.LoadResult]] = {"bare": [], "nexus": []}
    cpu: dict[str, list[dict[str, float]]] = {"bare": [], "nexus": []}

    def one_round() -> None:
        for name, server in (("bare", baseline_server), ("nexus", nexus_server)):
            result, per_request = _closed(server, seconds)
            assert result.ok, f"{name}: no request succeeded: {result.statuses}"
            rounds[name].append(result)
            cpu[name].append(per_request)

    benchmark.group = "accept path over HTTP (one round = bare then nexus)"
    benchmark.pedantic(one_round, rounds=2 if bench.quick else 5, iterations=1)
    bare = statistics.median(r.rate for r in rounds["bare"])
    nexus = statistics.median(r.rate for r in rounds["nexus"])
    _measured["nexus_max_rate"] = nexus
    _measured["bare_max_rate"] = bare
    errors = sum(r.errors for r in rounds["nexus"])
    detail = {
        "nexus_accepts_per_s": round(nexus, 1),
        "bare_req_per_s": round(bare, 1),
        "rounds_nexus": [round(r.rate) for r in rounds["nexus"]],
        "rounds_bare": [round(r.rate) for r in rounds["bare"]],
        "nexus_errors": errors,
        "nexus_p50_p99_ms": [
            round(statistics.median(r.percentile(q) for r in rounds["nexus"]) * 1e3, 1)
            for q in (0.5, 0.99)
        ],
        "bare_p50_p99_ms": [
            round(statistics.median(r.percentile(q) for r in rounds["bare"]) * 1e3, 1)
            for q in (0.5, 0.99)
        ],
        "server_cpu_us_per_request": {
            "nexus": _median_cpu(cpu["nexus"]),
            "bare": _median_cpu(cpu["bare"]),
        },
        "driver_ceiling_req_per_s": round(ceiling.rate, 1),
        "driver_cpu_share_bare": round(statistics.median(r.driver_cpu for r in rounds["bare"]), 2),
        "connections": CONNECTIONS,
        "body_bytes": len(servers.payload_body(2048)),
    }
    benchmark.extra_info.update(detail)
    bench.record(
        "1",
        "accepts/s nexus (embedded) / req/s bare Sanic, 2 KB body",
        nexus / bare,
        ">= 0.5",
        nexus / bare >= 0.5,
        detail,
    )
    assert errors == 0, f"nexus refused or failed requests: {[r.statuses for r in rounds['nexus']]}"
    # The driver was not the bottleneck: it can go far beyond the bare endpoint's rate.
    assert ceiling.rate > 1.5 * bare, (ceiling.rate, bare)


def test_1_profile_embedded(bench, tmp_path):
    """Where an embedded accept's event-loop time goes (a separate, profiled process)."""
    out = Path(os.environ.get("BENCH_PROFILE_DIR", tmp_path)) / "accept-embedded.prof.txt"
    summary = profile_accept(tmp_path / "nexus", out, REQUEST, seconds=bench.seconds(8.0))
    bench.record(
        "1",
        "profile: nexus (embedded) accept path",
        None,
        "-",
        None,
        summary,
        note="where the time goes (informational)",
    )


def test_3_p99_at_half_the_maximum_rate(bench, benchmark, baseline_server, nexus_server):
    max_rate = _measured.get("nexus_max_rate")
    if max_rate is None:
        max_rate = _closed(nexus_server, bench.seconds(4.0))[0].rate
    rate = max(10.0, 0.5 * max_rate)
    seconds = bench.seconds(10.0)
    results: dict[str, list[load.LoadResult]] = {"bare": [], "nexus": []}

    def one_round() -> None:
        for name, server in (("bare", baseline_server), ("nexus", nexus_server)):
            results[name].append(
                load.open_loop(
                    server.host,
                    server.port,
                    REQUEST,
                    rate=rate,
                    duration=seconds,
                    max_connections=256,
                )
            )

    benchmark.group = "open-loop latency at half of nexus's maximum rate"
    benchmark.pedantic(one_round, rounds=2, iterations=1)

    def pooled(name: str) -> load.LoadResult:
        merged = load.LoadResult("open", target_rate=rate)
        for r in results[name]:
            merged.latencies += r.latencies
            merged.ok += r.ok
            merged.errors += r.errors
            merged.seconds += r.seconds
        return merged

    bare, nexus = pooled("bare"), pooled("nexus")
    ratio = nexus.percentile(0.99) / bare.percentile(0.99)
    detail = {
        "rate_per_s": round(rate, 1),
        "seconds_per_round": seconds,
        "nexus_p50_p99_ms": [round(nexus.percentile(q) * 1e3, 2) for q in (0.5, 0.99)],
        "bare_p50_p99_ms": [round(bare.percentile(q) * 1e3, 2) for q in (0.5, 0.99)],
        "nexus_achieved_per_s": round(nexus.ok / nexus.seconds, 1),
        "nexus_errors": nexus.errors,
    }
    benchmark.extra_info.update(detail)
    bench.record(
        "3",
        "p99 latency nexus / bare Sanic at half nexus's max rate (open loop)",
        ratio,
        "<= 2.0",
        ratio <= 2.0,
        detail,
    )


def _metric(server: servers.Server, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_6_rss_with_100k_runs_queued(bench, tmp_path):
    runs = bench.count(100_000)
    # Embedded defaults, queue capacity included (100,000); only the launch rate is ~0.
    server = servers.nexus(tmp_path / "nexus", capacity=100_000)
    with server:
        idle = server.rss_bytes()
        result = load.closed_loop(
            server.host, server.port, REQUEST, connections=CONNECTIONS, total=runs, duration=900
        )
        after = server.rss_bytes()
        # Hold the load for longer than one pending-run sweep (reconcile-interval, 10 s).
        samples = []
        for _ in range(24):
            samples.append(server.rss_bytes())
            time.sleep(0.5)
        depth = _metric(server, "nexus_queue_depth")
        status = Path(f"/proc/{server.pid}/status").read_text()
        peak = int(next(s for s in status.splitlines() if s.startswith("VmHWM:")).split()[1]) * 1024
    steady = max(samples + [after])
    mb = 1024 * 1024
    detail = {
        "runs_posted": runs,
        "accepted": result.ok,
        "refused": result.statuses,
        "queue_depth": depth,
        "idle_rss_mb": round(idle / mb, 1),
        "rss_after_load_mb": round(after / mb, 1),
        "rss_max_over_12s_mb": round(steady / mb, 1),
        "vm_hwm_mb": round(peak / mb, 1),
        "bytes_per_queued_run": round((after - idle) / max(1, result.ok)),
    }
    bench.record(
        "6",
        f"scheduler RSS (MB) with {result.ok} runs queued",
        steady / mb,
        "<= 200 MB (at 100,000 runs)",
        steady / mb <= 200,
        detail,
        note="" if runs == 100_000 else "quick mode: fewer runs",
    )


def test_7_two_processes_sharing_a_port(bench, benchmark, tmp_path):
    seconds = bench.seconds(6.0)
    single_port, shared_port = servers.free_port(), servers.free_port()
    args = ["--reuse-port"]
    one = servers.nexus(
        tmp_path / "one",
        port=single_port,
        launcher="bench.serve",
        extra_args=args,
        name="nexus-single",
        instance="bench-single",
    )
    two = [
        servers.nexus(
            tmp_path / "two",
            port=shared_port,
            launcher="bench.serve",
            extra_args=args,
            name=f"nexus-shared-{i}",
            instance=f"bench-shared-{i}",
        )
        for i in range(2)
    ]
    rates: dict[str, list[float]] = {"one": [], "two": []}
    cpu_two: list[float] = []
    with one, two[0], two[1]:
        for server in (one, two[0]):
            _closed(server, 1.0, total=2_000)

        def one_round() -> None:
            rates["one"].append(_closed(one, seconds)[0].rate)
            before = sum(s.cpu_seconds() for s in two)
            result, _ = _closed(two[0], seconds)  # same port: the kernel spreads connections
            rates["two"].append(result.rate)
            cpu_two.append((sum(s.cpu_seconds() for s in two) - before) / result.seconds)

        benchmark.group = "scale-out: one process vs two sharing a port"
        benchmark.pedantic(one_round, rounds=2 if bench.quick else 4, iterations=1)
    ratio = statistics.median(rates["two"]) / statistics.median(rates["one"])
    detail = {
        "one_process_per_s": [round(r) for r in rates["one"]],
        "two_processes_per_s": [round(r) for r in rates["two"]],
        "cores_used_by_the_two": round(statistics.median(cpu_two), 2),
        "nproc": os.cpu_count(),
    }
    room = (os.cpu_count() or 1) >= 4
    bench.record(
        "7",
        "accepts/s two processes (SO_REUSEPORT) / one process",
        ratio,
        ">= 1.5 where the machine leaves room",
        ratio >= 1.5 if room else None,
        detail,
        note=""
        if room
        else f"{os.cpu_count()} cores shared by the load driver and both servers: "
        "no room for a second process; reported, not judged",
    )
