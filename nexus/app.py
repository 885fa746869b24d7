"""The Sanic application factory: one app, the role decides what it serves and runs."""

from __future__ import annotations

import functools
import gc
import logging
import time

from sanic import Request, Sanic
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import BaseHTTPResponse, HTTPResponse, text

from nexus import logs
from nexus.api import docs, health, openapi
from nexus.context import NexusApp, NexusContext, NexusRequest
from nexus.errors import ConfigError, NexusError
from nexus.metrics import Metrics
from nexus.roles import controller, receiver, scheduler, supervisor
from nexus.roles.shared import Shared
from nexus.settings import Settings, check_controller
from nexus.version import nexus_version

ROLES = ("scheduler", "receiver", "supervisor", "controller", "all")
_ROLE_MODULES = {
    "scheduler": scheduler,
    "receiver": receiver,
    "supervisor": supervisor,
    "controller": controller,
}
log = logging.getLogger("nexus")
access_log = logging.getLogger("nexus.access")  # one line per request at DEBUG


# The metrics' route label: the path as the OpenAPI document writes it
# (/algorithm/v1/run/{algorithm}), one series per route whatever the ids in the URL.
route_template = functools.lru_cache(maxsize=256)(openapi.openapi_path)


# Sanic raises one PayloadTooLarge for a body and for a header section over its limit;
# only the message tells them apart (tests/e2e/test_bad_input.py notices if it changes).
_HEADER_TOO_LARGE = "Request header exceeds the size limit"
CLIENT_GONE = 499  # nginx's "client closed request": counted in the metrics, never sent


class PlainTextErrors(ErrorHandler):
    """Every error body is a plain-text message, as the Go clients expect (SPEC §2)."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, NexusError):
            if exception.status >= 500:
                log.warning(
                    "%s %s -> %d: %s",
                    request.method,
                    request.path,
                    exception.status,
                    exception.message,
                )
            return text(exception.message, status=exception.status, headers=exception.headers)
        if isinstance(exception, SanicException):
            return _sanic_error(request, exception)
        if isinstance(exception, RequestCancelled):
            # The client closed its connection mid-request (or mid long-poll): normal.
            log.info("client went away during %s %s", request.method, request.path)
            return text("Client closed the request", status=CLIENT_GONE)
        log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exception)
        return text("Internal server error; see the server log", status=500)


def _sanic_error(request: Request, exception: SanicException) -> HTTPResponse:
    message, status = str(exception) or "Request refused", exception.status_code
    if status == 413 and message == _HEADER_TOO_LARGE:
        message, status = (
            (
                f"Request Header Fields Too Large: the request line and headers "
                f"together are larger than the allowed "
                f"{request.app.config.REQUEST_MAX_HEADER_SIZE} bytes; send fewer "
                "or shorter headers"
            ),
            431,
        )
    elif status == 413:
        message = (
            f"Request body is larger than the allowed "
            f"{request.app.config.REQUEST_MAX_SIZE} bytes (max-payload-size)"
        )
    return text(message, status=status, headers=getattr(exception, "headers", None) or {})


def create_app(settings: Settings, role: str, *, name: str | None = None) -> NexusApp:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    roles = ("scheduler", "receiver", "supervisor") if role == "all" else (role,)
    if settings.executor == "local" and role in ("scheduler", "supervisor"):
        # Local processes are watched by the process that started them; a scheduler and a
        # supervisor in separate processes would not see each other's children.
        raise ConfigError(
            f"executor 'local' runs algorithms as child processes and needs --role all; "
            f"set executor: kubernetes (NEXUS__EXECUTOR=kubernetes) to run --role {role}"
        )
    if role == "controller":
        check_controller(settings.controller)  # at start-up, before anything is opened
    # Logging is nexus.logs' job (one JSON line per event): Sanic must not install its own.
    app: NexusApp = Sanic(
        name or f"nexus-{role}",
        ctx=NexusContext(settings, role, Metrics(nexus_version())),
        error_handler=PlainTextErrors(),
        configure_logging=False,
    )
    app.config.REQUEST_MAX_SIZE = int(settings.max_payload_size)
    app.config.FALLBACK_ERROR_FORMAT = "text"
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.REQUEST_TIMEOUT = 120
    app.config.RESPONSE_TIMEOUT = max(120, int(settings.max_wait) + 30)
    app.blueprint(health.bp)
    for name_ in roles:
        _ROLE_MODULES[name_].routes(app)
    if role not in ("supervisor", "controller"):  # these serve no API of their own
        app.blueprint(openapi.bp)
        app.blueprint(docs.bp)

    @app.middleware("request", priority=1000)
    async def bind_request_id(request: NexusRequest) -> None:
        request.ctx.started = time.perf_counter()
        request.ctx.request_id = logs.new_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
        logs.request_id.set(request.ctx.request_id)

    @app.middleware("response")
    async def count(request: NexusRequest, response: BaseHTTPResponse) -> None:
        route = route_template(request.route.path) if request.route else "unmatched"
        metrics = request.app.ctx.metrics
        metrics.requests.inc(route, request.method, str(response.status))
        started = getattr(request.ctx, "started", None)
        if started is not None:
            metrics.request_seconds.observe(time.perf_counter() - started, route, request.method)
        request_id = getattr(request.ctx, "request_id", None)
        if request_id is not None:
            response.headers[logs.REQUEST_ID_HEADER] = request_id
            access_log.debug("%s %s -> %d", request.method, request.path, response.status)
            logs.request_id.set(None)  # the connection's task serves the next request too

    # The backends of the server running now: made at each start, closed at its stop.
    serving: list[Shared] = []

    @app.before_server_start
    async def open_backends(app: NexusApp) -> None:
        shared = Shared(app.ctx)
        serving.append(shared)
        try:
            for name_ in roles:
                await _ROLE_MODULES[name_].start(app, shared)
        except BaseException:
            serving.remove(shared)
            await shared.close()
            raise
        # Everything made so far (modules, the app, backends) lives as long as the process:
        # moved out of the collector's reach, a full collection under load takes ~1 ms
        # instead of 15-30 ms every couple of seconds (an event-loop stall that shows in
        # the accept p99; docs/performance.md).
        gc.collect()
        gc.freeze()

    @app.after_server_start
    async def start_launching(app: NexusApp) -> None:
        serving[-1].serving()

    @app.after_server_stop
    async def close_backends(app: NexusApp) -> None:
        if serving:
            await serving.pop().close()

    return app
