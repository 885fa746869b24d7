"""A browsable page of the API: Redoc, served from the package (no CDN), reading
``/openapi.json`` of the same process."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sanic import Blueprint
from sanic.response import HTTPResponse, html, raw

from nexus.context import NexusRequest

bp = Blueprint("docs")

_REDOC = Path(__file__).parent / "static" / "redoc" / "redoc.standalone.js"
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nexus API</title>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"""


@cache
def _redoc() -> bytes:
    return _REDOC.read_bytes()


@bp.get("/docs")
async def page(request: NexusRequest) -> HTTPResponse:
    return html(_PAGE)


@bp.get("/docs/redoc.standalone.js")
async def redoc(request: NexusRequest) -> HTTPResponse:
    return raw(
        _redoc(),
        content_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )
