"""Python client for nexus: ``NexusClient`` (blocking) and ``AsyncNexusClient`` (asyncio).

    from nexus_run_client import NexusClient

    with NexusClient("http://nexus-scheduler:8080", token=get_token) as nexus:
        run_id = nexus.create_run("word-stats", {"text": "hello"}, tag="demo")
        result = nexus.await_run("word-stats", run_id, timeout=600)
        print(result.status, result.result_uri)

Errors are :class:`NexusClientError` subclasses carrying the server's message; see
docs/client.md.
"""

from nexus_run_client._calls import RetryPolicy
from nexus_run_client.async_ import AsyncNexusClient
from nexus_run_client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NexusClientError,
    NoPayload,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    ServerError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from nexus_run_client.models import ParentRequest, RunResult
from nexus_run_client.sync import NexusClient

__all__ = [
    "AsyncNexusClient",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NexusClient",
    "NexusClientError",
    "NoPayload",
    "NotFound",
    "ParentRequest",
    "PayloadTooLarge",
    "QueueFull",
    "RetryPolicy",
    "RunResult",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]
