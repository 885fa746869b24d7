"""The configuration controller's use case: bring every shard in step with one template
or workgroup of the controller cluster, and say how that went in its status.

A sync of a template, for each shard at once: copy the template (the shard's copy is
labelled ours), then each Secret and ConfigMap it reads, owned by the shard's copy of the
template. Sources are first adopted in the controller cluster (owned by the template
there too). One shard failing does not hold back the others: each shard's outcome is
collected, ``syncedToClusters`` lists the shards in step, and the sync is retried (with
backoff, by :class:`nexus.core.workqueue.WorkQueue`) while any shard is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.core import config_sync as cs
from nexus.core.config_sync import Action
from nexus.core.ports import ConfigSource, ShardObjects
from nexus.errors import NexusError, SyncFailed

log = logging.getLogger("nexus.controller")


class ShardOutcome(msgspec.Struct, frozen=True, kw_only=True):
    shard: str
    refused: list[str] = []  # "Secret 'x'" already in the shard and not ours
    error: str = ""  # the shard could not be brought in step: why
    wrote: int = 0  # objects created or updated


class ControllerConfig(msgspec.Struct, frozen=True, kw_only=True):
    alias: str
    namespace: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigController:
    def __init__(
        self,
        source: ConfigSource,
        shards: Sequence[ShardObjects],
        config: ControllerConfig,
        *,
        on_shard_error: Callable[[str], None] = lambda shard: None,
        now: Callable[[], str] = _now,
    ) -> None:
        self._source = source
        self._shards = list(shards)
        self._config = config
        self._on_shard_error = on_shard_error
        self._now = now

    async def reconcile(self, kind: str, name: str) -> None:
        """Sync one object (``kind`` is TEMPLATE or WORKGROUP); SyncFailed to retry."""
        obj = self._source.get(kind, name)
        if obj is None:
            await self._delete_everywhere(kind, name)
            return
        sources: list[tuple[str, dict[str, Any]]] = []
        secrets: list[str] = []
        config_maps: list[str] = []
        if kind == cs.TEMPLATE:
            secrets, config_maps = cs.references(obj.get("spec") or {})
            named = [(cs.SECRET, n) for n in secrets] + [(cs.CONFIG_MAP, n) for n in config_maps]
            missing = [f"{k} '{n}'" for k, n in named if self._source.get(k, n) is None]
            if missing:
                message = (
                    f"{', '.join(missing)} referenced by {kind} '{name}' is missing in "
                    f"namespace '{self._config.namespace}' of the controller cluster"
                )
                await self._report(obj, False, "ResourceMissing", message, secrets, config_maps, [])
                raise SyncFailed(message)
            for source_kind, source_name in named:
                source = self._source.get(source_kind, source_name)
                assert source is not None  # checked just above, on the same cache
                sources.append((source_kind, await self._adopt(source, obj)))
        outcomes = await asyncio.gather(
            *(self._sync_shard(s, kind, obj, sources) for s in self._shards)
        )
        ready, reason, message, in_step = self._verdict(kind, name, outcomes)
        wrote = sum(o.wrote for o in outcomes)
        await self._report(obj, ready, reason, message, secrets, config_maps, in_step, wrote)
        if not ready:
            raise SyncFailed(message)

    def _verdict(
        self, kind: str, name: str, outcomes: Sequence[ShardOutcome]
    ) -> tuple[bool, str, str, list[str]]:
        """Ready, its reason and message, and the shards in step."""
        in_step = sorted(o.shard for o in outcomes if not o.error and not o.refused)
        refused = [f"{r} in shard '{o.shard}'" for o in outcomes for r in o.refused]
        errors = [f"shard '{o.shard}': {o.error}" for o in outcomes if o.error]
        if refused:
            message = (
                f"{'; '.join(refused)} already exists and is not managed by controller "
                f"'{self._config.alias}' (label {cs.APP_LABEL}): not overwritten"
            )
            return False, "ResourceExists", message, in_step
        if errors:
            return False, "SyncError", "; ".join(errors), in_step
        message = f"{kind} '{name}' synced to {len(in_step)} shard(s): {', '.join(in_step)}"
        return True, "Synced", message, in_step

    # --- the controller cluster --------------------------------------------------------

    async def _adopt(self, source: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
        owners = cs.adoption(source, template)
        return source if owners is None else await self._source.set_owners(source, owners)

    async def _report(
        self,
        obj: dict[str, Any],
        ready: bool,
        reason: str,
        message: str,
        secrets: list[str],
        config_maps: list[str],
        clusters: list[str],
        wrote: int = 0,
    ) -> None:
        """Write the status when it changed; an Event when it changed or objects were
        written (a periodic resync that finds everything in step records nothing)."""
        old = obj.get("status") or {}
        status = cs.with_ready(old, ready, reason, message, self._now())
        if obj["kind"] == cs.TEMPLATE:
            status.update(
                syncedSecrets=secrets, syncedConfigurations=config_maps, syncedToClusters=clusters
            )
        if status != old:
            await self._source.write_status(obj, status)
        if status != old or wrote:
            await self._source.event(obj, not ready, reason, message)

    # --- one shard ---------------------------------------------------------------------

    async def _sync_shard(
        self,
        shard: ShardObjects,
        kind: str,
        obj: dict[str, Any],
        sources: list[tuple[str, dict[str, Any]]],
    ) -> ShardOutcome:
        name = obj["metadata"]["name"]
        refused: list[str] = []
        wrote = 0
        try:
            copy, wrote_copy = await self._apply(shard, kind, obj, None, name, refused)
            wrote += wrote_copy
            if copy is not None:
                owner = cs.owner_reference(copy)
                for source_kind, source in sources:
                    _, wrote_source = await self._apply(
                        shard, source_kind, source, owner, name, refused
                    )
                    wrote += wrote_source
        except NexusError as exc:
            log.warning("sync of %s '%s' to shard '%s' failed: %s", kind, name, shard.name, exc)
            self._on_shard_error(shard.name)
            return ShardOutcome(shard=shard.name, refused=refused, error=exc.message, wrote=wrote)
        if refused:
            self._on_shard_error(shard.name)
        return ShardOutcome(shard=shard.name, refused=refused, wrote=wrote)

    async def _apply(
        self,
        shard: ShardObjects,
        kind: str,
        source: dict[str, Any],
        owner: dict[str, Any] | None,
        owner_name: str,
        refused: list[str],
    ) -> tuple[dict[str, Any] | None, int]:
        """Bring one object in step; return the shard's object (None when refused) and
        how many writes that took."""
        meta = source["metadata"]
        want = cs.desired(
            kind,
            source,
            alias=self._config.alias,
            owner_name=owner_name,
            namespace=self._config.namespace,
            owner=owner,
        )
        current = await shard.get(kind, meta["name"])
        change = cs.plan(want, current, alias=self._config.alias, source_uid=meta.get("uid", ""))
        if change.action is Action.REFUSE:
            refused.append(f"{kind} '{meta['name']}'")
            return None, 0
        if change.action is Action.CREATE and change.body is not None:
            return await shard.create(change.body), 1
        if change.action is Action.UPDATE and change.body is not None:
            return await shard.replace(change.body), 1
        return current, 0

    async def _delete_everywhere(self, kind: str, name: str) -> None:
        """The object is gone from the controller cluster: remove our copies (a shard's
        garbage collector then removes the Secrets and ConfigMaps they owned)."""

        async def one(shard: ShardObjects) -> str:
            try:
                current = await shard.get(kind, name)
                labels = ((current or {}).get("metadata") or {}).get("labels") or {}
                if current is not None and labels.get(cs.APP_LABEL) == self._config.alias:
                    await shard.delete(kind, name, current["metadata"]["uid"])
            except NexusError as exc:
                self._on_shard_error(shard.name)
                return f"shard '{shard.name}': {exc.message}"
            return ""

        errors = [e for e in await asyncio.gather(*(one(s) for s in self._shards)) if e]
        if errors:
            raise SyncFailed(f"deleting {kind} '{name}': {'; '.join(errors)}")
