"""Health and metrics, on every role."""

from __future__ import annotations

import asyncio

from sanic import Blueprint
from sanic.response import HTTPResponse, raw, text

from nexus.context import NexusRequest
from nexus.errors import BackendUnavailable, NexusError
from nexus.metrics import CONTENT_TYPE

bp = Blueprint("health")


@bp.get("/health/live")
async def live(request: NexusRequest) -> HTTPResponse:
    return text("ok")


@bp.get("/health/ready")
async def ready(request: NexusRequest) -> HTTPResponse:
    checks = request.app.ctx.readiness
    try:
        # Awaited by this task itself (not through wait_for): when the client goes away
        # and the handler is cancelled, the gather's CancelledError is retrieved here
        # instead of being logged as "exception was never retrieved".
        async with asyncio.timeout(5.0):
            await asyncio.gather(*(check() for check in checks))
    except NexusError as exc:
        raise BackendUnavailable(f"not ready: {exc.message}") from exc
    except TimeoutError as exc:
        raise BackendUnavailable("not ready: a backend did not answer within 5s") from exc
    return text("ready")


@bp.get("/metrics")
async def metrics(request: NexusRequest) -> HTTPResponse:
    return raw(request.app.ctx.metrics.render(), content_type=CONTENT_TYPE)
