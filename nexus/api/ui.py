"""The web UI at ``/ui``: three static files from the package (no CDN, no build step),
calling the run API of the same process with the caller's token."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from nexus.context import NexusRequest
from nexus.errors import NotFound

bp = Blueprint("ui")

_STATIC = Path(__file__).parent / "static" / "ui"
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Only this origin's own files run, and the page cannot be framed: a run's tag or error
# text that holds markup is shown as text by app.js, and the policy stops it otherwise.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


@bp.get("/ui")
async def page(request: NexusRequest) -> HTTPResponse:
    return _file("index.html")


@bp.get("/ui/<name:str>")
async def asset(request: NexusRequest, name: str) -> HTTPResponse:
    if name not in _FILES:
        raise NotFound(f"No UI file '{name[:80]}'; the UI is at /ui")
    return _file(name)


def _file(name: str) -> HTTPResponse:
    return raw(_read(name), content_type=_FILES[name], headers=_HEADERS)
