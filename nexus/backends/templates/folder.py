"""Templates and workgroups read from a folder of YAML manifests (embedded mode).

The files hold the same custom resources one would ``kubectl apply``
(``kind: NexusAlgorithmTemplate`` / ``NexusAlgorithmWorkgroup``, any number per file).
The folder is re-read when a file changes, so editing a template needs no restart. A
manifest that does not validate stops start-up with its file and field named; one broken
by a later edit is logged and the last good version is kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TypeVar

import msgspec
import yaml

from nexus.core.models import AlgorithmSpec, Template, Workgroup, WorkgroupSpec
from nexus.errors import ConfigError

T = TypeVar("T")

log = logging.getLogger("nexus.templates")

API_GROUP = "science.sneaksanddata.com"
TEMPLATE_KIND = "NexusAlgorithmTemplate"
WORKGROUP_KIND = "NexusAlgorithmWorkgroup"


def parse_manifests(path: Path) -> tuple[dict[str, Template], dict[str, Workgroup]]:
    templates: dict[str, Template] = {}
    workgroups: dict[str, Workgroup] = {}
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read manifest {path}: {exc}") from exc
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") not in (TEMPLATE_KIND, WORKGROUP_KIND):
            continue
        metadata = doc.get("metadata") or {}
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Manifest in {path} of kind {doc['kind']} has no metadata.name")
        try:
            labels = msgspec.convert(metadata.get("labels") or {}, dict[str, str])
            notes = msgspec.convert(metadata.get("annotations") or {}, dict[str, str])
            if doc["kind"] == TEMPLATE_KIND:
                spec = msgspec.convert(doc.get("spec"), AlgorithmSpec)
                templates[name] = Template(name, spec, labels, notes)
            else:
                group = msgspec.convert(doc.get("spec"), WorkgroupSpec)
                workgroups[name] = Workgroup(name, group, labels, notes)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{doc['kind']} '{name}' in {path} is invalid: {exc}") from exc
    return templates, workgroups


class FolderTemplateSource:
    def __init__(self, folder: str | Path, *, recheck_every: float = 1.0) -> None:
        self._folder = Path(folder)
        self._recheck_every = recheck_every
        self._checked_at = 0.0
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._templates: dict[str, Template] = {}
        self._workgroups: dict[str, Workgroup] = {}

    def _files(self) -> list[Path]:
        return sorted(p for p in self._folder.glob("*") if p.suffix in (".yaml", ".yml"))

    def _load(self, strict: bool) -> None:
        files = self._files()
        stamp = tuple((str(p), p.stat().st_mtime) for p in files)
        if stamp == self._stamp:
            return
        templates: dict[str, Template] = {}
        workgroups: dict[str, Workgroup] = {}
        try:
            for path in files:
                found_templates, found_workgroups = parse_manifests(path)
                templates.update(found_templates)
                workgroups.update(found_workgroups)
        except ConfigError as exc:
            if strict:
                raise
            log.error("keeping the previous templates: %s", exc.message)
            return
        self._stamp, self._templates, self._workgroups = stamp, templates, workgroups

    async def open(self) -> None:
        if not self._folder.is_dir():
            raise ConfigError(f"templates-path {self._folder} is not a folder")
        self._load(strict=True)
        self._checked_at = time.monotonic()

    async def close(self) -> None:
        return None

    def _refresh(self) -> None:
        if time.monotonic() - self._checked_at >= self._recheck_every:
            self._checked_at = time.monotonic()
            self._load(strict=False)

    async def template(self, name: str) -> Template | None:
        self._refresh()
        return self._templates.get(name)

    async def workgroup(self, name: str) -> Workgroup | None:
        self._refresh()
        return self._workgroups.get(name)

    async def catalog(self) -> tuple[list[Template], list[Workgroup]]:
        self._refresh()
        return _sorted(self._templates), _sorted(self._workgroups)


def _sorted(items: dict[str, T]) -> list[T]:
    return [items[name] for name in sorted(items)]
