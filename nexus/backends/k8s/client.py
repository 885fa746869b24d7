"""Talking to one Kubernetes API server: a rate-limited client, and list+watch streams.

The ``kubernetes`` package is used for what it does well — reading kubeconfig files and
in-cluster credentials (client certificates, tokens, exec plugins with their refresh; see
``shards.py``) and building the TLS connection pool — while requests go straight through
that pool as JSON
bytes encoded and decoded by msgspec: the generated API classes validate and build model
objects for every call, which costs more than the call itself at a few hundred per
second, and the watcher needs only a handful of status fields.

The client has no QPS limit of its own, so each cluster gets a token bucket
(``kubernetes.client-qps`` / ``client-burst``) that every request passes first, and a
connection pool and thread pool sized to the burst. The sync calls run in that thread
pool (requests) or in a dedicated thread per stream (watches), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode

import msgspec
import urllib3
from kubernetes.client import ApiClient

from nexus._rust_queue import TokenBucket
from nexus.errors import BackendUnavailable
from nexus.metrics import Metrics

log = logging.getLogger("nexus.kube")

LIST_PAGE = 500
WATCH_SECONDS = 290  # the API server ends a watch after this; it is resumed at once
REQUEST_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)
# Connection drops are retried once by urllib3: every call nexus makes is idempotent
# (a Job is named by its run id, so a repeated create answers 409 and is read back).
RETRIES = urllib3.Retry(
    total=2,
    connect=2,
    read=1,
    status=0,
    redirect=0,
    other=0,
    allowed_methods=None,
    raise_on_status=False,
    backoff_factor=0.05,
)

T = TypeVar("T")


class _HasResourceVersion(Protocol):
    resource_version: str


class Watchable(Protocol):
    """What a ListWatch can follow: an object whose metadata has a resourceVersion."""

    @property
    def metadata(self) -> _HasResourceVersion: ...


W = TypeVar("W", bound=Watchable)


class ShardConfig(msgspec.Struct, frozen=True):
    """One cluster: its name, credentials (a ``kubernetes.client.Configuration``), the
    namespace its run Jobs live in, and where its configuration came from (for messages)."""

    name: str
    configuration: Any
    namespace: str
    source: str


# --- one cluster's client -------------------------------------------------------------


class ApiMetrics:
    """``nexus_kube_api_responses_total{shard,verb,code}`` (code ``error`` when the API
    server could not be reached) and the seconds requests waited for the client's token
    bucket; safe to bump from any thread. Without a registry it counts nothing."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._lock = threading.Lock()
        self._responses = self._waited = None
        if metrics is not None:
            self._responses = metrics.counter(
                "nexus_kube_api_responses_total",
                "Kubernetes API calls by shard, verb and HTTP answer code",
                ("shard", "verb", "code"),
            )
            self._waited = metrics.counter(
                "nexus_kube_client_throttle_seconds_total",
                "Seconds Kubernetes API calls waited for the client QPS limit",
                ("shard",),
            )

    def response(self, shard: str, verb: str, code: str) -> None:
        if self._responses is not None:
            with self._lock:
                self._responses.inc(shard, verb, code)

    def waited(self, shard: str, seconds: float) -> None:
        if self._waited is not None:
            with self._lock:
                self._waited.inc(shard, amount=seconds)


class Status(msgspec.Struct, kw_only=True):
    """A ``meta/v1 Status``: how the API server explains an error."""

    code: int = 0
    reason: str = ""
    message: str = ""


class Response(msgspec.Struct, frozen=True):
    status: int
    data: bytes

    def error(self) -> Status:
        try:
            status = msgspec.json.decode(self.data, type=Status)
        except msgspec.DecodeError:
            text = self.data[:300].decode(errors="replace").strip()
            return Status(code=self.status, message=text or f"HTTP {self.status}")
        status.message = status.message or status.reason or f"HTTP {self.status}"
        return status


class _ListMeta(msgspec.Struct, rename="camel", kw_only=True):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _List(msgspec.Struct, Generic[T], kw_only=True):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[T] = []


class _WatchEvent(msgspec.Struct, kw_only=True):
    type: str
    object: msgspec.Raw


class _Meta(msgspec.Struct, rename="camel", kw_only=True):
    resource_version: str = ""


class _Versioned(msgspec.Struct, kw_only=True):
    metadata: _Meta = msgspec.field(default_factory=_Meta)


_ENCODER = msgspec.json.Encoder()
_EVENT_DECODER = msgspec.json.Decoder(_WatchEvent)
_VERSION_DECODER = msgspec.json.Decoder(_Versioned)
_STATUS_DECODER = msgspec.json.Decoder(Status)


class ShardClient:
    """Requests to one cluster's API server, each after a token from its bucket."""

    def __init__(
        self,
        shard: ShardConfig,
        *,
        qps: float,
        burst: int,
        metrics: ApiMetrics | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self.name = shard.name
        self.namespace = shard.namespace
        self.source = shard.source
        self.pool_size = max(4, min(32, burst))
        configuration = shard.configuration
        configuration.connection_pool_maxsize = self.pool_size
        self._configuration = configuration
        self._api = ApiClient(configuration)
        self._http = self._api.rest_client.pool_manager
        self._host = configuration.host.rstrip("/")
        self._bucket = TokenBucket(qps, max(1, burst))
        self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix=f"kube-{self.name}")
        self._metrics = metrics or ApiMetrics()
        self._decoders: dict[type, msgspec.json.Decoder] = {}
        self._timeout = (
            urllib3.Timeout(connect=min(5.0, request_timeout), read=request_timeout)
            if request_timeout
            else REQUEST_TIMEOUT
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._api.close()

    # --- plumbing ----------------------------------------------------------------------

    def _headers(self, content_type: str = "application/json") -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": "nexus",
        }
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers[bearer["key"]] = bearer["value"]
        return headers

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        return f"{self._host}{path}" + (f"?{urlencode(query)}" if query else "")

    def _wait_sync(self) -> None:
        wait = self._bucket.reserve(1)
        if wait > 0:
            self._metrics.waited(self.name, wait)
            time.sleep(wait)

    def _send(
        self,
        verb: str,
        method: str,
        url: str,
        body: bytes | None,
        stream: bool = False,
        timeout: urllib3.Timeout | None = None,
        content_type: str = "application/json",
    ) -> Any:
        try:
            response = self._http.request(
                method,
                url,
                body=body,
                headers=self._headers(content_type),
                timeout=timeout or self._timeout,
                retries=RETRIES,
                preload_content=not stream,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._metrics.response(self.name, verb, "error")
            raise BackendUnavailable(
                f"Kubernetes API server of shard '{self.name}' ({self._host}) did not answer "
                f"{method} {url.removeprefix(self._host)}: {exc}"
            ) from exc
        self._metrics.response(self.name, verb, str(response.status))
        return response

    def _call(
        self,
        verb: str,
        method: str,
        url: str,
        body: bytes | None,
        content_type: str = "application/json",
    ) -> Response:
        response = self._send(verb, method, url, body, content_type=content_type)
        return Response(response.status, response.data)

    def decoder(self, item_type: type[T]) -> msgspec.json.Decoder[_List[T]]:
        decoder = self._decoders.get(item_type)
        if decoder is None:
            # _List[item_type], spelled so that a type checker accepts an item type known
            # only at run time.
            decoder = self._decoders[item_type] = msgspec.json.Decoder(
                types.GenericAlias(_List, (item_type,))
            )
        return decoder

    # --- requests ----------------------------------------------------------------------

    async def request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Response:
        """One call; raise BackendUnavailable when the API server cannot be reached."""
        wait = self._bucket.reserve(1)
        if wait > 0:
            self._metrics.waited(self.name, wait)
            await asyncio.sleep(wait)
        encoded = None if body is None else _ENCODER.encode(body)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor,
                partial(self._call, verb, method, self.url(path, query), encoded, content_type),
            )
        except RuntimeError as exc:  # the executor was shut down: nexus is stopping
            raise BackendUnavailable(f"shard '{self.name}' client is closed") from exc

    def list_sync(
        self, path: str, item_type: type[T], query: dict[str, Any]
    ) -> tuple[list[T], str]:
        """Every object (page by page) and the resourceVersion to watch from."""
        decoder = self.decoder(item_type)
        items: list[T] = []
        token = ""
        while True:
            self._wait_sync()
            response = self._call(
                "list",
                "GET",
                self.url(path, {**query, "limit": LIST_PAGE, "continue": token}),
                None,
            )
            if response.status == 410 and token:  # the continue token expired: start over
                items, token = [], ""
                continue
            if response.status != 200:
                raise BackendUnavailable(
                    f"Listing {path} on shard '{self.name}' failed: {response.error().message}"
                )
            page = decoder.decode(response.data)
            items.extend(page.items)
            token = page.metadata.continue_
            if not token:
                return items, page.metadata.resource_version

    async def list(self, path: str, item_type: type[T], query: dict[str, Any]) -> list[T]:
        loop = asyncio.get_running_loop()
        try:
            items, _ = await loop.run_in_executor(
                self._executor, partial(self.list_sync, path, item_type, query)
            )
        except RuntimeError as exc:
            raise BackendUnavailable(f"shard '{self.name}' client is closed") from exc
        return items

    def open_watch(self, path: str, query: dict[str, Any], resource_version: str) -> Any:
        """A streaming watch response (caller reads and closes it)."""
        self._wait_sync()
        url = self.url(
            path,
            {
                **query,
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": WATCH_SECONDS,
            },
        )
        return self._send(
            "watch",
            "GET",
            url,
            None,
            stream=True,
            timeout=urllib3.Timeout(connect=5.0, read=WATCH_SECONDS + 30),
        )


def object_path(group_version: str, namespace: str, plural: str, name: str = "") -> str:
    """``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` otherwise."""
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


# --- list + watch ---------------------------------------------------------------------


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _lines(response: Any) -> Iterator[list[bytes]]:
    """The watch stream's JSON lines, grouped as they arrive."""
    pending = b""
    for chunk in response.stream(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if lines:
            yield [line for line in lines if line.strip()]


class ListWatch(Generic[W]):
    """Keeps one collection in sync, in its own thread: list, then watch from the list's
    resourceVersion (with bookmarks), resume a watch that ends, list again on 410 Gone or
    after an error (with a capped backoff). Each batch is handed to the event loop:
    ``on_reset(items)`` after a list, ``on_events([(type, object), ...])`` for a watch."""

    def __init__(
        self,
        client: ShardClient,
        path: str,
        item_type: type[W],
        *,
        query: dict[str, Any] | None = None,
        on_reset: Callable[[list[W]], None],
        on_events: Callable[[list[tuple[str, W]]], None],
    ) -> None:
        self._client = client
        self._path = path
        self._type = item_type
        self._query = query or {}
        self._on_reset = on_reset
        self._on_events = on_events
        self._decoder = msgspec.json.Decoder(item_type)
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.synced = asyncio.Event()
        self.error = ""

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run,
            daemon=True,
            name=f"watch-{self._client.name}-{self._path.rsplit('/', 1)[-1]}",
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - it may be closing on its own right now
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    def _deliver(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            self._stop.set()
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed meanwhile
            self._stop.set()

    def _run(self) -> None:
        version = ""
        delay = 0.5
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = self._client.list_sync(self._path, self._type, self._query)
                    self._deliver(self._on_reset, items)
                    self._deliver(self.synced.set)
                began = time.monotonic()
                version = self._watch(version)
                delay = 0.5
                self.error = ""
                if time.monotonic() - began < 1.0:  # a server that ends watches at once
                    self._stop.wait(1.0)
            except _Expired:
                version = ""
            except Exception as exc:  # noqa: BLE001 - a stream must outlive any failure
                if self._stop.is_set():
                    break
                self.error = getattr(exc, "message", None) or str(exc)
                log.warning(
                    "watch of %s on shard '%s' failed, retrying in %.1fs: %s",
                    self._path,
                    self._client.name,
                    delay,
                    self.error,
                )
                version = ""
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _watch(self, version: str) -> str:
        """Follow the watch until it ends; return the resourceVersion to resume from."""
        response = self._client.open_watch(self._path, self._query, version)
        self._response = response
        try:
            if response.status == 410:
                raise _Expired()
            if response.status != 200:
                raise BackendUnavailable(
                    f"watch refused: {Response(response.status, response.read()).error().message}"
                )
            for lines in _lines(response):
                batch: list[tuple[str, W]] = []
                for line in lines:
                    event = _EVENT_DECODER.decode(line)
                    if event.type == "ERROR":
                        if batch:
                            self._deliver(self._on_events, batch)
                        status = _STATUS_DECODER.decode(event.object)
                        if status.code == 410:
                            raise _Expired()
                        raise BackendUnavailable(f"watch error {status.code}: {status.message}")
                    if event.type == "BOOKMARK":
                        version = _VERSION_DECODER.decode(event.object).metadata.resource_version
                        continue
                    item = self._decoder.decode(event.object)
                    version = item.metadata.resource_version or version
                    batch.append((event.type, item))
                if batch:
                    self._deliver(self._on_events, batch)
        finally:
            self._response = None
            response.release_conn()
        return version
