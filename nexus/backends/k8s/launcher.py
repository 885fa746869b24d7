"""Create and delete run Jobs on the shards (the JobLauncher side of the executor).

A Job is named by its run id, so creating it is idempotent: 409 AlreadyExists means an
earlier attempt (this process before a retry, or a dead scheduler's) got there first, and
the existing Job's uid is read back. Failures are sorted for the launch pipeline: what a
later attempt can fix (throttling, server errors, an unreachable API server) is
retryable; a Job the API server refuses as invalid is not, and its message says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from nexus.backends.k8s.client import Response, ShardClient, object_path
from nexus.errors import BackendUnavailable, LaunchError

PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")
RETRYABLE_CODES = frozenset({401, 408, 429, 500, 502, 503, 504})


class _Uid(msgspec.Struct):
    uid: str = ""


class _Created(msgspec.Struct):
    metadata: _Uid = msgspec.field(default_factory=_Uid)


_CREATED = msgspec.json.Decoder(_Created)


def launch_error(shard: str, response: Response) -> LaunchError:
    """The API server's refusal as a LaunchError, retryable when a later attempt may pass."""
    status = response.error()
    code = response.status
    retryable = code in RETRYABLE_CODES or (code == 403 and "exceeded quota" in status.message)
    if code == 404:
        message = (
            f"the API server of shard '{shard}' answered 404 ({status.message}); "
            "does the runtime namespace exist there?"
        )
    else:
        message = (
            f"the API server of shard '{shard}' refused the Job "
            f"({code} {status.reason}): {status.message}"
        )
    return LaunchError(message, retryable=retryable)


class KubernetesLauncher:
    def __init__(self, clients: Mapping[str, ShardClient]) -> None:
        self._clients = clients

    def _client(self, cluster: str) -> ShardClient:
        client = self._clients.get(cluster)
        if client is None:
            raise LaunchError(
                f"cluster '{cluster}' is not a configured shard "
                f"(known: {', '.join(sorted(self._clients)) or 'none'})",
                retryable=False,
            )
        return client

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        client = self._client(cluster)
        name = manifest["metadata"]["name"]
        # The shard decides the namespace (its kubeconfig context, or runtime-namespace).
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": client.namespace}}
        path = object_path("batch/v1", client.namespace, "jobs")
        try:
            response = await client.request("create", "POST", path, body=body)
            if response.status == 409:
                response = await client.request(
                    "get", "GET", object_path("batch/v1", client.namespace, "jobs", name)
                )
                if response.status == 404:  # deleted between the two calls: try again later
                    raise LaunchError(
                        f"Job {name} exists on shard '{cluster}' but is being deleted",
                        retryable=True,
                    )
        except BackendUnavailable as exc:
            raise LaunchError(exc.message, retryable=True) from exc
        if response.status not in (200, 201, 202):
            raise launch_error(cluster, response)
        uid = _CREATED.decode(response.data).metadata.uid
        if not uid:
            raise LaunchError(
                f"shard '{cluster}' answered {response.status} without a Job uid", retryable=True
            )
        return uid

    async def delete(self, cluster: str, run_id: str, policy: str, grace: int | None = 0) -> bool:
        """Delete the run's Job; False when there is none. Raise BackendUnavailable when the
        shard cannot be reached or refuses."""
        if policy not in PROPAGATION_POLICIES:
            raise ValueError(f"propagation policy {policy!r} is not one of {PROPAGATION_POLICIES}")
        client = self._clients.get(cluster)
        if client is None:
            return False
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": policy,
        }
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        path = object_path("batch/v1", client.namespace, "jobs", run_id)
        response = await client.request("delete", "DELETE", path, body=options)
        if response.status == 404:
            return False
        if response.status not in (200, 202):
            raise BackendUnavailable(
                f"Deleting Job {run_id} on shard '{cluster}' failed "
                f"({response.status}): {response.error().message}"
            )
        return True
