"""The domain: algorithm templates, workgroups and run records (checkpoints).

Template Structs mirror the ``NexusAlgorithmTemplate`` / ``NexusAlgorithmWorkgroup``
custom resources field for field (camelCase on the wire). Kubernetes objects that nexus
only passes through to the Job (EnvVar, Toleration, Affinity, ...) stay plain mappings.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec


class LifecycleStage(str, enum.Enum):
    NEW = "NEW"
    BUFFERED = "BUFFERED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SCHEDULING_FAILED = "SCHEDULING_FAILED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STAGES


TERMINAL_STAGES = frozenset(
    {
        LifecycleStage.COMPLETED,
        LifecycleStage.FAILED,
        LifecycleStage.SCHEDULING_FAILED,
        LifecycleStage.DEADLINE_EXCEEDED,
        LifecycleStage.CANCELLED,
    }
)
FAILURE_STAGES = TERMINAL_STAGES - {LifecycleStage.COMPLETED}
PENDING_STAGES = frozenset({LifecycleStage.NEW, LifecycleStage.BUFFERED})


class _Spec(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    pass


class ContainerSpec(_Spec):
    image: str
    registry: str
    version_tag: str
    service_account_name: str | None = None


class ComputeResources(_Spec):
    cpu_limit: str | None = None
    memory_limit: str | None = None
    custom_resources: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None


class WorkgroupRef(_Spec):
    name: str
    group: str = "science.sneaksanddata.com"
    kind: str = "NexusAlgorithmWorkgroup"


class RuntimeEnvironment(_Spec):
    environment_variables: list[dict[str, Any]] | None = None
    mapped_environment_variables: list[dict[str, Any]] | None = None
    annotations: dict[str, str] | None = None
    deadline_seconds: int | None = None
    maximum_retries: int | None = None


class ErrorHandlingBehaviour(_Spec):
    transient_exit_codes: list[int] | None = None
    fatal_exit_codes: list[int] | None = None


class AlgorithmSpec(_Spec):
    """``NexusAlgorithmTemplate.spec``."""

    container: ContainerSpec
    command: str
    compute_resources: ComputeResources | None = None
    workgroup_ref: WorkgroupRef | None = None
    args: list[str] | None = None
    runtime_environment: RuntimeEnvironment | None = None
    error_handling_behaviour: ErrorHandlingBehaviour | None = None


class WorkgroupSpec(_Spec):
    """``NexusAlgorithmWorkgroup.spec``."""

    cluster: str
    description: str = ""
    capabilities: dict[str, bool] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None


class Template(msgspec.Struct, frozen=True):
    name: str
    spec: AlgorithmSpec


class Workgroup(msgspec.Struct, frozen=True):
    name: str
    spec: WorkgroupSpec


# --- per-request overrides (customConfiguration) -------------------------------------


class ContainerOverride(_Spec):
    image: str | None = None
    registry: str | None = None
    version_tag: str | None = None
    service_account_name: str | None = None


class WorkgroupRefOverride(_Spec):
    name: str | None = None
    group: str | None = None
    kind: str | None = None


class SpecOverride(_Spec):
    """A partial spec; only the fields SPEC §2 lists are applied, the rest is recorded."""

    container: ContainerOverride | None = None
    compute_resources: ComputeResources | None = None
    workgroup_ref: WorkgroupRefOverride | None = None
    runtime_environment: RuntimeEnvironment | None = None
    command: str | None = None
    args: list[str] | None = None
    error_handling_behaviour: ErrorHandlingBehaviour | None = None


class ParentRef(msgspec.Struct, rename="camel", frozen=True):
    request_id: str
    algorithm_name: str


# --- the run record ------------------------------------------------------------------


class Run(msgspec.Struct, kw_only=True):
    """One row of ``checkpoints``: everything nexus knows about a run.

    Field names are the column names and the snake_case keys of the metadata endpoint.
    """

    algorithm: str
    id: str
    lifecycle_stage: LifecycleStage
    payload_uri: str = ""
    result_uri: str = ""
    algorithm_failure_cause: str = ""
    algorithm_failure_details: str = ""
    received_by_host: str = ""
    received_at: datetime | None = None
    sent_at: datetime | None = None
    applied_configuration: AlgorithmSpec | None = None
    configuration_overrides: SpecOverride | None = None
    content_hash: str = ""
    last_modified: datetime | None = None
    tag: str = ""
    api_version: str = ""
    job_uid: str = ""
    parent: ParentRef | None = None
    cluster: str = ""
    payload_valid_for: str = ""


class SubmissionEntry(msgspec.Struct, kw_only=True):
    """One row of ``submission_buffer``: the rendered Job and the shard it goes to."""

    algorithm: str
    id: str
    cluster: str
    template: dict[str, Any]


class RunKey(msgspec.Struct, frozen=True, array_like=True):
    """What travels through the virtual queue: a key, never the payload.

    ``cluster`` picks the shard's lane of the queue; ``attempt`` counts failed launches.
    """

    algorithm: str
    id: str
    attempt: int = 0
    cluster: str = ""
