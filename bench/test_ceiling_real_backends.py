"""Target 10: nexus against the bare ceilings of its accept and completion paths.

On the real servers of scripts/testenv (Cassandra, SeaweedFS's S3), at 64 in flight, rounds
interleaved: nexus (``--role all``, Cassandra + S3) driven over HTTP by bench.load, and
bench.ceiling, a process of its own doing only the durable work with the raw drivers.

* accept: nexus's ``POST /algorithm/v1/run`` (the 2 KB body of target 1) against the
  create batch + payload PUT of one accept.
* completion: nexus's ``POST /algorithm/v1/complete/...`` against the compare-and-set
  RUNNING -> COMPLETED alone, each on RUNNING runs written beforehand (not timed).

Each round reads the CPU time of every process from /proc/<pid>/stat (utime + stime)
before and after: nexus or the bare loop, Cassandra (java), SeaweedFS (weed), the
Kubernetes API servers (idle here: their figure says what else ran on the machine) and
the load driver (this process). CPU per run is the headline (the steadiest figure on a
shared machine), then the rate ratio. A missed goal writes a profile of nexus on that path
to bench/profiles/.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench import load, servers
from bench.procstat import cpu_seconds, server_pids
from bench.profiling import profile_accept
from bench.test_accept_real_backends import REQUEST, _missing

sys.path.insert(0, str(servers.REPO / "tests"))
from contract import servers as testenv

CONCURRENCY = 64
COMPLETE_BODY = json.dumps({"resultUri": "s3://nexus-results/results/algorithm=behave/x"}).encode()


class BareLoop:
    """bench.ceiling as a child process, driven one command at a time."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
        full.update(env)
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.ceiling"],
            cwd=servers.REPO,
            env=full,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.setup = self._read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"bench.ceiling exited ({self.process.wait(10)}); see {self.log.name}"
            )
        return json.loads(line)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self.process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


class Rounds:
    """Per side: each round's rate, latencies and CPU ms per run of every process."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.rounds: dict[str, list[dict[str, Any]]] = {"nexus": [], "bare": []}

    def measure(self, side: str, own_pid: int, run) -> dict[str, Any]:
        procs = {side: [own_pid], **self.pids, "load driver": [os.getpid()]}
        before = {k: cpu_seconds(v) for k, v in procs.items()}
        result = run()
        after = {k: cpu_seconds(v) for k, v in procs.items()}
        ok = max(1, result["ok"])
        result["cpu_ms_per_run"] = {k: round((after[k] - before[k]) * 1e3 / ok, 3) for k in procs}
        self.rounds[side].append(result)
        return result

    def median(self, side: str, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds[side])

    def cpu(self, side: str) -> dict[str, float]:
        names = self.rounds[side][0]["cpu_ms_per_run"]
        return {
            k: round(statistics.median(r["cpu_ms_per_run"][k] for r in self.rounds[side]), 3)
            for k in names
        }

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for side in ("nexus", "bare"):
            out[f"{side}_per_s"] = round(self.median(side, "rate"), 1)
            out[f"rounds_{side}"] = [round(r["rate"]) for r in self.rounds[side]]
            out[f"{side}_p50_p99_ms"] = [self.median(side, "p50_ms"), self.median(side, "p99_ms")]
            out[f"{side}_errors"] = sum(r["errors"] for r in self.rounds[side])
            out[f"{side}_cpu_ms_per_run"] = self.cpu(side)
            last = self.rounds[side][-1]
            if last.get("statuses") or last.get("error_sample"):
                out[f"{side}_last_round"] = last.get("statuses") or last["error_sample"]
        return out


def _http(server: servers.Server, request: load.RequestSource, seconds: float, total: int):
    def run() -> dict[str, Any]:
        result = load.closed_loop(
            server.host,
            server.port,
            request,
            connections=CONCURRENCY,
            total=total,
            duration=seconds,
        )
        summary = result.summary()
        summary["statuses"] = result.statuses
        return summary

    return run


def _completions(algorithm: str, ids: list[str]) -> list[bytes]:
    return [
        load.build_request(
            "POST",
            f"/algorithm/v1/complete/{algorithm}/requests/{run_id}",
            COMPLETE_BODY,
            authorization=None,
        )
        for run_id in ids
    ]


def _accept_rounds(
    rounds: Rounds, bare: BareLoop, nexus: servers.Server, count: int, seconds: float
) -> None:
    bare.call("accept", seconds=1, concurrency=CONCURRENCY)  # warm-up
    for _ in range(count):
        rounds.measure(
            "bare", bare.pid, lambda: bare.call("accept", seconds=seconds, concurrency=CONCURRENCY)
        )
        rounds.measure("nexus", nexus.pid, _http(nexus, REQUEST, seconds, 1_000_000))


def _completion_rounds(
    rounds: Rounds, bare: BareLoop, nexus: servers.Server, count: int, seconds: float
) -> dict[str, float]:
    """Each round completes RUNNING runs written just before it (not timed), as many as
    the last rate seen says a round needs: a round that runs out of runs ends early."""
    algorithm = bare.setup["algorithm"]
    warm = bare.call("prepare", count=300, concurrency=CONCURRENCY)["ids"]
    http = _http(nexus, _completions(algorithm, warm[:150]).__getitem__, 5, 150)()
    local = bare.call("complete", ids=warm[150:], seconds=5, concurrency=CONCURRENCY)
    seen = {"nexus": http["rate"], "bare": local["rate"]}
    for _ in range(count):
        for side in ("bare", "nexus"):
            wanted = int(seen[side] * seconds * 1.25) + 100
            ids = bare.call("prepare", count=wanted, concurrency=CONCURRENCY)["ids"]
            if side == "bare":
                run = functools.partial(
                    bare.call, "complete", ids=ids, seconds=seconds, concurrency=CONCURRENCY
                )
                result = rounds.measure("bare", bare.pid, run)
            else:
                requests = _completions(algorithm, ids)
                run = _http(nexus, requests.__getitem__, seconds, len(requests))
                result = rounds.measure("nexus", nexus.pid, run)
            seen[side] = max(seen[side], result["rate"])
    return seen


def _profile(
    name: str, data_dir: Path, env: dict[str, str], requests: load.RequestSource, **kwargs: Any
) -> dict[str, Any]:
    out = (
        Path(os.environ.get("BENCH_PROFILE_DIR", data_dir))
        / f"ceiling-{name}-cassandra-s3.prof.txt"
    )
    summary = profile_accept(
        data_dir / f"nexus-profiled-{name}", out, requests, extra_env=env, **kwargs
    )
    keys = (
        "areas_pct",
        "top_self_pct",
        "profile_file",
        "thread_cpu_us_per_request",
        "profiled_rate",
    )
    return {k: summary[k] for k in keys}


def test_10_ceilings_cassandra_s3(bench, tmp_path):
    reason = _missing()
    figures = (
        "CPU ms per accept, nexus process / bare-loop process (Cassandra + S3)",
        "accepts/s nexus / bare loop (Cassandra + S3, 64 in flight)",
        "completions/s nexus (HTTP) / bare compare-and-set loop (Cassandra)",
        "CPU ms per completion, nexus process / bare-loop process (Cassandra)",
    )
    if reason:
        for figure in figures:
            bench.record("10", figure, None, "-", None, note=f"not measured: {reason}")
        pytest.skip(reason)
    keyspace, prefix = f"bench_{uuid.uuid4().hex[:10]}", f"bench-{uuid.uuid4().hex[:10]}"
    env = {**testenv.cassandra_settings_env(keyspace), **testenv.s3_settings_env(prefix)}
    # Its lease outlives the bench: the profiled nexus started after it must not take
    # over the runs it accepted (a sweep of thousands of runs in the profile).
    nexus = servers.nexus(
        tmp_path / "nexus",
        extra={**env, "NEXUS__SUPERVISOR__LEASE_TTL": "24h"},
        name="nexus-ceiling",
    )
    bare: BareLoop | None = None
    seconds = bench.seconds(6.0)
    count = 2 if bench.quick else 3
    accepts, completions = Rounds(server_pids()), Rounds(server_pids())
    profiles: dict[str, Any] = {}
    try:
        nexus.start(timeout=180)
        load.closed_loop(
            nexus.host, nexus.port, REQUEST, connections=CONCURRENCY, total=1_000, duration=2
        )
        bare = BareLoop(nexus.env, tmp_path / "ceiling.log")
        copied = bare.setup
        _accept_rounds(accepts, bare, nexus, count, seconds)
        seen = _completion_rounds(completions, bare, nexus, count, seconds)
        nexus.stop()
        # A missed goal: where nexus's time goes on that path (a profiled nexus, alone).
        profile_seconds = bench.seconds(5.0)
        if accepts.cpu("nexus")["nexus"] > 1.5 * accepts.cpu("bare")["bare"] or (
            accepts.median("nexus", "rate") < 0.7 * accepts.median("bare", "rate")
        ):
            profiles["accept"] = _profile("accept", tmp_path, env, REQUEST, seconds=profile_seconds)
        if completions.median("nexus", "rate") < 0.7 * completions.median("bare", "rate"):
            warm = int(seen["nexus"] * 2)
            ids = bare.call(
                "prepare", count=warm + int(seen["nexus"] * profile_seconds * 1.25) + 100
            )
            requests = _completions(copied["algorithm"], ids["ids"])
            profiles["completion"] = _profile(
                "completion",
                tmp_path,
                env,
                requests[warm:].__getitem__,
                warmup=requests[:warm].__getitem__,
                warmup_total=warm,
                total=len(requests) - warm,
                seconds=profile_seconds,
            )
    finally:
        if bare is not None:
            bare.stop()
        nexus.stop()
        testenv.drop_keyspace(keyspace)
        testenv.delete_prefix(prefix)

    common = {"rounds": count, "seconds_per_round": seconds, "in_flight": CONCURRENCY}
    accept_detail = {
        **accepts.detail(),
        **common,
        "bare_copies": copied,
        **profiles.get("accept", {}),
    }
    complete_detail = {**completions.detail(), **common, **profiles.get("completion", {})}
    cpu_ratio = accepts.cpu("nexus")["nexus"] / accepts.cpu("bare")["bare"]
    rate_ratio = accepts.median("nexus", "rate") / accepts.median("bare", "rate")
    bench.record("10", figures[0], cpu_ratio, "<= 1.5", cpu_ratio <= 1.5, accept_detail)
    bench.record("10", figures[1], rate_ratio, ">= 0.7", rate_ratio >= 0.7, {"see": figures[0]})
    c_rate = completions.median("nexus", "rate") / completions.median("bare", "rate")
    c_cpu = completions.cpu("nexus")["nexus"] / completions.cpu("bare")["bare"]
    bench.record("10", figures[2], c_rate, ">= 0.7", c_rate >= 0.7, complete_detail)
    bench.record(
        "10",
        figures[3],
        c_cpu,
        "reported (no goal)",
        None,
        {"see": figures[2]},
        note="reported: the issue sets a rate goal only for completions",
    )
