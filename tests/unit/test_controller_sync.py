"""nexus.core.controller alone, over in-memory clusters (the real ones are in
tests/integration/test_controller.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from nexus.core import config_sync as cs
from nexus.core.controller import ConfigController, ControllerConfig
from nexus.errors import BackendUnavailable, SyncFailed

ALIAS = "ctl"
_uids = itertools.count()


def _obj(kind: str, name: str, **rest: Any) -> dict[str, Any]:
    meta = {"name": name, "uid": f"uid-{next(_uids)}", "resourceVersion": "1"}
    return {"apiVersion": cs.API_VERSIONS[kind], "kind": kind, "metadata": meta, **rest}


class Source:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.events: list[tuple[str, bool, str]] = []

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.objects if k == kind)

    async def set_owners(self, obj: dict, owners: list) -> dict:
        updated = {**obj, "metadata": {**obj["metadata"], "ownerReferences": owners}}
        self.objects[(obj["kind"], obj["metadata"]["name"])] = updated
        return updated

    async def write_status(self, obj: dict, status: dict) -> None:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = {**obj, "status": status}

    async def event(self, involved: dict, warning: bool, reason: str, message: str) -> None:
        self.events.append((involved["metadata"]["name"], warning, reason))


class Shard:
    def __init__(self, name: str, objects: dict | None = None) -> None:
        self.name = name
        self.objects: dict[tuple[str, str], dict] = objects if objects is not None else {}
        self.down = False
        self.writes = 0

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable(f"shard {self.name} did not answer")

    async def get(self, kind: str, name: str) -> dict | None:
        self._check()
        return self.objects.get((kind, name))

    async def create(self, body: dict) -> dict:
        self._check()
        self.writes += 1
        stored = {**body, "metadata": {**body["metadata"], "uid": f"uid-{next(_uids)}"}}
        self.objects[(body["kind"], body["metadata"]["name"])] = stored
        return stored

    async def replace(self, body: dict) -> dict:
        self._check()
        self.writes += 1
        old = self.objects[(body["kind"], body["metadata"]["name"])]
        stored = {**body, "metadata": {**body["metadata"], "uid": old["metadata"]["uid"]}}
        self.objects[(body["kind"], body["metadata"]["name"])] = stored
        return stored

    async def delete(self, kind: str, name: str, uid: str) -> None:
        self._check()
        if self.objects.get((kind, name), {}).get("metadata", {}).get("uid") == uid:
            del self.objects[(kind, name)]


def _template(secrets: list[str]) -> dict:
    spec = {
        "command": "x",
        "runtimeEnvironment": {
            "mappedEnvironmentVariables": [{"secretRef": {"name": s}} for s in secrets]
        },
    }
    return _obj(cs.TEMPLATE, "algo", spec=spec)


def _controller(source: Source, *shards: Shard) -> ConfigController:
    return ConfigController(
        source, shards, ControllerConfig(alias=ALIAS, namespace="ns"), now=lambda: "T"
    )


def _status(source: Source) -> dict:
    return source.objects[(cs.TEMPLATE, "algo")]["status"]


async def test_a_template_and_its_secret_are_copied_owned_and_reported():
    source = Source(_template(["db"]), _obj(cs.SECRET, "db", data={"k": "dg=="}))
    far = Shard("far")
    await _controller(source, far).reconcile(cs.TEMPLATE, "algo")
    copy = far.objects[(cs.TEMPLATE, "algo")]
    secret = far.objects[(cs.SECRET, "db")]
    assert secret["data"] == {"k": "dg=="}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == copy["metadata"]["uid"]
    adopted = source.objects[(cs.SECRET, "db")]["metadata"]["ownerReferences"]
    assert adopted[0]["uid"] == source.objects[(cs.TEMPLATE, "algo")]["metadata"]["uid"]
    status = _status(source)
    assert status["syncedSecrets"] == ["db"] and status["syncedToClusters"] == ["far"]
    assert status["conditions"][0]["status"] == "True"
    assert source.events == [("algo", False, "Synced")]
    # In step: a second pass writes nothing and records no Event.
    writes = far.writes
    await _controller(source, far).reconcile(cs.TEMPLATE, "algo")
    assert far.writes == writes and len(source.events) == 1


async def test_a_silent_shard_fails_the_sync_but_not_the_others():
    source = Source(_template(["db"]), _obj(cs.SECRET, "db", data={}))
    near, far = Shard("near"), Shard("far")
    far.down = True
    with pytest.raises(SyncFailed, match="shard 'far'"):
        await _controller(source, near, far).reconcile(cs.TEMPLATE, "algo")
    assert (cs.SECRET, "db") in near.objects
    assert _status(source)["syncedToClusters"] == ["near"]
    assert _status(source)["conditions"][0]["reason"] == "SyncError"
    far.down = False
    await _controller(source, near, far).reconcile(cs.TEMPLATE, "algo")
    assert _status(source)["syncedToClusters"] == ["far", "near"]


async def test_a_foreign_object_is_refused_and_left_as_it_is():
    source = Source(_template(["db"]), _obj(cs.SECRET, "db", data={"k": "b3Vycw=="}))
    foreign = _obj(cs.SECRET, "db", data={"k": "dGhlaXJz"})
    far = Shard("far", {(cs.SECRET, "db"): foreign})
    with pytest.raises(SyncFailed, match="Secret 'db' in shard 'far'"):
        await _controller(source, far).reconcile(cs.TEMPLATE, "algo")
    assert far.objects[(cs.SECRET, "db")] is foreign
    assert _status(source)["conditions"][0]["reason"] == "ResourceExists"
    assert source.events == [("algo", True, "ResourceExists")]


async def test_a_missing_source_writes_nothing_in_shards():
    source = Source(_template(["absent"]))
    far = Shard("far")
    with pytest.raises(SyncFailed, match="Secret 'absent'"):
        await _controller(source, far).reconcile(cs.TEMPLATE, "algo")
    assert far.objects == {}
    assert _status(source)["conditions"][0]["reason"] == "ResourceMissing"


async def test_the_controller_cluster_as_a_shard_keeps_its_sources_untouched():
    source = Source(_template(["db"]), _obj(cs.SECRET, "db", data={}))
    near = Shard("near", source.objects)  # the same objects: the same cluster
    await _controller(source, near).reconcile(cs.TEMPLATE, "algo")
    assert near.writes == 0
    assert _status(source)["syncedToClusters"] == ["near"]


async def test_a_deleted_template_is_deleted_where_it_is_ours_only():
    source = Source(_template([]), _obj(cs.WORKGROUP, "wg", spec={"cluster": "far"}))
    far = Shard("far")
    other = Shard("other")
    await _controller(source, far, other).reconcile(cs.TEMPLATE, "algo")
    await _controller(source, far, other).reconcile(cs.WORKGROUP, "wg")
    assert (cs.WORKGROUP, "wg") in far.objects
    other.objects[(cs.TEMPLATE, "algo")] = _obj(cs.TEMPLATE, "algo")  # replaced by someone
    del source.objects[(cs.TEMPLATE, "algo")]
    await _controller(source, far, other).reconcile(cs.TEMPLATE, "algo")
    assert (cs.TEMPLATE, "algo") not in far.objects
    assert (cs.TEMPLATE, "algo") in other.objects
