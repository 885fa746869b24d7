"""Payload buffer over any obstore store (local folder or S3).

Object layout, as in the Go system: ``<prefix>/algorithm=<name>/<requestId>`` for
payloads; results an algorithm uploads go to ``<prefix>/results/algorithm=<name>/<id>``.
How URLs are made is the only difference between stores, so it is passed in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple, Protocol

import obstore
from obstore.exceptions import BaseError, NotFoundError

from nexus.errors import BackendUnavailable, NotFound


class ObjectRef(NamedTuple):
    kind: str  # "payload" or "result"
    algorithm: str
    run_id: str
    key: str


UrlMethod = Literal["GET", "PUT"]


class UrlMaker(Protocol):
    def __call__(self, method: UrlMethod, ref: ObjectRef, valid_for: float) -> str: ...


def payload_key(prefix: str, algorithm: str, run_id: str) -> str:
    return f"{prefix}algorithm={algorithm}/{run_id}"


def result_key(prefix: str, algorithm: str, run_id: str) -> str:
    return f"{prefix}results/algorithm={algorithm}/{run_id}"


class ObjectPayloadBuffer:
    def __init__(
        self,
        store: obstore.store.ObjectStore,
        prefix: str,
        urls: UrlMaker,
        *,
        describe: str,
        multipart_threshold: int = 8 * 1024 * 1024,
        durable: Callable[[], Awaitable[None]] | None = None,
        on_open: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``durable``: awaited after each write until it is on stable storage, for
        stores whose writes are not durable when they return (a local folder); S3's
        are. ``on_open`` / ``on_close`` start and stop what it needs."""
        self._store = store
        self._durable = durable
        self._on_open, self._on_close = on_open, on_close
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._urls = urls
        self._describe = describe
        self._multipart_threshold = multipart_threshold

    def _unavailable(self, action: str, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"Payload storage ({self._describe}) failed to {action}: {exc}")

    async def open(self) -> None:
        if self._on_open is not None:
            self._on_open()
        await self.ping()

    async def close(self) -> None:
        if self._on_close is not None:
            self._on_close()

    async def ping(self) -> None:
        try:
            await obstore.head_async(self._store, f"{self._prefix}.nexus-ping")
        except (NotFoundError, FileNotFoundError):
            return
        except (BaseError, OSError) as exc:
            raise self._unavailable("answer", exc) from exc

    async def _put(self, key: str, data: bytes | memoryview) -> None:
        try:
            await obstore.put_async(
                self._store, key, data, use_multipart=len(data) > self._multipart_threshold
            )
            if self._durable is not None:
                await self._durable()
        except (BaseError, OSError) as exc:
            raise self._unavailable("store an object", exc) from exc

    async def _get(self, key: str, what: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError) as exc:
            raise NotFound(f"No {what} stored for this request") from exc
        except (BaseError, OSError) as exc:
            raise self._unavailable("read an object", exc) from exc

    async def put(self, algorithm: str, run_id: str, data: bytes | memoryview) -> None:
        await self._put(payload_key(self._prefix, algorithm, run_id), data)

    async def get(self, algorithm: str, run_id: str) -> bytes:
        return await self._get(payload_key(self._prefix, algorithm, run_id), "payload")

    async def exists(self, algorithm: str, run_id: str) -> bool:
        try:
            await obstore.head_async(self._store, payload_key(self._prefix, algorithm, run_id))
            return True
        except (NotFoundError, FileNotFoundError):
            return False
        except (BaseError, OSError) as exc:
            raise self._unavailable("answer", exc) from exc

    def payload_url(self, algorithm: str, run_id: str, valid_for: float) -> str:
        ref = ObjectRef("payload", algorithm, run_id, payload_key(self._prefix, algorithm, run_id))
        return self._urls("GET", ref, valid_for)

    def result_urls(self, algorithm: str, run_id: str, valid_for: float) -> tuple[str, str]:
        ref = ObjectRef("result", algorithm, run_id, result_key(self._prefix, algorithm, run_id))
        return self._urls("PUT", ref, valid_for), self._urls("GET", ref, valid_for)

    async def put_result(self, algorithm: str, run_id: str, data: bytes) -> None:
        await self._put(result_key(self._prefix, algorithm, run_id), data)

    async def get_result(self, algorithm: str, run_id: str) -> bytes:
        return await self._get(result_key(self._prefix, algorithm, run_id), "result")
