"""Receiver role: the completion API algorithms report to."""

from __future__ import annotations

from sanic import Sanic

from nexus.api import completions
from nexus.core.completion import Completion
from nexus.roles.shared import Shared


def routes(app: Sanic) -> None:
    app.blueprint(completions.bp)


async def start(app: Sanic, shared: Shared) -> None:
    app.ctx.completion = Completion(await shared.store(), app.ctx.watch)
