"""Where the accept path's time goes: a profiled nexus under load, summarised.

:func:`profile_accept` starts nexus through ``bench.serve --profile`` (cProfile timed by
the main thread's CPU clock: the event loop's own work, without the time it waits for
the GIL), drives it with the closed-loop load for a while, stops it and returns the
summary: CPU seconds per area of the code (nexus api/core/backends, Sanic, asyncio, ...)
and the functions with the most self time. The full text profile is kept next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import load, servers

AREAS = (
    ("/nexus/api/", "nexus.api"),
    ("/nexus/core/", "nexus.core"),
    ("/nexus/backends/store/", "nexus store backend"),
    ("/nexus/backends/buffer/", "nexus buffer backend"),
    ("/nexus/backends/", "nexus other backends"),
    ("/nexus/", "nexus (other)"),
    ("/sanic/", "sanic"),
    ("/sanic_routing/", "sanic"),
    ("/asyncio/", "asyncio"),
    ("/msgspec/", "msgspec"),
)


def area(path: str) -> str:
    for fragment, name in AREAS:
        if fragment in path:
            return name
    if path == "~":
        return "builtins (C calls)"
    if "/" not in path:  # code Sanic compiles at start-up (its "touchup"): http1, send, ...
        return "sanic"
    if "/lib/python3" in path and "site-packages" not in path:
        return "python stdlib"
    return "other python"


def summarise(profile_json: Path, top: int = 15) -> dict[str, Any]:
    data = json.loads(profile_json.read_text())
    total = data["total"] or 1.0
    areas: dict[str, float] = {}
    for row in data["rows"]:
        name = area(row["path"])
        areas[name] = areas.get(name, 0.0) + row["self"]
    nexus = sum(v for k, v in areas.items() if k.startswith("nexus"))
    return {
        "main_thread_cpu_s": round(total, 3),
        "nexus_code_self_pct": round(100 * nexus / total, 1),
        "areas_pct": {
            k: round(100 * v / total, 1) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])
        },
        "top_self_pct": [
            (row["function"], round(100 * row["self"] / total, 1)) for row in data["rows"][:top]
        ],
    }


def profile_accept(
    data_dir: Path,
    out: Path,
    request: load.RequestSource,
    *,
    seconds: float,
    connections: int = 64,
    extra_env: dict[str, str] | None = None,
    warmup: load.RequestSource | None = None,
    warmup_total: int = 500,
    total: int = 1_000_000,
) -> dict[str, Any]:
    """Profile nexus under ``request`` (any route: requests that name one run each pass
    their own ``warmup`` requests, ``warmup_total`` of them, and ``total`` at most).

    It runs under an instance id of its own, one per profile: on a store shared with an
    earlier nexus (the bench's, or the previous profile's), the earlier one's pending runs
    are not its own to sweep at start-up, which would put the sweep, not the path, in the
    profile."""
    server = servers.nexus(
        data_dir,
        launcher="bench.serve",
        name="nexus-profiled",
        instance=f"bench-profiled-{out.name.split('.')[0]}",
        extra_args=["--profile", str(out), "--profiler", "cprofile"],
        extra=extra_env,
    )
    with server:
        load.closed_loop(
            server.host,
            server.port,
            request if warmup is None else warmup,
            connections=connections,
            total=warmup_total,
            duration=5,
        )
        cpu0 = server.thread_cpu()
        result = load.closed_loop(
            server.host,
            server.port,
            request,
            connections=connections,
            total=total,
            duration=seconds,
        )
        cpu1 = server.thread_cpu()
    per_request = {
        k: round((cpu1[k] - cpu0.get(k, 0.0)) / max(1, result.ok) * 1e6)
        for k in cpu1
        if cpu1[k] - cpu0.get(k, 0.0) > 0
    }
    summary = summarise(out.with_suffix(".json"))
    summary["profiled_rate"] = round(result.rate, 1)
    summary["thread_cpu_us_per_request"] = per_request
    summary["profile_file"] = str(out)
    return summary
