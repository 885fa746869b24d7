"""Fixtures that build every implementation of a port, so one suite runs against all.

The SQLite store and the local-folder buffer always run; the Cassandra store and the S3
buffer need the servers of ``scripts/testenv`` (see ``servers.py``). A test session
uses one fresh keyspace and one fresh S3 prefix and removes them at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from sanic import Sanic
from servers import cassandra_config, delete_prefix, drop_keyspace, s3_config, unique

from nexus.api import data
from nexus.app import PlainTextErrors
from nexus.backends.buffer.local import local_buffer
from nexus.backends.buffer.objects import ObjectPayloadBuffer
from nexus.backends.buffer.s3 import s3_buffer
from nexus.backends.store.cassandra import CassandraRunStore
from nexus.backends.store.sqlite import SqliteRunStore
from nexus.core.signing import UrlSigner


class Scratch:
    """A session-wide name on a server, cleaned up only if some test used it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.used = False


@pytest.fixture(scope="session")
def cassandra_keyspace():
    scratch = Scratch(unique("nexus_test_"))
    yield scratch
    if scratch.used:
        drop_keyspace(scratch.name)


@pytest.fixture(scope="session")
def s3_prefix():
    scratch = Scratch(unique("nexus-test-"))
    yield scratch
    if scratch.used:
        delete_prefix(scratch.name)


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])
async def run_store(request, tmp_path: Path, cassandra_keyspace: Scratch):
    if request.param == "sqlite":
        store = SqliteRunStore(tmp_path / "runs.db")
    else:
        store = CassandraRunStore(cassandra_config(cassandra_keyspace.name))
        cassandra_keyspace.used = True
    await store.open()
    yield store
    await store.close()


class BufferUnderTest(NamedTuple):
    kind: str
    buffer: ObjectPayloadBuffer
    http: httpx.AsyncClient  # reaches the URLs the buffer hands out


@contextlib.asynccontextmanager
async def data_routes(buffer: ObjectPayloadBuffer, signer: UrlSigner) -> AsyncIterator[Sanic]:
    """The scheduler's own ``/data/v1`` routes, which serve the local buffer's signed URLs,
    in-process over ASGI (lifespan started by hand, as a server would)."""
    app = Sanic(f"contract-{uuid.uuid4().hex[:8]}", error_handler=PlainTextErrors())
    app.config.TOUCHUP = False  # it rewrites shared classes once per process, not per app
    app.blueprint(data.bp)
    app.ctx.signer = signer
    app.ctx.buffer = buffer
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield app
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
async def payload_buffer(request, tmp_path: Path, s3_prefix: Scratch):
    if request.param == "local":
        signer = UrlSigner(b"contract-test-secret-0123456789", "http://nexus.test")
        buffer = local_buffer(tmp_path / "payloads", signer)
        await buffer.open()
        async with data_routes(buffer, signer) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, timeout=30) as http:
                yield BufferUnderTest("local", buffer, http)
    else:
        buffer = s3_buffer(s3_config(s3_prefix.name))
        s3_prefix.used = True
        await buffer.open()
        async with httpx.AsyncClient(timeout=30) as http:
            yield BufferUnderTest("s3", buffer, http)
    await buffer.close()
