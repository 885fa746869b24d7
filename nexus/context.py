"""The typed Sanic context: what an app holds for its handlers (``app.ctx``).

``create_app`` makes one :class:`NexusContext` per app with what every role has (the
settings, metrics, run watch, readiness checks); each role's ``start`` then sets the use
case its handlers call. Handlers are typed with :data:`NexusRequest`, so the type checker
knows ``request.app.ctx.scheduler`` is a :class:`~nexus.core.scheduling.Scheduler`; a
handler of a role reads only what its own role sets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from sanic import Request, Sanic
from sanic.config import Config

from nexus.core.access import AccessPolicy
from nexus.core.catalog import RunCatalog
from nexus.core.completion import Completion
from nexus.core.ports import PayloadBuffer
from nexus.core.scheduling import Scheduler
from nexus.core.signing import UrlSigner
from nexus.core.supervision import Supervision
from nexus.core.watch import RunWatch
from nexus.metrics import Metrics
from nexus.settings import Settings

log = logging.getLogger("nexus")


class NexusContext:
    # Set by the scheduler role: the run API and the signed payload/result routes.
    scheduler: Scheduler
    catalog: RunCatalog  # the listing, counts and history
    access: AccessPolicy  # who may call the run API (auth.mode)
    buffer: PayloadBuffer
    signer: UrlSigner
    # Set by the receiver role: the completion API.
    completion: Completion
    # Set by the supervisor role (it serves no API of its own; kept for inspection).
    supervision: Supervision

    def __init__(self, settings: Settings, role: str, metrics: Metrics) -> None:
        self.settings = settings
        self.role = role
        self.metrics = metrics
        self.watch = RunWatch()
        # What /health/ready awaits: each raises BackendUnavailable when its server is down.
        self.readiness: list[Callable[[], Awaitable[None]]] = []
        self.log = log
        self.openapi_document: bytes | None = None  # encoded at the first request


NexusApp = Sanic[Config, NexusContext]
NexusRequest = Request[NexusApp, SimpleNamespace]
