"""Target 2: accepting runs with the production backends, Cassandra and S3.

The servers are those of scripts/testenv (Cassandra 5 and SeaweedFS's S3, on loopback),
found through the NEXUS_TEST_* variables that ``scripts/testenv env`` prints. The same
2 KB request as target 1 goes to nexus and to the bare Sanic endpoint, interleaved; the
figure is the ratio of rates, with p50/p99 of each and where nexus's time goes (CPU per
request by thread, and a profile of the event loop). Without the servers the figure is
filed as "not measured" with the reason.
"""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from pathlib import Path

import pytest

from bench import load, servers
from bench.profiling import profile_accept

sys.path.insert(0, str(servers.REPO / "tests"))
from contract import servers as testenv

REQUEST = load.build_request(
    "POST", f"/algorithm/v1/run/{servers.ALGORITHM}", servers.payload_body(2048)
)


def _missing() -> str:
    names = testenv.CASSANDRA_VARS + testenv.S3_VARS
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        return (
            f"{', '.join(missing)} not set: run `scripts/testenv up cassandra seaweedfs` "
            'and `eval "$(scripts/testenv env)"` (scripts/bench does the latter)'
        )
    return ""


def test_2_accept_rate_cassandra_s3(bench, benchmark, baseline_server, tmp_path):
    figure = "accepts/s nexus (Cassandra + S3) / req/s bare Sanic, 2 KB body"
    reason = _missing()
    if reason:
        bench.record("2", figure, None, "measured (no goal)", None, note=f"not measured: {reason}")
        pytest.skip(reason)
    keyspace, prefix = f"bench_{uuid.uuid4().hex[:10]}", f"bench-{uuid.uuid4().hex[:10]}"
    env = {**testenv.cassandra_settings_env(keyspace), **testenv.s3_settings_env(prefix)}
    nexus = servers.nexus(tmp_path / "nexus", extra=env, name="nexus-cassandra-s3")
    try:
        try:
            nexus.start(timeout=180)
        except RuntimeError as exc:
            note = f"not measured: nexus did not start on Cassandra + S3: {str(exc)[-300:]}"
            bench.record("2", figure, None, "measured (no goal)", None, note=note)
            pytest.skip(note)
        seconds = bench.seconds(8.0)
        for server in (baseline_server, nexus):
            load.closed_loop(
                server.host, server.port, REQUEST, connections=64, total=1_000, duration=2
            )
        rounds: dict[str, list[load.LoadResult]] = {"bare": [], "nexus": []}
        cpu: list[dict[str, float]] = []

        def one_round() -> None:
            for name, server in (("bare", baseline_server), ("nexus", nexus)):
                before = server.thread_cpu()
                result = load.closed_loop(
                    server.host,
                    server.port,
                    REQUEST,
                    connections=64,
                    total=1_000_000,
                    duration=seconds,
                )
                after = server.thread_cpu()
                rounds[name].append(result)
                if name == "nexus":
                    cpu.append(
                        {
                            k: (after[k] - before.get(k, 0.0)) / max(1, result.ok) * 1e6
                            for k in after
                        }
                    )

        benchmark.group = "accept path, Cassandra + S3 (one round = bare then nexus)"
        benchmark.pedantic(one_round, rounds=2 if bench.quick else 3, iterations=1)
        nexus.stop()
        profile = profile_accept(
            tmp_path / "nexus-profiled",
            Path(os.environ.get("BENCH_PROFILE_DIR", tmp_path)) / "accept-cassandra-s3.prof.txt",
            REQUEST,
            seconds=bench.seconds(8.0),
            extra_env=env,
        )
    finally:
        nexus.stop()
        testenv.drop_keyspace(keyspace)
        testenv.delete_prefix(prefix)

    def med(name: str, q: float) -> float:
        return round(statistics.median(r.percentile(q) for r in rounds[name]) * 1e3, 1)

    bare = statistics.median(r.rate for r in rounds["bare"])
    rate = statistics.median(r.rate for r in rounds["nexus"])
    keys = {k for sample in cpu for k in sample}
    detail = {
        "nexus_accepts_per_s": round(rate, 1),
        "bare_req_per_s": round(bare, 1),
        "nexus_p50_p99_ms": [med("nexus", 0.5), med("nexus", 0.99)],
        "bare_p50_p99_ms": [med("bare", 0.5), med("bare", 0.99)],
        "nexus_errors": sum(r.errors for r in rounds["nexus"]),
        "nexus_statuses": rounds["nexus"][-1].statuses,
        "server_cpu_us_per_request": {
            k: round(statistics.median(s.get(k, 0.0) for s in cpu)) for k in sorted(keys)
        },
        **{k: profile[k] for k in ("areas_pct", "top_self_pct", "profile_file")},
    }
    benchmark.extra_info.update({k: v for k, v in detail.items() if "pct" not in k})
    bench.record(
        "2",
        figure,
        rate / bare,
        "measured (no goal)",
        None,
        detail,
        note="informational: the issue sets no ratio for this one",
    )
