"""Baselines the accept path is measured against, each run as its own process.

``sanic`` (the default): a bare Sanic app, configured like nexus (one process, no access
log), whose run endpoint only decodes the body with the same msgspec decoder nexus uses
and answers 202 with a fresh request id. It is the "framework cost" of an accept: the
ratio nexus / baseline says how much of the rate the durable work takes.

``raw``: a bare asyncio protocol that answers every request with a canned 202 without
parsing the body. It is far cheaper than any Sanic app, so the rate the load driver
reaches against it is the driver's own ceiling on this machine.

    python -m bench.baseline_app --port 8099 [--mode sanic|raw]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import msgspec

from nexus.api.schemas import RunCreated, run_request_decoder

ROUTE = "/algorithm/v1/run/<algorithm:str>"
_encoder = msgspec.json.Encoder()


def sanic_app():
    from sanic import Request, Sanic
    from sanic.response import raw, text

    app = Sanic("bench-baseline")
    app.config.KEEP_ALIVE_TIMEOUT = 75

    @app.post(ROUTE)
    async def create_run(request: Request, algorithm: str):
        run_request_decoder.decode(request.body)
        body = _encoder.encode(RunCreated(request_id=str(uuid.uuid4())))
        return raw(body, status=202, content_type="application/json")

    @app.get("/health/ready")
    async def ready(request: Request):
        return text("ok")

    return app


_CANNED = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
    b"Content-Length: 52\r\nConnection: keep-alive\r\n\r\n"
    b'{"requestId":"00000000-0000-4000-8000-000000000000"}'
)


class _Raw(asyncio.Protocol):
    """Answers each complete request (head + Content-Length body) with the canned 202."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            if head.startswith(b"get /health"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                self.transport.write(_CANNED)


async def _serve_raw(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Raw, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("sanic", "raw"), default="sanic")
    args = parser.parse_args()
    if args.mode == "raw":
        import uvloop

        uvloop.run(_serve_raw(args.host, args.port))
        return
    sanic_app().run(
        host=args.host, port=args.port, single_process=True, access_log=False, motd=False
    )


if __name__ == "__main__":
    main()
