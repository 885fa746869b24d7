"""A ``coordination.k8s.io/v1`` Lease as the controller's leader lease.

Expiry is judged as client-go's leader election judges it: not by comparing the
holder's ``renewTime`` with this machine's clock (clocks differ between nodes), but by
how long this replica has seen the lease record unchanged. Every write carries the
resourceVersion it read, so two replicas taking a free lease at once cannot both win.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.backends.k8s.client import ShardClient, object_path
from nexus.errors import BackendUnavailable


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLease:
    def __init__(
        self, client: ShardClient, namespace: str, name: str, identity: str, duration: float
    ) -> None:
        self._client = client
        self._path = object_path("coordination.k8s.io/v1", namespace, "leases")
        self._name = name
        self._identity = identity
        self._duration = duration
        self._seen: tuple[str, float] = ("", 0.0)  # (resourceVersion, when first seen)

    async def acquire_or_renew(self) -> bool:
        response = await self._client.request("get", "GET", f"{self._path}/{self._name}")
        if response.status == 404:
            return await self._write("POST", self._path, self._spec({}, transitions=0))
        if response.status != 200:
            raise BackendUnavailable(f"reading Lease {self._name}: {response.error().message}")
        lease: dict[str, Any] = msgspec.json.decode(response.data)
        meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        version = meta.get("resourceVersion", "")
        if version != self._seen[0]:
            self._seen = (version, time.monotonic())
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self._identity:
            duration = spec.get("leaseDurationSeconds") or self._duration
            if time.monotonic() - self._seen[1] < duration:
                return False  # held, and renewed within its duration as far as we saw
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self._identity)
        body = {**lease, "spec": self._spec(spec, transitions)}
        return await self._write("PUT", f"{self._path}/{self._name}", body)

    def _spec(self, old: dict[str, Any], transitions: int) -> dict[str, Any]:
        now = _now()
        taking = old.get("holderIdentity") != self._identity
        return {
            "holderIdentity": self._identity,
            "leaseDurationSeconds": max(1, round(self._duration)),
            "acquireTime": now if taking else old.get("acquireTime", now),
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> bool:
        if method == "POST":
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._name},
                "spec": body,
            }
        response = await self._client.request("update", method, path, body=body)
        if response.status == 409:  # another replica wrote first
            return False
        if response.status not in (200, 201):
            raise BackendUnavailable(f"writing Lease {self._name}: {response.error().message}")
        written: dict[str, Any] = msgspec.json.decode(response.data)
        self._seen = ((written.get("metadata") or {}).get("resourceVersion", ""), time.monotonic())
        return True
