"""What the configuration controller must change in a shard, as plain data.

The controller (``--role controller``) keeps every shard supplied with the templates and
workgroups of its own cluster and with the Secrets and ConfigMaps a template's Pods read.
This module decides, from the objects alone (JSON-shaped dicts as the API server gives
them), what a shard's copy should look like and whether the shard's current object is
missing, drifted, in step, or someone else's; :mod:`nexus.core.controller` carries the
decisions out through the ports.

An object the controller writes carries two labels: ``controller-app`` (the controller's
``alias``) marks it as the controller's, so an object without it is never overwritten,
and ``configuration-owner`` names the template it was copied for. A copied Secret or
ConfigMap is owned (``ownerReferences``) by the shard's copy of each template that uses
it, so deleting the template there lets the shard's garbage collector remove it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

GROUP = "science.sneaksanddata.com"
API_VERSION = f"{GROUP}/v1"
APP_LABEL = f"{GROUP}/controller-app"
OWNER_LABEL = f"{GROUP}/configuration-owner"

TEMPLATE = "NexusAlgorithmTemplate"
WORKGROUP = "NexusAlgorithmWorkgroup"
SECRET = "Secret"
CONFIG_MAP = "ConfigMap"

# What a copy takes from its source besides labels and annotations, by kind.
CONTENT: dict[str, tuple[str, ...]] = {
    TEMPLATE: ("spec",),
    WORKGROUP: ("spec",),
    SECRET: ("type", "data", "immutable"),
    CONFIG_MAP: ("data", "binaryData", "immutable"),
}
API_VERSIONS = {TEMPLATE: API_VERSION, WORKGROUP: API_VERSION, SECRET: "v1", CONFIG_MAP: "v1"}


class Action(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    KEEP = "keep"  # in step already
    REFUSE = "refuse"  # the shard holds an object of that name that is not ours
    SOURCE = "source"  # the shard is this very cluster: the object is its own source


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One object of one shard: what to do, and the body to write (create/update)."""

    kind: str
    name: str
    action: Action
    body: dict[str, Any] | None = None


def _names(entries: Iterable[Any], *paths: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for entry in entries:
        for path in paths:
            node: Any = entry
            for key in path:
                node = node.get(key) if isinstance(node, Mapping) else None
            if isinstance(node, str) and node:
                found.add(node)
    return found


def references(spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The Secrets and ConfigMaps a template's Pods read: ``valueFrom`` of its environment
    variables, ``envFrom`` sources (mappedEnvironmentVariables), and its file mounts
    (keyed by the source's name). Sorted, each named once."""
    runtime = spec.get("runtimeEnvironment") or {}
    env = runtime.get("environmentVariables") or []
    env_from = runtime.get("mappedEnvironmentVariables") or []
    secrets = _names(env, ("valueFrom", "secretKeyRef", "name"))
    secrets |= _names(env_from, ("secretRef", "name"))
    secrets |= set(runtime.get("secretFileMounts") or {})
    config_maps = _names(env, ("valueFrom", "configMapKeyRef", "name"))
    config_maps |= _names(env_from, ("configMapRef", "name"))
    config_maps |= set(runtime.get("configurationFileMounts") or {})
    return sorted(secrets), sorted(config_maps)


def owner_reference(template: Mapping[str, Any]) -> dict[str, Any]:
    """A reference to ``template`` (a NexusAlgorithmTemplate as stored) as its owner."""
    meta = template["metadata"]
    return {"apiVersion": API_VERSION, "kind": TEMPLATE, "name": meta["name"], "uid": meta["uid"]}


def _with_owner(refs: list[dict[str, Any]], owner: dict[str, Any] | None) -> list[dict[str, Any]]:
    if owner is None or any(ref.get("uid") == owner["uid"] for ref in refs):
        return refs
    return [*refs, owner]


def adoption(source: Mapping[str, Any], template: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The owners of a source Secret/ConfigMap once ``template`` adopts it, or None when
    the template owns it already."""
    refs = list(source["metadata"].get("ownerReferences") or [])
    wanted = _with_owner(refs, owner_reference(template))
    return None if wanted is refs else wanted


def desired(
    kind: str,
    source: Mapping[str, Any],
    *,
    alias: str,
    owner_name: str,
    namespace: str,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The shard's copy of ``source``: its content, labels and annotations, our two
    labels, and ``owner`` (the shard's template) among its owners when given."""
    meta = source["metadata"]
    body: dict[str, Any] = {
        "apiVersion": API_VERSIONS[kind],
        "kind": kind,
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            "labels": {**(meta.get("labels") or {}), APP_LABEL: alias, OWNER_LABEL: owner_name},
            "annotations": dict(meta.get("annotations") or {}),
        },
    }
    if owner is not None:
        body["metadata"]["ownerReferences"] = [owner]
    for key in CONTENT[kind]:
        if source.get(key) is not None:
            body[key] = source[key]
    return body


def plan(
    want: dict[str, Any], current: Mapping[str, Any] | None, *, alias: str, source_uid: str
) -> Change:
    """Compare the shard's ``current`` object (None: missing) with ``want``."""
    kind, name = want["kind"], want["metadata"]["name"]
    if current is None:
        return Change(kind=kind, name=name, action=Action.CREATE, body=want)
    meta = current.get("metadata") or {}
    if meta.get("uid") == source_uid:
        return Change(kind=kind, name=name, action=Action.SOURCE)
    labels = meta.get("labels") or {}
    if labels.get(APP_LABEL) != alias:
        return Change(kind=kind, name=name, action=Action.REFUSE)
    wanted_meta = want["metadata"]
    refs = list(meta.get("ownerReferences") or [])
    owners = refs
    for owner in wanted_meta.get("ownerReferences") or []:
        owners = _with_owner(owners, owner)
    # A Secret shared by two templates keeps the owner label of the first: rewriting it
    # for each would make them take turns forever.
    wanted_labels = {**wanted_meta["labels"], OWNER_LABEL: labels.get(OWNER_LABEL)}
    wanted_labels[OWNER_LABEL] = wanted_labels[OWNER_LABEL] or wanted_meta["labels"][OWNER_LABEL]
    annotations = meta.get("annotations") or {}
    drifted = (
        any(current.get(key) != want.get(key) for key in CONTENT[kind])
        or any(labels.get(k) != v for k, v in wanted_labels.items())
        or any(annotations.get(k) != v for k, v in wanted_meta["annotations"].items())
        or owners is not refs
    )
    if not drifted:
        return Change(kind=kind, name=name, action=Action.KEEP)
    # Keep what others added (labels, owners); the resourceVersion makes the update fail
    # rather than overwrite a change made since the read.
    body = {
        **want,
        "metadata": {
            **wanted_meta,
            "labels": {**labels, **wanted_labels},
            "annotations": {**annotations, **wanted_meta["annotations"]},
            "ownerReferences": owners,
            "resourceVersion": meta.get("resourceVersion", ""),
        },
    }
    if not owners:
        del body["metadata"]["ownerReferences"]
    return Change(kind=kind, name=name, action=Action.UPDATE, body=body)


# --- status -----------------------------------------------------------------------------

READY = "Ready"


def with_ready(
    status: Mapping[str, Any] | None, ready: bool, reason: str, message: str, now: str
) -> dict[str, Any]:
    """``status`` with its Ready condition set; the transition time changes only when
    the condition's status does, so an unchanged outcome writes nothing new."""
    status = dict(status or {})
    conditions = [dict(c) for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    value = "True" if ready else "False"
    previous = next((c for c in conditions if c.get("type") == READY), None)
    since = previous.get("lastTransitionTime") if previous else None
    if previous is None or previous.get("status") != value or not since:
        since = now
    condition = {
        "type": READY,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    others = [c for c in conditions if c.get("type") != READY]
    status["conditions"] = [condition, *others]
    return status
