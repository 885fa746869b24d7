"""What the UI (and ``nexus logs``) shows beside the run records: the templates and
workgroups nexus knows, each shard's launch queue, a run's log tail. Read-only; checked
like the run routes (``auth.mode``)."""

from __future__ import annotations

from sanic import Blueprint
from sanic.response import HTTPResponse, text

from nexus.api.runs import allow, json_response
from nexus.api.schemas import Catalog
from nexus.context import NexusRequest
from nexus.core.access import Verb
from nexus.errors import BadRequest

bp = Blueprint("overview", url_prefix="/algorithm/v1")

DEFAULT_TAIL, MAX_TAIL = 200, 10_000


@bp.get("/templates")
async def catalog(request: NexusRequest) -> HTTPResponse:
    """Every template the caller may read runs of (``get``), and every workgroup."""
    access = request.app.ctx.access
    authorization = request.headers.get("authorization")
    await access.caller(authorization)  # 401 before anything is looked up
    templates, workgroups = await request.app.ctx.scheduler.catalog()
    readable = await access.readable_algorithms(authorization, (t.name for t in templates))
    return json_response(
        Catalog(templates=[t for t in templates if t.name in readable], workgroups=workgroups)
    )


@bp.get("/shards")
async def shards(request: NexusRequest) -> HTTPResponse:
    """Each shard's launch lane: queued and delayed runs, its bounds and Jobs launched."""
    await request.app.ctx.access.caller(request.headers.get("authorization"))
    return json_response(request.app.ctx.scheduler.lanes())


@bp.get("/logs/<algorithm:str>/requests/<request_id:str>")
async def logs(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    """The last ``tail`` lines of the run's Pod (or local process) log, as text."""
    await allow(request, Verb.GET, algorithm)
    tail_lines = _tail(request.args.get("tail"))
    found = await request.app.ctx.scheduler.logs(algorithm, request_id, tail_lines)
    return text(found)


def _tail(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TAIL
    # ASCII digits only (str.isdigit takes '²'), and short: int() of 5,000 digits raises
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= MAX_TAIL:
        raise BadRequest(
            f"Invalid tail={raw[:40]!r}: expected a whole number of lines from 1 to {MAX_TAIL}"
        )
    return int(raw)
