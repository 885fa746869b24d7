"""Receiver role: the completion API algorithms report to."""

from __future__ import annotations

from nexus.api import completions
from nexus.context import NexusApp
from nexus.core.completion import Completion
from nexus.roles.shared import Shared


def routes(app: NexusApp) -> None:
    app.blueprint(completions.bp)


async def start(app: NexusApp, shared: Shared) -> None:
    app.ctx.completion = Completion(await shared.store(), app.ctx.watch)
