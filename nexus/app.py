"""The Sanic application factory: one app, the role decides what it serves and runs."""

from __future__ import annotations

import logging

from sanic import Request, Sanic
from sanic.errorpages import BaseRenderer
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, text

from nexus.api import health
from nexus.core.watch import RunWatch
from nexus.errors import NexusError
from nexus.metrics import Metrics
from nexus.roles import receiver, scheduler, supervisor
from nexus.roles.shared import Shared
from nexus.settings import Settings

ROLES = ("scheduler", "receiver", "supervisor", "all")
_ROLE_MODULES = {"scheduler": scheduler, "receiver": receiver, "supervisor": supervisor}
log = logging.getLogger("nexus")


class PlainTextErrors(ErrorHandler):
    """Every error body is a plain-text message, as the Go clients expect (SPEC §2)."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, NexusError):
            if exception.status >= 500:
                log.warning("%s %s -> %d: %s", request.method, request.path,
                            exception.status, exception.message)
            return text(exception.message, status=exception.status, headers=exception.headers)
        if isinstance(exception, SanicException):
            message = str(exception) or "Request refused"
            if exception.status_code == 413:
                message = (f"Request body is larger than the allowed "
                           f"{request.app.config.REQUEST_MAX_SIZE} bytes (max-payload-size)")
            return text(message, status=exception.status_code,
                        headers=getattr(exception, "headers", None) or {})
        log.exception("unhandled error on %s %s", request.method, request.path,
                      exc_info=exception)
        return text("Internal server error; see the server log", status=500)


def create_app(settings: Settings, role: str, *, name: str | None = None) -> Sanic:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    roles = ("scheduler", "receiver", "supervisor") if role == "all" else (role,)
    app = Sanic(name or f"nexus-{role}", error_handler=PlainTextErrors())
    app.config.REQUEST_MAX_SIZE = int(settings.max_payload_size)
    app.config.FALLBACK_ERROR_FORMAT = "text"
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.REQUEST_TIMEOUT = 120
    app.config.RESPONSE_TIMEOUT = max(120, int(settings.max_wait) + 30)
    app.ctx.settings = settings
    app.ctx.role = role
    app.ctx.metrics = Metrics()
    app.ctx.watch = RunWatch()
    app.ctx.readiness = []
    app.ctx.log = log
    app.blueprint(health.bp)
    for name_ in roles:
        _ROLE_MODULES[name_].routes(app)

    @app.on_response
    async def count(request: Request, response: HTTPResponse) -> None:
        route = request.route.path if request.route else "unmatched"
        request.app.ctx.metrics.requests.inc(route, request.method, str(response.status))

    @app.before_server_start
    async def open_backends(app: Sanic) -> None:
        shared = Shared(app)
        app.ctx.shared = shared
        try:
            for name_ in roles:
                await _ROLE_MODULES[name_].start(app, shared)
        except BaseException:
            await shared.close()
            raise

    @app.after_server_stop
    async def close_backends(app: Sanic) -> None:
        await app.ctx.shared.close()

    return app
