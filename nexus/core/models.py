"""The domain: algorithm templates, workgroups and run records (checkpoints).

Template Structs mirror the ``NexusAlgorithmTemplate`` / ``NexusAlgorithmWorkgroup``
custom resources field for field (camelCase on the wire). Kubernetes objects that nexus
only passes through to the Job (EnvVar, Toleration, Affinity, ...) stay plain mappings.
"""

from __future__ import annotations

import enum
import math
from datetime import datetime
from typing import Annotated, Any

import msgspec

from nexus.core.units import parse_duration, parse_quantity


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


class _Spec(
    msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True
):
    """A part of a template or workgroup spec. A key nexus does not know is refused with
    its path (``Object contains unknown field ...``) rather than dropped: the API server
    prunes or refuses unknown keys itself, but a folder of manifests has no such guard."""


# A resource quantity as the Go CRD's ResourceList admits it: "500m", "1Gi", or a number.
Quantity = str | int


class ContainerSpec(_Spec):
    image: str
    registry: str
    version_tag: str
    service_account_name: str | None = None


DEFAULT_CPU_REQUEST_FACTOR = 0.1


class ComputeResources(_Spec):
    cpu_limit: str | None = None
    memory_limit: str | None = None
    default_resource_quota: str | None = None
    custom_resources: dict[str, str] | None = None
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None

    def __post_init__(self) -> None:
        self.cpu_request_factor()  # a bad factor fails the template at load

    def cpu_request_factor(self) -> float:
        """``defaultResourceQuota``: the CPU request as a fraction of the limit ("0.25"),
        0.1 when absent or empty. The Go system falls back to 0.1 on a value it cannot
        parse; nexus refuses it, so a typo is not silently a 10% request."""
        text = (self.default_resource_quota or "").strip()
        if not text:
            return DEFAULT_CPU_REQUEST_FACTOR
        try:
            factor = float(text)
        except ValueError:
            factor = math.nan
        if not 0 <= factor <= 1:  # also refuses nan
            raise ValueError(
                f"defaultResourceQuota: invalid value {text[:40]!r}: expected the CPU request "
                "as a fraction of the limit between 0 and 1, e.g. '0.1'"
            )
        return factor


class WorkgroupRef(_Spec):
    name: str
    group: str = "science.sneaksanddata.com"
    kind: str = "NexusAlgorithmWorkgroup"


class VolumeMount(_Spec):
    """A Kubernetes ``VolumeMount``, copied to the container as given."""

    name: str
    mount_path: str
    read_only: bool = False
    recursive_read_only: str | None = None
    mount_propagation: str | None = None
    sub_path: str | None = None
    sub_path_expr: str | None = None


class RuntimeEnvironment(_Spec):
    environment_variables: list[dict[str, Any]] | None = None
    mapped_environment_variables: list[dict[str, Any]] | None = None
    # source name -> mount: a ConfigMap, a Secret, a PersistentVolumeClaim (or, under the
    # key "emptyDir", an emptyDir volume), each mounted into the container
    configuration_file_mounts: dict[str, VolumeMount] | None = None
    secret_file_mounts: dict[str, VolumeMount] | None = None
    storage_mounts: dict[str, VolumeMount] | None = None
    annotations: dict[str, str] | None = None
    deadline_seconds: int | None = None
    maximum_retries: int | None = None


class ErrorHandlingBehaviour(_Spec):
    transient_exit_codes: list[int] | None = None
    fatal_exit_codes: list[int] | None = None


PAYLOAD_SERIALIZATIONS = ("s3", "backend")


class PayloadConfiguration(_Spec):
    payload_valid_for: str | None = None
    payload_serialization: str | None = None

    def __post_init__(self) -> None:
        if self.payload_valid_for:
            try:
                valid_for = parse_duration(self.payload_valid_for)
            except ValueError as exc:
                raise ValueError(f"payloadValidFor: {exc}") from None
            if valid_for <= 0:
                raise ValueError("payloadValidFor: must be longer than zero")
        if self.payload_serialization and self.payload_serialization not in (
            PAYLOAD_SERIALIZATIONS
        ):
            raise ValueError(
                f"payloadSerialization: invalid value {self.payload_serialization[:40]!r}: "
                f"expected one of {', '.join(PAYLOAD_SERIALIZATIONS)}"
            )


class DatadogIntegrationSettings(_Spec):
    mount_datadog_socket: bool | None = None


class AlgorithmSpec(_Spec):
    """``NexusAlgorithmTemplate.spec``."""

    container: ContainerSpec
    command: str
    compute_resources: ComputeResources | None = None
    workgroup_ref: WorkgroupRef | None = None
    args: list[str] | None = None
    payload_configuration: PayloadConfiguration | None = None
    runtime_environment: RuntimeEnvironment | None = None
    error_handling_behaviour: ErrorHandlingBehaviour | None = None
    datadog_integration_settings: DatadogIntegrationSettings | None = None

    @property
    def payload_valid_for(self) -> str:
        """The template's own payload URL lifetime ("" when it sets none)."""
        return (self.payload_configuration and self.payload_configuration.payload_valid_for) or ""

    @property
    def payload_serialization(self) -> str:
        """Where the payload is kept: "s3" (the payload buffer, also when unset) or
        "backend" (the run store, which nexus does not implement)."""
        configuration = self.payload_configuration
        return (configuration and configuration.payload_serialization) or "s3"


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
    labels: dict[str, str] = {}  # the resource's metadata.labels
    annotations: dict[str, str] = {}  # and its metadata.annotations


class Workgroup(msgspec.Struct, frozen=True):
    name: str
    spec: WorkgroupSpec
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


# --- per-request overrides (customConfiguration) -------------------------------------


class _Override(_Spec, forbid_unknown_fields=True):
    """A request's ``customConfiguration`` part: every field of the Go system's spec is
    known (so its SDKs' full specs decode, empty strings and nulls included), and a key
    that is not one is refused, with its path, instead of being dropped."""


class ContainerOverride(_Override):
    image: str | None = None
    registry: str | None = None
    version_tag: str | None = None
    service_account_name: str | None = None


class WorkgroupRefOverride(_Override):
    name: str | None = None
    group: str | None = None
    kind: str | None = None


def _check_quantities(field: str, values: dict[str, str] | None) -> None:
    for name, value in (values or {}).items():
        _check_quantity(f"{field}.{name}", value)


def _check_quantity(field: str, value: str | None) -> None:
    if not value:
        return
    try:
        quantity = parse_quantity(value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    if quantity < 0:
        raise ValueError(f"{field}: invalid quantity {value!r}: must not be negative")


class ComputeResourcesOverride(_Override):
    cpu_limit: str | None = None
    memory_limit: str | None = None
    default_resource_quota: str | None = None
    custom_resources: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None

    def __post_init__(self) -> None:
        # A quantity Kubernetes would refuse fails the request now, not the launch later.
        _check_quantity("cpuLimit", self.cpu_limit)
        _check_quantity("memoryLimit", self.memory_limit)
        _check_quantities("customResources", self.custom_resources)
        _check_quantities("limits", self.limits)
        _check_quantities("requests", self.requests)


_Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # an int32, as in the Go spec

# Free-form parts of an override (env entries, mounts) are Kubernetes objects a few levels
# deep. Bounded, so the stored override always decodes again (the store reads it back
# deeper in the stack than the request did) and renders into a Job the API server takes.
OVERRIDE_DEPTH = 32


def _check_depth(field: str, value: Any) -> None:
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > OVERRIDE_DEPTH:
            raise ValueError(f"{field}: nested more than {OVERRIDE_DEPTH} levels deep")
        children = list(item.values()) if isinstance(item, dict) else item
        if isinstance(children, list):
            pending.extend((child, depth + 1) for child in children)


class RuntimeEnvironmentOverride(_Override):
    environment_variables: list[dict[str, Any]] | None = None
    mapped_environment_variables: list[dict[str, Any]] | None = None
    configuration_file_mounts: dict[str, dict[str, Any]] | None = None
    secret_file_mounts: dict[str, dict[str, Any]] | None = None
    storage_mounts: dict[str, dict[str, Any]] | None = None
    annotations: dict[str, str] | None = None
    deadline_seconds: _Count | None = None
    maximum_retries: _Count | None = None

    def __post_init__(self) -> None:
        _check_depth("environmentVariables", self.environment_variables)
        _check_depth("mappedEnvironmentVariables", self.mapped_environment_variables)
        _check_depth("configurationFileMounts", self.configuration_file_mounts)
        _check_depth("secretFileMounts", self.secret_file_mounts)
        _check_depth("storageMounts", self.storage_mounts)


class ErrorHandlingOverride(_Override):
    transient_exit_codes: list[int] | None = None
    fatal_exit_codes: list[int] | None = None


class PayloadConfigurationOverride(_Override):
    payload_valid_for: str | None = None
    payload_serialization: str | None = None


class DatadogOverride(_Override):
    mount_datadog_socket: bool | None = None


class SpecOverride(_Override):
    """A partial spec; only the fields SPEC §2 lists are applied, the rest is recorded."""

    container: ContainerOverride | None = None
    compute_resources: ComputeResourcesOverride | None = None
    workgroup_ref: WorkgroupRefOverride | None = None
    runtime_environment: RuntimeEnvironmentOverride | None = None
    command: str | None = None
    args: list[str] | None = None
    error_handling_behaviour: ErrorHandlingOverride | None = None
    payload_configuration: PayloadConfigurationOverride | None = None
    datadog_integration_settings: DatadogOverride | None = None


class ParentRef(msgspec.Struct, rename="camel", frozen=True):
    request_id: str
    algorithm_name: str


# --- the run record ------------------------------------------------------------------


class CallbackState(msgspec.Struct, kw_only=True):
    """Where a run's completion webhook stands (``callback_url``; core.callbacks).

    ``next_at`` is when the next attempt is due, and while an attempt is under way, until
    when it belongs to the process that claimed it (a claim is a compare-and-set on this
    whole state, so two schedulers never deliver the same attempt twice)."""

    attempts: int = 0
    next_at: datetime | None = None
    last_status: int = 0  # the receiver's HTTP status of the last attempt, 0: no answer
    last_error: str = ""
    delivered_at: datetime | None = None
    gave_up: bool = False


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
    # A completion webhook: POSTed to once the run is finished (core.callbacks). Done
    # (delivered or given up) once callback_done_at is set.
    callback_url: str = ""
    callback_state: CallbackState | None = None
    callback_done_at: datetime | None = None
    # The run this one was resubmitted from (same algorithm; POST .../resubmit/...).
    resubmitted_from: str = ""
    # Who created the run (or resubmitted it): the authenticated caller's name, empty when
    # nobody was checked (auth.mode none). Kept so that a recovered run is served as the
    # same tenant under tenants.tenant-by: caller, and so that listings can say whose it is.
    created_by: str = ""


class RunEvent(msgspec.Struct, kw_only=True, frozen=True, rename="camel", omit_defaults=True):
    """One entry of a run's history (core.history): a stage change, or a webhook
    delivery attempt. Stored in the same conditional write as the change it records."""

    at: datetime
    kind: str  # "stage" or "webhook"
    stage: LifecycleStage | None = None  # the stage reached (kind "stage")
    previous: LifecycleStage | None = None  # the stage left (unset for the first)
    cause: str = ""


class SubmissionEntry(msgspec.Struct, kw_only=True):
    """One row of ``submission_buffer``: the rendered Job and the shard it goes to."""

    algorithm: str
    id: str
    cluster: str
    template: dict[str, Any]


class RunKey(msgspec.Struct, frozen=True, array_like=True):
    """What travels through the virtual queue: a key, never the payload.

    ``cluster`` picks the shard's lane of the queue; ``attempt`` counts failed launches;
    ``tenant`` is whose share of the lane it is served in (empty: its algorithm's).
    """

    algorithm: str
    id: str
    attempt: int = 0
    cluster: str = ""
    tenant: str = ""
