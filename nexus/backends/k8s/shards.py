"""The Kubernetes executor: run Jobs on one or more clusters (shards), SPEC §7-8.

Shards are found at ``open()`` (see :func:`discover_shards`): every ``<name>.kubeconfig``
in ``shard-kube-config-path``, plus the cluster nexus runs in under
``kubernetes.in-cluster-shard`` when that is set. Each shard gets its own API
client with its own QPS limit and connection pool; a run goes to the shard its
workgroup's ``cluster`` names. The launching side is
:class:`~nexus.backends.k8s.launcher.KubernetesLauncher`, the watching side
:class:`~nexus.backends.k8s.watcher.KubernetesWatcher`; this class wires them together.
Only the supervisor watches, so the watching side follows only the shards of
``supervisor.shards`` (all when empty): a per-shard supervisor sends no request to the
API servers of other shards, and one that does not answer is no concern of it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config as kube_config
from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException

from nexus.backends.k8s.client import ApiMetrics, ShardClient, ShardConfig
from nexus.backends.k8s.launcher import KubernetesLauncher
from nexus.backends.k8s.pod_logs import pod_log
from nexus.backends.k8s.watcher import KubernetesWatcher
from nexus.core.ports import ClusterSnapshot, JobObservation
from nexus.core.scope import ShardScope
from nexus.errors import BackendUnavailable, ConfigError, LaunchError
from nexus.metrics import Metrics
from nexus.settings import Settings

SHARD_SUFFIX = ".kubeconfig"


def load_kubeconfig(path: Path) -> tuple[Configuration, str | None]:
    """Credentials from a kubeconfig file and its current context's namespace, if any."""
    configuration = Configuration()
    try:
        kube_config.load_kube_config(
            config_file=str(path), client_configuration=configuration, persist_config=False
        )
        _, active = kube_config.list_kube_config_contexts(config_file=str(path))
    except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot use kubeconfig {path}: {exc}") from exc
    namespace = ((active or {}).get("context") or {}).get("namespace")
    return configuration, namespace or None


def home_cluster(settings: Settings) -> tuple[Configuration, str] | None:
    """The cluster nexus itself runs in: ``kube-config-path`` if set, else the in-cluster
    service account when running in a Pod, else None."""
    if settings.kube_config_path:
        configuration, _ = load_kubeconfig(Path(settings.kube_config_path))
        return configuration, f"kube-config-path {settings.kube_config_path}"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"Cannot use the in-cluster service account: {exc}") from exc
        return configuration, "the in-cluster service account"
    return None


def home_client(
    settings: Settings,
    name: str,
    namespace: str,
    needed_for: str,
    *,
    metrics: ApiMetrics | None = None,
    request_timeout: float | None = None,
) -> ShardClient:
    """A client of the cluster nexus runs in (see :func:`home_cluster`), limited by
    ``kubernetes.client-qps``/``client-burst``; ConfigError, saying what ``needed_for``
    it, when there is none. Blocking: reading credentials may run an exec plugin."""
    home = home_cluster(settings)
    if home is None:
        raise ConfigError(
            f"{needed_for} the cluster nexus runs in: run in a Pod, or set kube-config-path"
        )
    configuration, source = home
    limits = settings.kubernetes
    return ShardClient(
        ShardConfig(name, configuration, namespace, source),
        qps=limits.client_qps,
        burst=limits.client_burst,
        metrics=metrics,
        request_timeout=request_timeout,
    )


def discover_shards(settings: Settings) -> list[ShardConfig]:
    """Every ``<name>.kubeconfig`` in ``shard-kube-config-path`` (the name is the file name
    up to its first '.'), plus the home cluster as ``kubernetes.in-cluster-shard`` when that
    is set. A shard's Jobs go to its kubeconfig context's namespace when the context names
    one, otherwise to ``runtime-namespace``."""
    shards: dict[str, ShardConfig] = {}
    folder = settings.shard_kube_config_path
    if folder:
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(f"shard-kube-config-path {folder} is not a folder")
        for file in sorted(path.iterdir()):
            if (
                not file.name.endswith(SHARD_SUFFIX)
                or file.name.startswith(".")
                or not file.is_file()
            ):
                continue
            name = file.name.split(".", 1)[0]
            if name in shards:
                raise ConfigError(
                    f"Shard '{name}' is defined twice: {shards[name].source} and {file}"
                )
            configuration, namespace = load_kubeconfig(file)
            shards[name] = ShardConfig(
                name, configuration, namespace or settings.runtime_namespace, str(file)
            )
    own = settings.kubernetes.in_cluster_shard
    if own:
        if own in shards:
            raise ConfigError(
                f"kubernetes.in-cluster-shard '{own}' is also the name of "
                f"{shards[own].source}; rename one of them"
            )
        home = home_cluster(settings)
        if home is None:
            raise ConfigError(
                f"kubernetes.in-cluster-shard '{own}' needs the cluster nexus runs "
                "in: run in a Pod, or set kube-config-path"
            )
        shards[own] = ShardConfig(own, home[0], settings.runtime_namespace, home[1])
    if not shards:
        raise ConfigError(
            "executor: kubernetes has no shard: put <name>.kubeconfig files in "
            f"shard-kube-config-path ({folder or 'not set'}) or set kubernetes.in-cluster-shard"
        )
    return list(shards.values())


class KubernetesExecutor:
    """JobLauncher and ClusterWatcher over the configured shards."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._metrics = ApiMetrics(metrics)
        self._clients: dict[str, ShardClient] = {}
        self._launcher = KubernetesLauncher(self._clients)
        self._watcher: KubernetesWatcher | None = None

    def shards(self) -> Collection[str]:
        return self._clients.keys()

    async def open(self) -> None:
        # Reading kubeconfigs may run exec credential plugins: keep it off the loop.
        configs = await asyncio.to_thread(discover_shards, self._settings)
        limits = self._settings.kubernetes
        for shard in configs:
            self._clients[shard.name] = ShardClient(
                shard, qps=limits.client_qps, burst=limits.client_burst, metrics=self._metrics
            )
        scope = ShardScope(self._settings.supervisor.shards)
        watched = {name: c for name, c in self._clients.items() if scope.covers(name)}
        self._watcher = KubernetesWatcher(watched, self._launcher)

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.close()
        for client in self._clients.values():
            client.close()

    def _watching(self) -> KubernetesWatcher:
        if self._watcher is None:
            raise BackendUnavailable("the Kubernetes executor is not open")
        return self._watcher

    # --- JobLauncher -------------------------------------------------------------------

    async def launch(self, cluster: str, manifest: dict[str, Any]) -> str:
        return await self._launcher.launch(cluster, manifest)

    async def cancel(self, cluster: str, run_id: str, policy: str) -> bool:
        try:
            return await self._launcher.delete(cluster, run_id, policy, grace=0)
        except ValueError as exc:
            raise LaunchError(str(exc), retryable=False) from exc

    async def logs(self, cluster: str, run_id: str, tail_lines: int) -> str:
        return await pod_log(self._clients, cluster, run_id, tail_lines)

    # --- ClusterWatcher ----------------------------------------------------------------

    def observations(self) -> AsyncIterator[JobObservation]:
        return self._watching().observations()

    async def snapshot(self) -> ClusterSnapshot:
        return await self._watching().snapshot()

    async def delete_job(self, cluster: str, run_id: str) -> None:
        await self._watching().delete_job(cluster, run_id)
