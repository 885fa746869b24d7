"""The configuration controller's clusters (``--role controller``): the controller
cluster, read through list+watch caches, and each shard's controller namespace, written
object by object. Both speak JSON dicts to :mod:`nexus.core.controller`.

Every call goes through the cluster's :class:`~nexus.backends.k8s.client.ShardClient`
with ``controller.request-timeout``: a shard whose API server stops answering costs one
timeout per sync, never a worker stuck on a dead connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec

from nexus.backends.k8s.client import ListWatch, Response, ShardClient, object_path
from nexus.core import config_sync as cs
from nexus.errors import BackendUnavailable, Conflict, SyncFailed

log = logging.getLogger("nexus.controller")

COMPONENT = "nexus-configuration-controller"
FIRST_SYNC_WAIT = 10.0
MERGE_PATCH = "application/merge-patch+json"
PLURALS = {
    cs.TEMPLATE: "nexusalgorithmtemplates",
    cs.WORKGROUP: "nexusalgorithmworkgroups",
    cs.SECRET: "secrets",
    cs.CONFIG_MAP: "configmaps",
}


class _Meta(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    owner_references: list[dict[str, Any]] = []


class _Object(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """The parts of a template, workgroup, Secret or ConfigMap the controller uses."""

    metadata: _Meta = msgspec.field(default_factory=_Meta)
    spec: Any = None
    status: Any = None
    type: str | None = None
    data: Any = None
    binary_data: Any = None
    immutable: bool | None = None


def _as_dict(kind: str, obj: _Object) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(obj)
    body["kind"] = kind
    body["apiVersion"] = cs.API_VERSIONS[kind]
    return body


def _path(kind: str, namespace: str, name: str = "") -> str:
    return object_path(cs.API_VERSIONS[kind], namespace, PLURALS[kind], name)


def _decoded(response: Response, what: str) -> dict[str, Any]:
    if response.status in (200, 201):
        body: dict[str, Any] = msgspec.json.decode(response.data)
        return body
    message = response.error().message
    if response.status == 409:
        raise Conflict(f"{what}: {message}")
    raise SyncFailed(f"{what} was refused ({response.status}): {message}")


class KubeShardObjects:
    """One shard's controller namespace (a ShardObjects port)."""

    def __init__(
        self,
        client: ShardClient,
        namespace: str,
        alias: str,
        on_change: Callable[[str, dict[str, Any]], None],
        on_reset: Callable[[], None],
    ) -> None:
        """The shard's watches follow our objects there (label ``controller-app``): a
        change or deletion (drift) calls ``on_change(kind, object)``, a fresh list (a
        start, or the shard back after an outage) ``on_reset()``."""
        self.name = client.name
        self._client = client
        self._namespace = namespace
        self._alias = alias
        self._on_change = on_change
        self._on_reset = on_reset
        self._streams: list[ListWatch[_Object]] = []

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        response = await self._client.request("get", "GET", _path(kind, self._namespace, name))
        if response.status == 404:
            return None
        return _decoded(response, f"reading {kind} '{name}' in shard '{self.name}'")

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        kind, name = body["kind"], body["metadata"]["name"]
        response = await self._client.request(
            "create", "POST", _path(kind, self._namespace), body=body
        )
        return _decoded(response, f"creating {kind} '{name}' in shard '{self.name}'")

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        kind, name = body["kind"], body["metadata"]["name"]
        response = await self._client.request(
            "update", "PUT", _path(kind, self._namespace, name), body=body
        )
        return _decoded(response, f"updating {kind} '{name}' in shard '{self.name}'")

    async def delete(self, kind: str, name: str, uid: str) -> None:
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},  # never a newer object of the same name
        }
        response = await self._client.request(
            "delete", "DELETE", _path(kind, self._namespace, name), body=options
        )
        if response.status not in (200, 202, 404, 409):
            _decoded(response, f"deleting {kind} '{name}' in shard '{self.name}'")

    async def open(self) -> None:
        query = {"labelSelector": f"{cs.APP_LABEL}={self._alias}"}
        for kind in PLURALS:
            self._streams.append(
                ListWatch(
                    self._client,
                    _path(kind, self._namespace),
                    _Object,
                    query=query,
                    on_reset=self._reset,
                    on_events=partial(self._changed, kind),
                )
            )
        for stream in self._streams:
            stream.start()

    def _reset(self, items: list[_Object]) -> None:
        self._on_reset()

    def _changed(self, kind: str, batch: list[tuple[str, _Object]]) -> None:
        for _, obj in batch:
            self._on_change(kind, _as_dict(kind, obj))

    async def close(self) -> None:
        await asyncio.gather(*(stream.stop() for stream in self._streams))
        self._client.close()


class KubeConfigSource:
    """The controller cluster's namespace (a ConfigSource port), cached by four
    list+watch streams; ``on_change(kind, name)`` for every object that changed."""

    def __init__(
        self, client: ShardClient, namespace: str, on_change: Callable[[str, str], None]
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._on_change = on_change
        self._cache: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in PLURALS}
        self._streams: dict[str, ListWatch[_Object]] = {}

    async def open(self) -> None:
        for kind in PLURALS:
            self._streams[kind] = ListWatch(
                self._client,
                _path(kind, self._namespace),
                _Object,
                on_reset=partial(self._reset, kind),
                on_events=partial(self._apply, kind),
            )
            self._streams[kind].start()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(s.synced.wait() for s in self._streams.values())),
                timeout=FIRST_SYNC_WAIT,
            )
        except TimeoutError:
            log.warning("controller cluster not listed yet, still trying: %s", self._problem())

    async def close(self) -> None:
        await asyncio.gather(*(stream.stop() for stream in self._streams.values()))
        self._client.close()

    def _problem(self) -> str:
        for kind, stream in self._streams.items():
            if not stream.synced.is_set():
                return (
                    f"{PLURALS[kind]} in namespace '{self._namespace}' of the controller "
                    f"cluster are not listed ({stream.error or 'no answer yet'})"
                )
        return ""

    async def ping(self) -> None:
        problem = self._problem() if self._streams else "the controller cluster is not open"
        if problem:
            raise BackendUnavailable(problem)

    def _reset(self, kind: str, items: list[_Object]) -> None:
        old = self._cache[kind]
        self._cache[kind] = {item.metadata.name: _as_dict(kind, item) for item in items}
        for name in sorted(old.keys() | self._cache[kind].keys()):
            self._on_change(kind, name)

    def _apply(self, kind: str, batch: list[tuple[str, _Object]]) -> None:
        for event, item in batch:
            name = item.metadata.name
            if event == "DELETED":
                self._cache[kind].pop(name, None)
            else:
                self._cache[kind][name] = _as_dict(kind, item)
            self._on_change(kind, name)

    # --- ConfigSource ------------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._cache[kind].get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._cache[kind])

    async def _patch(self, obj: dict[str, Any], patch: dict[str, Any], sub: str = "") -> Any:
        kind, meta = obj["kind"], obj["metadata"]
        guarded = {
            **patch,
            "metadata": {**patch.get("metadata", {}), "resourceVersion": meta["resourceVersion"]},
        }
        response = await self._client.request(
            "patch",
            "PATCH",
            _path(kind, self._namespace, meta["name"]) + sub,
            body=guarded,
            content_type=MERGE_PATCH,
        )
        return _decoded(response, f"writing {kind} '{meta['name']}'{sub} in the controller cluster")

    async def set_owners(self, obj: dict[str, Any], owners: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = await self._patch(obj, {"metadata": {"ownerReferences": owners}})
        return body

    async def write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        await self._patch(obj, {"status": status}, "/status")

    async def event(
        self, involved: dict[str, Any], warning: bool, reason: str, message: str
    ) -> None:
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": self._namespace},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": self._namespace,
                "uid": meta.get("uid", ""),
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            response = await self._client.request(
                "create", "POST", object_path("v1", self._namespace, "events"), body=event
            )
            _decoded(response, f"recording an Event on {involved['kind']} '{meta['name']}'")
        except (BackendUnavailable, SyncFailed, Conflict) as exc:
            log.warning("%s", exc.message)
