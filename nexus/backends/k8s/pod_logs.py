"""The log tail of a run's Pod: the newest Pod of its Job (a retried Job has several),
read through the API server's ``pods/log`` subresource, which asks the node's kubelet."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from nexus.backends.k8s.client import ShardClient
from nexus.errors import BackendUnavailable, NotFound

TAIL_BYTES = 1 << 20  # never more than the last MiB, whatever the line count


class _PodMeta(msgspec.Struct, rename="camel"):
    name: str
    creation_timestamp: str = ""


class _Pod(msgspec.Struct):
    metadata: _PodMeta


class _Pods(msgspec.Struct):
    items: list[_Pod] = []


_PODS = msgspec.json.Decoder(_Pods)


async def pod_log(
    clients: Mapping[str, ShardClient], cluster: str, run_id: str, tail_lines: int
) -> str:
    client = clients.get(cluster)
    if client is None:
        raise NotFound(f"No log for request '{run_id}': shard '{cluster}' is not configured")
    pods_path = f"/api/v1/namespaces/{client.namespace}/pods"
    listed = await client.request(
        "list", "GET", pods_path, query={"labelSelector": f"job-name={run_id}"}
    )
    if listed.status != 200:
        raise BackendUnavailable(
            f"Listing the Pods of request '{run_id}' on shard '{cluster}' failed "
            f"({listed.status}): {listed.error().message}"
        )
    pods = _PODS.decode(listed.data).items
    if not pods:
        raise NotFound(
            f"No log for request '{run_id}': shard '{cluster}' has no Pod of its Job "
            "(not started yet, or deleted with the Job)"
        )
    # RFC 3339 in UTC sorts as text; the name breaks ties within a second.
    newest = max(pods, key=lambda pod: (pod.metadata.creation_timestamp, pod.metadata.name))
    response = await client.request(
        "logs",
        "GET",
        f"{pods_path}/{newest.metadata.name}/log",
        query={"tailLines": tail_lines, "limitBytes": TAIL_BYTES},
    )
    if response.status == 200:
        return response.data.decode("utf-8", errors="replace")
    message = response.error().message
    if response.status in (400, 404):  # the container is not running yet, or gone
        raise NotFound(f"No log for request '{run_id}' (Pod {newest.metadata.name}): {message}")
    raise BackendUnavailable(
        f"Reading the log of Pod {newest.metadata.name} on shard '{cluster}' failed "
        f"({response.status}): {message}"
    )
