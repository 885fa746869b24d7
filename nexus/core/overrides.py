"""Apply a request's ``customConfiguration`` to its template (SPEC §2).

Only container image/registry/versionTag, compute resources, the workgroup reference and
the deadline/retry limits override the template; the rest of the override is recorded in
``configuration_overrides`` but changes nothing. Unlike the Go system, an override of a
section the template lacks creates that section instead of failing.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from nexus.core.models import (
    AlgorithmSpec,
    ComputeResources,
    RuntimeEnvironment,
    SpecOverride,
    WorkgroupRef,
)

_S = TypeVar("_S", bound=msgspec.Struct)


def _replace_set(obj: _S, **candidates: object) -> _S:
    changes = {name: value for name, value in candidates.items() if value is not None}
    return msgspec.structs.replace(obj, **changes) if changes else obj


def apply_overrides(spec: AlgorithmSpec, override: SpecOverride | None) -> AlgorithmSpec:
    if override is None:
        return spec
    merged = spec
    if override.container is not None:
        merged = msgspec.structs.replace(
            merged,
            container=_replace_set(
                merged.container,
                image=override.container.image or None,
                registry=override.container.registry or None,
                version_tag=override.container.version_tag or None,
            ),
        )
    if override.compute_resources is not None:
        given = override.compute_resources
        merged = msgspec.structs.replace(
            merged,
            compute_resources=_replace_set(
                merged.compute_resources or ComputeResources(),
                cpu_limit=given.cpu_limit or None,
                memory_limit=given.memory_limit or None,
                limits=given.limits or None,
                requests=given.requests or None,
            ),
        )
    if override.workgroup_ref is not None:
        ref = override.workgroup_ref
        current = merged.workgroup_ref or WorkgroupRef(name=ref.name or "default")
        merged = msgspec.structs.replace(
            merged,
            workgroup_ref=_replace_set(
                current, name=ref.name or None, group=ref.group or None, kind=ref.kind or None
            ),
        )
    if override.runtime_environment is not None:
        given_env = override.runtime_environment
        merged = msgspec.structs.replace(
            merged,
            runtime_environment=_replace_set(
                merged.runtime_environment or RuntimeEnvironment(),
                deadline_seconds=given_env.deadline_seconds,
                maximum_retries=given_env.maximum_retries,
            ),
        )
    return merged
