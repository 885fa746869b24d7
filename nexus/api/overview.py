"""What the UI shows beside the runs: the templates and workgroups nexus knows, and each
shard's launch queue. Read-only; checked like the run routes (``auth.mode``)."""

from __future__ import annotations

from sanic import Blueprint
from sanic.response import HTTPResponse

from nexus.api.runs import json_response
from nexus.api.schemas import Catalog
from nexus.context import NexusRequest
from nexus.core.access import Verb
from nexus.errors import Forbidden

bp = Blueprint("overview", url_prefix="/algorithm/v1")


@bp.get("/templates")
async def catalog(request: NexusRequest) -> HTTPResponse:
    """Every template the caller may read runs of (``get``), and every workgroup."""
    access = request.app.ctx.access
    authorization = request.headers.get("authorization")
    await access.caller(authorization)  # 401 before anything is looked up
    templates, workgroups = await request.app.ctx.scheduler.catalog()
    if access.enforced:
        readable = []
        for template in templates:
            try:
                await access.check(authorization, Verb.GET, template.name)
            except Forbidden:
                continue
            readable.append(template)
        templates = readable
    return json_response(Catalog(templates=templates, workgroups=workgroups))


@bp.get("/shards")
async def shards(request: NexusRequest) -> HTTPResponse:
    """Each shard's launch lane: queued and delayed runs, its bounds and Jobs launched."""
    await request.app.ctx.access.caller(request.headers.get("authorization"))
    return json_response(request.app.ctx.scheduler.lanes())
