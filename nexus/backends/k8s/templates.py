"""Templates and workgroups read from the cluster (``template-source: kubernetes``).

``NexusAlgorithmTemplate`` and ``NexusAlgorithmWorkgroup`` resources in
``runtime-namespace`` of the cluster nexus runs in (``kube-config-path``, or the in-cluster
service account) are kept in a cache by two list+watch streams, so a lookup on the accept
path costs no API call and an applied change is seen within moments. A resource whose
spec does not decode is logged and skipped, keeping its last good version. Until the
first list has arrived, lookups and the readiness check answer 503 with the reason (for
example, the CRDs are not installed), rather than a misleading "unknown template". A run
of a resource that exists but never decoded (a field nexus does not know or cannot use)
is a 400 with the decoding error, so its author learns why without reading nexus's log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from nexus.backends.k8s.client import ListWatch, ShardClient, object_path
from nexus.backends.k8s.shards import home_client
from nexus.core.models import AlgorithmSpec, Template, Workgroup, WorkgroupSpec
from nexus.errors import BackendUnavailable, BadRequest
from nexus.settings import Settings

log = logging.getLogger("nexus.templates")

GROUP_VERSION = "science.sneaksanddata.com/v1"
TEMPLATES = "nexusalgorithmtemplates"
WORKGROUPS = "nexusalgorithmworkgroups"
FIRST_SYNC_WAIT = 10.0

S = TypeVar("S")
R = TypeVar("R")


class ResourceMeta(msgspec.Struct, rename="camel", kw_only=True):
    name: str = ""
    resource_version: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class CustomResource(msgspec.Struct, kw_only=True):
    metadata: ResourceMeta = msgspec.field(default_factory=ResourceMeta)
    spec: msgspec.Raw = msgspec.Raw(b"null")


class _Cache(Generic[S, R]):
    """One kind's resources by name, converted to their spec Struct."""

    def __init__(
        self,
        kind: str,
        spec_type: type[S],
        build: Callable[[str, S, dict[str, str], dict[str, str]], R],
    ) -> None:
        self.kind = kind
        self._decoder = msgspec.json.Decoder(spec_type)
        self._build = build
        self.items: dict[str, R] = {}
        self.invalid: dict[str, str] = {}  # name -> why its current version is refused

    def _convert(self, resource: CustomResource) -> R | None:
        name = resource.metadata.name
        try:
            spec = self._decoder.decode(resource.spec)
            meta = resource.metadata
            item = self._build(name, spec, dict(meta.labels), dict(meta.annotations))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.invalid[name] = str(exc)
            log.error(
                "%s '%s' is invalid, %s: %s",
                self.kind,
                name,
                "keeping its previous version" if name in self.items else "ignoring it",
                exc,
            )
            return None
        self.invalid.pop(name, None)
        return item

    def get(self, name: str) -> R | None:
        """The resource's last good version; a BadRequest naming the decoding error when
        it has none, only a refused one."""
        item = self.items.get(name)
        if item is None and name in self.invalid:
            raise BadRequest(f"{self.kind} '{name}' cannot be used: {self.invalid[name]}")
        return item

    def all(self) -> list[R]:
        return [self.items[name] for name in sorted(self.items)]

    def reset(self, resources: list[CustomResource]) -> None:
        self.invalid = {}
        fresh: dict[str, R] = {}
        for resource in resources:
            item = self._convert(resource) or self.items.get(resource.metadata.name)
            if item is not None:
                fresh[resource.metadata.name] = item
        self.items = fresh

    def apply(self, batch: list[tuple[str, CustomResource]]) -> None:
        for kind, resource in batch:
            name = resource.metadata.name
            if kind == "DELETED":
                self.items.pop(name, None)
                self.invalid.pop(name, None)
                continue
            item = self._convert(resource)
            if item is not None:
                self.items[name] = item


class KubernetesTemplateSource:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: ShardClient | None = None
        self._templates = _Cache("NexusAlgorithmTemplate", AlgorithmSpec, Template)
        self._workgroups = _Cache("NexusAlgorithmWorkgroup", WorkgroupSpec, Workgroup)
        self._streams: list[ListWatch] = []

    async def open(self) -> None:
        namespace = self._settings.runtime_namespace
        self._client = await asyncio.to_thread(
            home_client,
            self._settings,
            "templates",
            namespace,
            "template-source: kubernetes reads templates from",
        )
        self._streams = [
            ListWatch(
                self._client,
                object_path(GROUP_VERSION, namespace, TEMPLATES),
                CustomResource,
                on_reset=self._templates.reset,
                on_events=self._templates.apply,
            ),
            ListWatch(
                self._client,
                object_path(GROUP_VERSION, namespace, WORKGROUPS),
                CustomResource,
                on_reset=self._workgroups.reset,
                on_events=self._workgroups.apply,
            ),
        ]
        for stream in self._streams:
            stream.start()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(s.synced.wait() for s in self._streams)), timeout=FIRST_SYNC_WAIT
            )
        except TimeoutError:
            log.warning("templates not loaded yet, still trying: %s", self._not_synced())

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._streams))
        if self._client is not None:
            self._client.close()

    def _not_synced(self) -> str:
        for stream, kind in zip(self._streams, (TEMPLATES, WORKGROUPS), strict=True):
            if not stream.synced.is_set():
                reason = stream.error or "no answer yet"
                return (
                    f"{kind} in namespace '{self._settings.runtime_namespace}' are not loaded "
                    f"from the cluster ({reason}); are the CRDs of helm/nexus/crds installed?"
                )
        return ""

    async def ping(self) -> None:
        problem = self._not_synced() if self._streams else "the template source is not open"
        if problem:
            raise BackendUnavailable(problem)

    async def template(self, name: str) -> Template | None:
        await self.ping()
        return self._templates.get(name)

    async def workgroup(self, name: str) -> Workgroup | None:
        await self.ping()
        return self._workgroups.get(name)

    async def catalog(self) -> tuple[list[Template], list[Workgroup]]:
        await self.ping()
        return self._templates.all(), self._workgroups.all()
