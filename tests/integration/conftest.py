"""Fixtures of the integration tests: the test control planes, one definition for both.

``kube``/``kubeconfig`` are testenv's first control plane, ``kube2``/``kubeconfig_2``
the second (an independent cluster: its own etcd, CA and KWOK nodes); each is connected,
and given the chart's CRDs, once per session. ``namespace`` is a fresh namespace in the
first, ``namespace_2`` the same name in the second (a shard's Jobs go to the namespace of
its name there).

This file is the module ``conftest`` of this folder's tests (tests/conftest.py's
pytest_collectstart), so it passes on what they take from tests/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from control_plane import CLUSTERS, Kube, install_crds, require_kubeconfig
from nexus_tests_conftest import NexusProcess, free_port, walk_routes

__all__ = ["NexusProcess", "free_port", "walk_routes"]


class ControlPlanes:
    """The test control planes of a session by testenv name ("kube", "kube2"),
    connected on first use."""

    def __init__(self) -> None:
        self._clients: dict[str, Kube] = {}

    def kubeconfig(self, cluster: str) -> str:
        return require_kubeconfig(CLUSTERS[cluster])

    def client(self, cluster: str) -> Kube:
        if cluster not in self._clients:
            client = Kube(self.kubeconfig(cluster))
            install_crds(client)  # templates live in the first; the second may hold them too
            self._clients[cluster] = client
        return self._clients[cluster]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


@pytest.fixture(scope="session")
def control_planes() -> Iterator[ControlPlanes]:
    planes = ControlPlanes()
    yield planes
    planes.close()


def _control_plane(cluster: str, client_name: str, kubeconfig_name: str) -> tuple[Any, Any]:
    """The session fixtures of one control plane: its client and its kubeconfig's path."""

    @pytest.fixture(scope="session", name=kubeconfig_name)
    def kubeconfig(control_planes: ControlPlanes) -> str:
        return control_planes.kubeconfig(cluster)

    @pytest.fixture(scope="session", name=client_name)
    def client(control_planes: ControlPlanes) -> Kube:
        return control_planes.client(cluster)

    return client, kubeconfig


kube, kubeconfig = _control_plane("kube", "kube", "kubeconfig")
kube2, kubeconfig_2 = _control_plane("kube2", "kube2", "kubeconfig_2")


def _fresh_namespace(client: Kube, name: str) -> Iterator[str]:
    client.create_namespace(name)
    yield name
    client.delete_namespace(name)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    yield from _fresh_namespace(kube, f"nexus-it-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def namespace_2(kube2: Kube, namespace: str) -> Iterator[str]:
    yield from _fresh_namespace(kube2, namespace)
