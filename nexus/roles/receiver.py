"""Receiver role: the completion API algorithms report to."""

from __future__ import annotations

from nexus.api import completions
from nexus.backends import factory
from nexus.context import NexusApp
from nexus.core.completion import Completion
from nexus.roles.shared import Shared


def routes(app: NexusApp) -> None:
    app.blueprint(completions.bp)


async def start(app: NexusApp, shared: Shared) -> None:
    settings = shared.settings
    tokens = factory.make_run_tokens(settings) if settings.auth.receiver_tokens else None
    app.ctx.completion = Completion(await shared.store(), app.ctx.watch, tokens)
