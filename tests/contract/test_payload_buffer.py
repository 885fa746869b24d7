"""The PayloadBuffer contract (nexus.core.ports.PayloadBuffer), run against every
implementation: the local folder and S3 (marker ``s3``, SeaweedFS, which checks request
signatures).

The URLs a buffer hands out are fetched with plain HTTP requests, exactly as an algorithm
or a client would: presigned S3 URLs go to the S3 server; the local buffer's signed URLs
go to the scheduler's own ``/data/v1`` routes, served in-process (see conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pytest

from nexus.backends.buffer.s3 import s3_buffer
from nexus.errors import BackendUnavailable, BadRequest, NotFound
from nexus.settings import S3Buffer

ALGORITHM = "contract-algorithm"


def new_id() -> str:
    return str(uuid.uuid4())


def tamper(url: str, key_part: str) -> str:
    """Flip one character of the query parameter whose name contains ``key_part``."""
    parts = urlsplit(url)
    query = []
    for name, value in parse_qsl(parts.query):
        if key_part in name.lower():
            value = value[:-1] + ("0" if value[-1] != "0" else "1")
        query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def signature_key(kind: str) -> str:
    return "sig" if kind == "local" else "signature"


async def test_put_get_exists(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    assert not await buffer.exists(ALGORITHM, run_id)
    await buffer.put(ALGORITHM, run_id, b'{"x": 1}')
    assert await buffer.exists(ALGORITHM, run_id)
    assert await buffer.get(ALGORITHM, run_id) == b'{"x": 1}'
    assert not await buffer.exists("other-algorithm", run_id)


async def test_put_accepts_a_memoryview_and_replaces(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    await buffer.put(ALGORITHM, run_id, b"first")
    await buffer.put(ALGORITHM, run_id, memoryview(b'{"second": true}'))
    assert await buffer.get(ALGORITHM, run_id) == b'{"second": true}'


async def test_missing_objects_are_not_found(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    with pytest.raises(NotFound):
        await buffer.get(ALGORITHM, run_id)
    with pytest.raises(NotFound):
        await buffer.get_result(ALGORITHM, run_id)


async def test_large_body_over_the_multipart_threshold(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    body = os.urandom(1024 * 1024) * 12 + b"tail"  # 12 MiB: over the 8 MiB default
    await buffer.put(ALGORITHM, run_id, body)
    assert await buffer.get(ALGORITHM, run_id) == body
    response = await payload_buffer.http.get(buffer.payload_url(ALGORITHM, run_id, 300))
    assert response.status_code == 200 and response.content == body


async def test_payload_url_downloads_with_a_plain_get(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    await buffer.put(ALGORITHM, run_id, b'{"hello": "world"}')
    url = buffer.payload_url(ALGORITHM, run_id, 600)
    response = await payload_buffer.http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == b'{"hello": "world"}'


async def test_tampered_payload_url_is_refused(payload_buffer):
    buffer, run_id, other = payload_buffer.buffer, new_id(), new_id()
    await buffer.put(ALGORITHM, run_id, b"{}")
    await buffer.put(ALGORITHM, other, b'{"secret": 1}')
    url = buffer.payload_url(ALGORITHM, run_id, 600)
    bad_signature = tamper(url, signature_key(payload_buffer.kind))
    assert bad_signature != url
    assert (await payload_buffer.http.get(bad_signature)).status_code == 403
    repointed = url.replace(run_id, other)
    assert (await payload_buffer.http.get(repointed)).status_code == 403


async def test_expired_payload_url_is_refused(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    await buffer.put(ALGORITHM, run_id, b"{}")
    url = buffer.payload_url(ALGORITHM, run_id, 1)
    await asyncio.sleep(2.2)
    assert (await payload_buffer.http.get(url)).status_code == 403


async def test_result_urls_upload_then_download(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    upload, download = buffer.result_urls(ALGORITHM, run_id, 600)
    response = await payload_buffer.http.put(
        upload, content=b'{"result": 42}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (200, 201), response.text
    response = await payload_buffer.http.get(download)
    assert response.status_code == 200 and response.content == b'{"result": 42}'
    assert await buffer.get_result(ALGORITHM, run_id) == b'{"result": 42}'
    # The download URL does not allow an upload, nor the upload URL another run's result.
    assert (await payload_buffer.http.put(download, content=b"x")).status_code in (403, 405)
    assert (
        await payload_buffer.http.put(upload.replace(run_id, new_id()), content=b"x")
    ).status_code == 403


async def test_put_result_then_get_result(payload_buffer):
    buffer, run_id = payload_buffer.buffer, new_id()
    await buffer.put_result(ALGORITHM, run_id, b'{"done": true}')
    assert await buffer.get_result(ALGORITHM, run_id) == b'{"done": true}'
    assert not await buffer.exists(ALGORITHM, run_id)  # a result is not a payload


async def test_ping_answers(payload_buffer):
    await payload_buffer.buffer.ping()


# --- S3 only: what has no local counterpart (no server needed) --------------------------


def offline_s3(**overrides) -> object:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    return s3_buffer(
        S3Buffer(
            payload_storage_path="s3a://bucket/prefix",
            endpoint=f"http://127.0.0.1:{port}",
            access_key_id="k",
            secret_access_key="s",
            **overrides,
        )
    )


def test_s3_url_lifetime_is_capped_at_seven_days():
    buffer = offline_s3()
    assert "X-Amz-Expires=604800" in buffer.payload_url(ALGORITHM, new_id(), 7 * 24 * 3600)
    with pytest.raises(BadRequest):
        buffer.payload_url(ALGORITHM, new_id(), 7 * 24 * 3600 + 1)


def test_s3_object_layout_follows_the_go_system():
    url = offline_s3().payload_url(ALGORITHM, "0f0e", 60)
    assert unquote(urlsplit(url).path) == f"/bucket/prefix/algorithm={ALGORITHM}/0f0e"


async def test_unreachable_s3_is_backend_unavailable():
    buffer = offline_s3(connect_timeout=1.0, max_retries=1, retry_timeout=2.0)
    for action in (
        buffer.open(),
        buffer.put(ALGORITHM, new_id(), b"{}"),
        buffer.get(ALGORITHM, new_id()),
        buffer.exists(ALGORITHM, new_id()),
    ):
        with pytest.raises(BackendUnavailable):
            await asyncio.wait_for(action, 20)
