"""Receiver routes: algorithms report their outcome here (with ``auth.receiver-tokens``,
carrying their run's token: docs/auth.md)."""

from __future__ import annotations

from sanic import Blueprint
from sanic.response import HTTPResponse

from nexus.api import schemas
from nexus.api.runs import _decode, json_response
from nexus.context import NexusRequest
from nexus.core.signing import RUN_TOKEN_HEADER, presented_token

bp = Blueprint("completions", url_prefix="/algorithm/v1")


def _token(request: NexusRequest) -> str | None:
    headers = request.headers
    return presented_token(headers.get("authorization"), headers.get(RUN_TOKEN_HEADER))


@bp.post("/complete/<algorithm:str>/requests/<request_id:str>")
async def complete_run(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    body = _decode(schemas.result_decoder, request.body, "Submitted result")
    await request.app.ctx.completion.complete(
        algorithm,
        request_id,
        result_uri=body.result_uri or "",
        error_cause=body.error_cause or "",
        error_details=body.error_details or "",
        token=_token(request),
    )
    return json_response({}, status=202)


@bp.get("/check/<algorithm:str>/requests/<request_id:str>")
async def check_run(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    completion = request.app.ctx.completion
    processed = await completion.is_processed(algorithm, request_id, _token(request))
    return json_response(schemas.CheckResponse(is_processed=processed))
