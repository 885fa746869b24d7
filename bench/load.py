"""An HTTP/1.1 load driver on raw asyncio keep-alive connections (uvloop when present).

Two modes:

* closed loop (:func:`closed_loop`): ``connections`` clients each send a request, wait
  for the answer and send the next, until ``total`` requests were sent or ``duration``
  seconds passed. Its rate is the most the server can answer at that concurrency.
* open loop (:func:`open_loop`): requests are *scheduled* at a fixed ``rate``, whatever
  the server does, on a pool of keep-alive connections that grows up to
  ``max_connections``. Latency is measured from the scheduled send time, so a server
  that falls behind is charged for the queueing it causes (no coordinated omission).

The driver is deliberately small: each request is one prebuilt ``bytes`` object written
to the socket, and a response is parsed only as far as its status and Content-Length.
It measures its own CPU time (``driver_cpu``: share of one core while it ran), which is
how a run shows the driver was not the bottleneck: a saturated driver reads ~1.0.

Every target must be on loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

try:  # the server side already depends on uvloop (through Sanic)
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

MAX_REQUESTS = 2_000_000
MAX_SECONDS = 600.0


def check_loopback(host: str) -> None:
    """Refuse any target that is not on this machine."""
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"load driver targets loopback only, not {host!r}")


def build_request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    authorization: str | None = "Bearer ",
) -> bytes:
    """One HTTP/1.1 keep-alive request as bytes, sent as-is for every repetition.

    ``authorization`` None sends no Authorization header: an algorithm's report carries
    none when receiver tokens are off (an empty Bearer there is refused with a 401)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    if body or method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        del buf[:total]
        self.waiter = None
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("server closed the connection"))

    def send(self, request: bytes) -> asyncio.Future[int]:
        if self.closed:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[union-attr]
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


@dataclass
class LoadResult:
    mode: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    driver_cpu: float = 0.0  # share of one core the driver used while it ran
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    target_rate: float | None = None

    @property
    def rate(self) -> float:
        """Successful (2xx) requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency quantile ``q`` in seconds (nearest-rank), NaN without samples."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def summary(self) -> dict[str, float]:
        return {
            "rate": round(self.rate, 1),
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "p50_ms": round(self.percentile(0.50) * 1e3, 3),
            "p99_ms": round(self.percentile(0.99) * 1e3, 3),
            "driver_cpu": round(self.driver_cpu, 3),
            **({"target_rate": self.target_rate} if self.target_rate else {}),
        }


def _record(result: LoadResult, status: int, latency: float) -> None:
    result.statuses[status] = result.statuses.get(status, 0) + 1
    if 200 <= status < 300:
        result.ok += 1
        result.latencies.append(latency)
    else:
        result.errors += 1


RequestSource = bytes | Callable[[int], bytes]


def _request(source: RequestSource, index: int) -> bytes:
    return source if isinstance(source, bytes) else source(index)


async def closed_loop_async(
    host: str,
    port: int,
    request: RequestSource,
    *,
    connections: int = 64,
    total: int = 20_000,
    duration: float = 10.0,
) -> LoadResult:
    check_loopback(host)
    total, duration = min(total, MAX_REQUESTS), min(duration, MAX_SECONDS)
    conns = await asyncio.gather(*(_connect(host, port) for _ in range(connections)))
    result = LoadResult("closed")
    sent = 0
    cpu0, start = time.process_time(), time.perf_counter()
    deadline = start + duration

    async def client(conn: _Connection) -> None:
        nonlocal sent
        while sent < total:
            now = time.perf_counter()
            if now >= deadline:
                return
            index = sent
            sent += 1
            result.requests += 1
            try:
                status = await conn.send(_request(request, index))
            except (ConnectionError, OSError):
                result.errors += 1
                return
            _record(result, status, time.perf_counter() - now)

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        result.seconds = time.perf_counter() - start
        result.driver_cpu = (time.process_time() - cpu0) / result.seconds
        for conn in conns:
            conn.close()
    return result


async def open_loop_async(
    host: str,
    port: int,
    request: RequestSource,
    *,
    rate: float,
    duration: float = 10.0,
    max_connections: int = 256,
    initial_connections: int = 16,
) -> LoadResult:
    """Send ``rate`` requests per second for ``duration`` seconds, whatever the server does."""
    check_loopback(host)
    duration = min(duration, MAX_SECONDS)
    total = min(int(rate * duration), MAX_REQUESTS)
    idle: deque[_Connection] = deque(
        await asyncio.gather(*(_connect(host, port) for _ in range(initial_connections)))
    )
    opened = len(idle)
    freed = asyncio.Event()
    result = LoadResult("open", target_rate=rate)
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def one(index: int, scheduled: float) -> None:
        nonlocal opened
        while not idle:
            if opened < max_connections:
                opened += 1
                try:
                    idle.append(await _connect(host, port))
                except OSError:
                    opened -= 1
                    result.errors += 1
                    return
                break
            freed.clear()
            await freed.wait()
        conn = idle.popleft()
        try:
            status = await conn.send(_request(request, index))
        except (ConnectionError, OSError):
            result.errors += 1
            opened -= 1
            freed.set()
            return
        _record(result, status, time.perf_counter() - scheduled)
        idle.append(conn)
        freed.set()

    cpu0, start = time.process_time(), time.perf_counter()
    interval = 1.0 / rate
    index = 0
    while index < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while index < due:  # catch up on every request whose time has come
            task = loop.create_task(one(index, start + index * interval))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
        result.requests = index
        await asyncio.sleep(max(0.0, start + index * interval - time.perf_counter()))
    if pending:
        await asyncio.wait(pending, timeout=max(30.0, duration))
    for task in pending:
        task.cancel()
    result.seconds = time.perf_counter() - start
    result.driver_cpu = (time.process_time() - cpu0) / result.seconds
    for conn in idle:
        conn.close()
    return result


def run(coroutine) -> LoadResult:
    """Run a driver coroutine on a fresh (uv)loop."""
    if uvloop is not None:
        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def closed_loop(host: str, port: int, request: RequestSource, **kwargs) -> LoadResult:
    return run(closed_loop_async(host, port, request, **kwargs))


def open_loop(host: str, port: int, request: RequestSource, **kwargs) -> LoadResult:
    return run(open_loop_async(host, port, request, **kwargs))


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="HTTP/1.1 load driver (loopback only)")
    parser.add_argument("url", help="http://127.0.0.1:PORT/path")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="", help="request body (text)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--total", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, help="open loop at this many requests/s")
    args = parser.parse_args()
    from urllib.parse import urlsplit

    url = urlsplit(args.url)
    request = build_request(args.method, url.path or "/", args.body.encode())
    if args.rate:
        result = open_loop(
            url.hostname,
            url.port or 80,
            request,
            rate=args.rate,
            duration=args.duration,
            max_connections=args.connections,
        )
    else:
        result = closed_loop(
            url.hostname,
            url.port or 80,
            request,
            connections=args.connections,
            total=args.total,
            duration=args.duration,
        )
    print(json.dumps({**result.summary(), "statuses": result.statuses}))


if __name__ == "__main__":
    main()
