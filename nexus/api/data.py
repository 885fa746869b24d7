"""Signed payload and result URLs of the embedded buffer, served by the scheduler.

``GET /data/v1/payloads/...`` is the algorithm's payload download (the path the newer Go
scheduler uses for its signed-URL proxy); ``PUT``/``GET /data/v1/results/...`` let an
algorithm upload its result and the client download it, like presigned S3 URLs would.
"""

from __future__ import annotations

from sanic import Blueprint
from sanic.response import HTTPResponse, empty, raw

from nexus.context import NexusRequest
from nexus.core.scheduling import check_algorithm_name, check_request_id

bp = Blueprint("data", url_prefix="/data/v1")


def _verify(request: NexusRequest, algorithm: str, request_id: str, method: str) -> None:
    check_algorithm_name(algorithm)
    check_request_id(request_id)
    request.app.ctx.signer.verify(
        method, request.path, request.args.get("exp"), request.args.get("sig")
    )


@bp.get("/payloads/<algorithm:str>/requests/<request_id:str>")
async def get_payload(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    _verify(request, algorithm, request_id, "GET")
    data = await request.app.ctx.buffer.get(algorithm, request_id)
    return raw(data, content_type="application/json")


@bp.put("/results/<algorithm:str>/requests/<request_id:str>")
async def put_result(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    _verify(request, algorithm, request_id, "PUT")
    await request.app.ctx.buffer.put_result(algorithm, request_id, request.body)
    return empty(status=201)


@bp.get("/results/<algorithm:str>/requests/<request_id:str>")
async def get_result(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    _verify(request, algorithm, request_id, "GET")
    data = await request.app.ctx.buffer.get_result(algorithm, request_id)
    return raw(data, content_type="application/json")
