"""``GET /openapi.json``: an OpenAPI 3.1 document of the routes this process serves.

Built once per app from two sources that cannot drift apart silently: the app's route
table (what is really served — a role only lists its own routes) and the wire Structs of
``nexus.api.schemas`` (``msgspec.json.schema_components``). ``OPERATIONS`` adds what the
code cannot say (summaries, status codes); a route missing there is still listed, with
``x-undocumented: true``, and the test suite fails on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from nexus.api import schemas
from nexus.context import NexusApp, NexusRequest
from nexus.core.models import LifecycleStage
from nexus.core.pipeline import LaneStatus
from nexus.core.signing import RUN_TOKEN_ENV, RUN_TOKEN_HEADER
from nexus.version import nexus_version

bp = Blueprint("openapi")

JSON = "application/json"
TEXT = "text/plain"
REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    body: Any = None  # a wire Struct type
    ok: tuple[int, str, Any, str] = (200, "OK", None, JSON)  # status, text, type, media
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, Any], ...] = ()  # name, description, schema
    headers: tuple[tuple[str, str], ...] = ()  # request headers: name, description
    extra: dict[str, Any] = field(default_factory=dict)


_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_SIGNED = (
    ("exp", "expiry of the signed URL (Unix seconds)", {"type": "string"}),
    ("sig", "signature of the URL", {"type": "string"}),
)
_RUN_ERRORS = (400, 404, 503)
_TIME = {"type": "string", "format": "date-time"}
_ALGORITHM_QUERY = ("algorithm", "only this algorithm's runs", {"type": "string"})
_LIST_QUERY = (
    _ALGORITHM_QUERY,
    (
        "stage",
        "only runs at these stages (repeat it, or separate with commas)",
        {"type": "array", "items": {"enum": [stage.value for stage in LifecycleStage]}},
    ),
    ("tag", "only runs with this client tag", {"type": "string"}),
    ("parent", "only children of this run: algorithm/requestId", {"type": "string"}),
    ("since", "received at or after, RFC 3339", _TIME),
    ("until", "received before, RFC 3339", _TIME),
    ("limit", "page size, 1 to 1000 (default 100)", {"type": "integer", "minimum": 1}),
    ("cursor", "nextCursor of the previous page, with the same filters", {"type": "string"}),
)

OPERATIONS: dict[str, Operation] = {
    "runs.create_run": Operation(
        "Start a run of an algorithm",
        "scheduler",
        body=schemas.RunRequest,
        ok=(202, "Accepted: the run is durably recorded", schemas.RunCreated, JSON),
        errors=(400, 413, 429, 503),
        query=(
            (
                "dryRun",
                "'true' records the run and renders its Job without launching it",
                {"type": "string", "enum": ["true", "false"]},
            ),
        ),
        headers=(
            (
                "Idempotency-Key",
                (
                    "a repeat with the same key (per algorithm) returns "
                    "the first run's requestId and creates nothing"
                ),
            ),
        ),
    ),
    "runs.get_result": Operation(
        "A run's status and result",
        "scheduler",
        ok=(200, "The run", schemas.RequestResult, JSON),
        errors=_RUN_ERRORS,
        query=(
            (
                "wait",
                (
                    "long-poll: answer as soon as the run finishes, or after this many "
                    "seconds (capped by the server's max-wait)"
                ),
                {"type": "number", "minimum": 0},
            ),
        ),
    ),
    "runs.get_results_by_tag": Operation(
        "Every run that carries a client tag",
        "scheduler",
        ok=(200, "The runs (may be empty)", list[schemas.TaggedRequestResult], JSON),
        errors=(400, 503),
    ),
    "runs.get_metadata": Operation(
        "The full run record (checkpoint, snake_case keys)",
        "scheduler",
        ok=(200, "The checkpoint", _ANY_OBJECT, JSON),
        errors=_RUN_ERRORS,
    ),
    "runs.get_buffered": Operation(
        "The Kubernetes Job manifest that was (or will be) submitted",
        "scheduler",
        # text/plain as the Go server answers it (its SDK accepts nothing else); the
        # body is the Job's JSON.
        ok=(200, "The Job manifest, as JSON text", _ANY_OBJECT, TEXT),
        errors=_RUN_ERRORS,
    ),
    "runs.get_payload": Operation(
        "Redirect to the run's payload",
        "scheduler",
        ok=(302, "Found: Location is the payload's signed URL", None, TEXT),
        errors=(400, 404, 417, 503),
    ),
    "runs.cancel_run": Operation(
        "Cancel a run and its children",
        "scheduler",
        body=schemas.CancellationRequest,
        ok=(200, "Cancelled (empty body)", None, TEXT),
        errors=(400, 404, 409, 503),
    ),
    "runs.update_tag": Operation(
        "Replace a run's client tag",
        "scheduler",
        body=schemas.TagUpdateRequest,
        ok=(200, "Updated", _ANY_OBJECT, JSON),
        errors=_RUN_ERRORS,
    ),
    "overview.catalog": Operation(
        "The templates (those whose runs the caller may read) and workgroups nexus knows",
        "scheduler",
        ok=(200, "Templates and workgroups, by name", schemas.Catalog, JSON),
        errors=(503,),
    ),
    "overview.shards": Operation(
        "Each shard's launch lane: queued runs, bounds, Jobs launched",
        "scheduler",
        ok=(200, "One entry per shard, by name", list[LaneStatus], JSON),
    ),
    "overview.logs": Operation(
        "The last lines of a run's Pod (or local process) log",
        "scheduler",
        ok=(200, "The log tail", {"type": "string"}, TEXT),
        errors=(400, 404, 503),
        query=(
            (
                "tail",
                "how many lines from the end (default 200)",
                {"type": "integer", "minimum": 1, "maximum": 10000},
            ),
        ),
    ),
    "runs.resubmit_run": Operation(
        "Run a finished run again: its stored payload, its (or new) overrides and tag",
        "scheduler",
        body=schemas.ResubmitRequest,
        ok=(202, "Accepted: the new run, linked by resubmittedFrom", schemas.RunCreated, JSON),
        errors=(400, 404, 409, 429, 503),
        extra={
            "description": "The body is optional. 404: no such run; 409: the run is not "
            "finished yet, or its payload is no longer stored (docs/runs-api.md)."
        },
    ),
    "runs_listing.list_runs": Operation(
        "List runs, newest first, a page at a time",
        "scheduler",
        ok=(200, "A page; nextCursor is absent on the last page", schemas.RunList, JSON),
        errors=(400, 503),
        query=_LIST_QUERY,
        extra={
            "description": "Only runs of algorithms the caller may read are listed; a page "
            "may hold fewer than limit runs and still have a nextCursor (docs/runs-api.md)."
        },
    ),
    "runs_listing.count_runs": Operation(
        "How many runs are at each stage, per algorithm, received in a window",
        "scheduler",
        ok=(200, "The counts (stages without runs left out)", schemas.RunCounts, JSON),
        errors=(400, 503),
        query=(
            _ALGORITHM_QUERY,
            ("since", "window start, RFC 3339 (default: until less one day)", _TIME),
            ("until", "window end, excluded, RFC 3339 (default: now); at most 31 days", _TIME),
        ),
    ),
    "runs_listing.run_events": Operation(
        "A run's history: each stage change and webhook attempt, oldest first",
        "scheduler",
        ok=(200, "The events", schemas.RunHistory, JSON),
        errors=_RUN_ERRORS,
    ),
    "completions.complete_run": Operation(
        "Report a run's outcome (called by the algorithm)",
        "receiver",
        body=schemas.AlgorithmResult,
        ok=(202, "Recorded (first result wins)", _ANY_OBJECT, JSON),
        errors=_RUN_ERRORS,
    ),
    "completions.check_run": Operation(
        "Whether a run is finished",
        "receiver",
        ok=(200, "The answer", schemas.CheckResponse, JSON),
        errors=_RUN_ERRORS,
    ),
    "data.get_payload": Operation(
        "Download a run's payload (signed URL)",
        "data",
        ok=(200, "The payload", _ANY_OBJECT, JSON),
        errors=(400, 403, 404, 503),
        query=_SIGNED,
    ),
    "data.put_result": Operation(
        "Upload a run's result (signed URL)",
        "data",
        ok=(201, "Stored", None, TEXT),
        errors=(400, 403, 404, 413, 503),
        query=_SIGNED,
        extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {
                        "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                    }
                },
            }
        },
    ),
    "data.get_result": Operation(
        "Download a run's result (signed URL)",
        "data",
        ok=(200, "The result", {}, JSON),
        errors=(400, 403, 404, 503),
        query=_SIGNED,
    ),
    "health.live": Operation(
        "Liveness: the process serves", "health", ok=(200, "Alive", {"type": "string"}, TEXT)
    ),
    "health.ready": Operation(
        "Readiness: the backends answer",
        "health",
        ok=(200, "Ready", {"type": "string"}, TEXT),
        errors=(503,),
    ),
    "health.metrics": Operation(
        "Prometheus metrics", "health", ok=(200, "Text exposition format", {"type": "string"}, TEXT)
    ),
    "openapi.openapi": Operation(
        "This document", "health", ok=(200, "OpenAPI 3.1", _ANY_OBJECT, JSON)
    ),
    "docs.page": Operation(
        "This document, browsable (Redoc, served by nexus)",
        "health",
        ok=(200, "An HTML page", {"type": "string"}, "text/html"),
    ),
    "ui.page": Operation(
        "The web UI (served by nexus; docs/ui.md)",
        "health",
        ok=(200, "An HTML page", {"type": "string"}, "text/html"),
    ),
    "ui.asset": Operation(
        "The web UI's script and style sheet",
        "health",
        ok=(200, "JavaScript or CSS", {"type": "string"}, "text/plain"),
        errors=(404,),
    ),
    "docs.redoc": Operation(
        "The page's script (Redoc 2, MIT)",
        "health",
        ok=(200, "JavaScript", {"type": "string"}, "text/javascript"),
    ),
}

_ERROR_TEXT = {
    400: "Bad request; the body says what was wrong and how to fix it",
    401: "No valid bearer token (auth.mode kubernetes or oidc), or no valid run token "
    "(auth.receiver-tokens); see WWW-Authenticate",
    403: "Refused: an invalid or expired signed URL, a caller without the right to "
    "this algorithm's runs, or another run's token",
    404: "Unknown run",
    409: "The run already finished",
    413: "Body larger than max-payload-size",
    431: "Request line and headers together larger than 8 KiB",
    417: "The run has no stored payload",
    429: "The queue is full; retry after Retry-After seconds",
    503: "A backend did not answer; nothing was accepted; retry after Retry-After seconds",
}
_PARAM = re.compile(r"<([^:>]+)(?::[^>]+)?>")


def openapi_path(sanic_path: str) -> str:
    """``algorithm/v1/run/<algorithm:str>`` -> ``/algorithm/v1/run/{algorithm}``."""
    return "/" + _PARAM.sub(r"{\1}", sanic_path.lstrip("/"))


def operation_key(route_name: str) -> str:
    """``nexus-all.runs.create_run`` -> ``runs.create_run`` (app name dropped)."""
    return route_name.split(".", 1)[1] if "." in route_name else route_name


def _schema(kind: Any, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(kind, dict):
        return kind
    (schema,), found = msgspec.json.schema_components([kind], ref_template=REF)
    components.update(found)
    return schema


_REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request's id, as sent by the client or made by nexus; it is in "
        "every log line of the request",
        "schema": {"type": "string"},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The Bearer challenge (RFC 6750)",
        "schema": {"type": "string"},
    }
}
# Every route of the run API (nexus.api.runs, listing, overview) checks its caller when auth.mode is
# kubernetes or oidc; the receiver's (nexus.api.completions) ask for the run's token when
# auth.receiver-tokens is on; the others are open (health, docs) or carry their own
# signature.
Security = list[dict[str, list[str]]]
_BEARER: Security = [{"bearer": []}]
_RUN_TOKEN: Security = [{"runToken": []}, {"runTokenHeader": []}]
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "runToken": {
        "type": "http",
        "scheme": "bearer",
        "description": f"The run's token, from ${RUN_TOKEN_ENV} in its Job's env",
    },
    "runTokenHeader": {"type": "apiKey", "in": "header", "name": RUN_TOKEN_HEADER},
}


def _security(blueprint: str, receiver_tokens: bool) -> Security:
    if blueprint in ("runs", "runs_listing", "overview"):
        return _BEARER
    if blueprint == "completions" and receiver_tokens:
        return _RUN_TOKEN
    return []


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def _error_response(status: int) -> dict[str, Any]:
    headers = {
        **_REQUEST_ID,
        **(_RETRY_AFTER if status in (429, 503) else {}),
        **(_WWW_AUTHENTICATE if status == 401 else {}),
    }
    return {
        "description": _ERROR_TEXT.get(status, "Error"),
        "headers": headers,
        "content": {TEXT: {"schema": {"type": "string"}}},
    }


def _operation(
    key: str,
    method: str,
    path: str,
    components: dict[str, Any],
    receiver_tokens: bool,
) -> dict[str, Any]:
    op = OPERATIONS.get(key)
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([^}]+)}", path)
    ]
    if op is None:
        return {
            "operationId": key,
            "summary": key,
            "x-undocumented": True,
            "parameters": params,
            "responses": {"default": {"description": "Any"}},
        }
    params += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
        for name, text, schema in op.query
    ]
    params += [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in op.headers
    ]
    status, text, kind, media = op.ok
    ok: dict[str, Any] = {"description": text, "headers": dict(_REQUEST_ID)}
    if kind is not None:
        ok["content"] = {media: {"schema": _schema(kind, components)}}
    elif status == 302:
        ok["headers"]["Location"] = {"schema": {"type": "string", "format": "uri"}}
    security = _security(key.split(".", 1)[0], receiver_tokens)
    errors = sorted({*op.errors, 401, 403}) if security else op.errors
    responses = {
        str(status): ok,
        **{str(code): _error_response(code) for code in errors},
        "431": _error_response(431),
    }  # any route, before it is even matched
    result: dict[str, Any] = {
        "operationId": key.replace(".", "_"),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    }
    if security:
        result["security"] = security
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _schema(op.body, components)}},
        }
    result.update(op.extra)
    return result


def build_document(app: NexusApp) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes:
        path = openapi_path(route.path)
        for method in sorted(route.methods):
            paths.setdefault(path, {})[method.lower()] = _operation(
                operation_key(route.name),
                method,
                path,
                components,
                app.ctx.settings.auth.receiver_tokens,
            )
    request = components.get("RunRequest")
    if request is not None:  # msgspec.Raw has no schema of its own: it is any JSON object
        request["properties"]["algorithmParameters"] = {
            "type": "object",
            "description": "The payload, any JSON object",
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"nexus {app.ctx.role}",
            "version": nexus_version(),
            "description": "Error bodies are plain text (text/plain) saying what was "
            "wrong. Clients send Authorization: Bearer <token>; the routes that declare "
            "bearer security check it when auth.mode is kubernetes or oidc; with "
            "auth.receiver-tokens the receiver's routes need the run's own token "
            "(docs/auth.md).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


@bp.get("/openapi.json")
async def openapi(request: NexusRequest) -> HTTPResponse:
    document = request.app.ctx.openapi_document
    if document is None:
        document = request.app.ctx.openapi_document = schemas.encoder.encode(
            build_document(request.app)
        )
    return raw(document, content_type=JSON)
