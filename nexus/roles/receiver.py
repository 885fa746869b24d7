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
    auth = settings.auth
    if auth.receiver_tokens and not auth.receiver_token_secret and app.ctx.role != "all":
        # The key then lives in this data folder: a scheduler elsewhere has another one.
        app.ctx.log.warning(
            "auth.receiver-tokens without auth.receiver-token-secret: only runs rendered "
            "by a scheduler sharing data-dir %s can report here",
            settings.data_dir,
        )
    tokens = factory.make_run_tokens(settings) if auth.receiver_tokens else None
    app.ctx.completion = Completion(await shared.store(), app.ctx.watch, tokens)
