"""Render the Kubernetes Job for a run as plain data (SPEC §7).

The same manifest is stored in ``submission_buffer``, created on a shard by the
Kubernetes launcher, and read by the local executor on embedded defaults, so what runs
locally is exactly what would run on a cluster.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nexus.core.models import AlgorithmSpec, ParentRef, Quantity, VolumeMount, WorkgroupSpec
from nexus.core.units import cpu_request_from_limit

LABEL_PREFIX = "science.sneaksanddata.com"
TEMPLATE_LABEL = f"{LABEL_PREFIX}/algorithm-template-name"
COMPONENT_LABEL = f"{LABEL_PREFIX}/nexus-component"
VERSION_LABEL = f"{LABEL_PREFIX}/nexus-version"
# How often the run's Job was launched again after a disruption (core.supervision): kept
# on the stored Job, which the re-queue rewrites in the same write as the stage change.
DISRUPTIONS_ANNOTATION = f"{LABEL_PREFIX}/disruptions"
COMPONENT_VALUE = "algorithm-run"
DATADOG_VOLUME = "dsdsocket"
DATADOG_HOST_PATH = "/var/run/datadog/"
DATADOG_MOUNT_PATH = "/var/run/datadog"
EMPTY_DIR_KEY = "emptyDir"


class JobContext(msgspec.Struct, kw_only=True):
    """Everything the renderer needs besides the merged template spec."""

    run_id: str
    algorithm: str
    cluster: str
    namespace: str
    payload_url: str
    nexus_version: str
    ttl_seconds_after_finished: int = 300
    parent: ParentRef | None = None
    parent_job_uid: str = ""
    extra_env: dict[str, str] = msgspec.field(default_factory=dict)


def render_args(args: list[str] | None, payload_url: str, run_id: str) -> list[str]:
    """Format the payload URL into args naming ``sas-uri`` and the id into ``request-id``."""
    rendered = []
    for arg in args or ():
        if "sas-uri" in arg:
            arg = arg.replace("%s", payload_url, 1)
        elif "request-id" in arg:
            arg = arg.replace("%s", run_id, 1)
        rendered.append(arg)
    return rendered


def _quantities(values: dict[str, Quantity] | None) -> dict[str, str]:
    return {name: str(value) for name, value in (values or {}).items()}


def render_resources(spec: AlgorithmSpec) -> dict[str, dict[str, str]]:
    """Limits and requests as the Go system's ToV1Job sets them: a ``limits`` map wins over
    cpuLimit/memoryLimit, a ``requests`` map over requests derived from the limits (CPU
    times ``defaultResourceQuota``), and ``customResources`` join both either way."""
    compute = spec.compute_resources
    if compute is None:
        return {}
    limits = _quantities(compute.limits)
    if not limits:
        if compute.cpu_limit:
            limits["cpu"] = compute.cpu_limit
        if compute.memory_limit:
            limits["memory"] = compute.memory_limit
    requests = _quantities(compute.requests)
    if not requests and limits:
        requests = dict(limits)
        if "cpu" in limits:
            requests["cpu"] = cpu_request_from_limit(limits["cpu"], compute.cpu_request_factor())
    limits.update(compute.custom_resources or {})
    requests.update(compute.custom_resources or {})
    resources: dict[str, dict[str, str]] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return resources


def _mount(mount: VolumeMount) -> dict[str, Any]:
    return msgspec.to_builtins(mount)  # type: ignore[no-any-return]


def render_volumes(spec: AlgorithmSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pod volumes and container mounts, in the Go system's order: the Datadog socket,
    then ConfigMaps, Secrets and storage (PersistentVolumeClaims, or an emptyDir under
    the key "emptyDir"), each volume named after its mount. Go walks each map in random
    order; nexus sorts by source name, so the same template renders the same Job."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    datadog = spec.datadog_integration_settings
    if datadog is not None and datadog.mount_datadog_socket:
        volumes.append({"name": DATADOG_VOLUME, "hostPath": {"path": DATADOG_HOST_PATH}})
        mounts.append({"name": DATADOG_VOLUME, "mountPath": DATADOG_MOUNT_PATH})
    runtime = spec.runtime_environment
    if runtime is None:
        return volumes, mounts
    for source, mount in sorted((runtime.configuration_file_mounts or {}).items()):
        volumes.append({"name": mount.name, "configMap": {"name": source}})
        mounts.append(_mount(mount))
    for source, mount in sorted((runtime.secret_file_mounts or {}).items()):
        volumes.append({"name": mount.name, "secret": {"secretName": source}})
        mounts.append(_mount(mount))
    for source, mount in sorted((runtime.storage_mounts or {}).items()):
        if source == EMPTY_DIR_KEY:
            volumes.append({"name": mount.name, "emptyDir": {}})
        else:
            volumes.append({"name": mount.name, "persistentVolumeClaim": {"claimName": source}})
        mounts.append(_mount(mount))
    return volumes, mounts


def render_pod_failure_policy(spec: AlgorithmSpec) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    behaviour = spec.error_handling_behaviour
    if behaviour and behaviour.fatal_exit_codes:
        rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {
                    "operator": "In",
                    "values": sorted(set(behaviour.fatal_exit_codes)),
                },
            }
        )
    if behaviour and behaviour.transient_exit_codes:
        rules.append(
            {
                "action": "Ignore",
                "onExitCodes": {
                    "operator": "In",
                    "values": sorted(set(behaviour.transient_exit_codes)),
                },
            }
        )
    return {"rules": rules}


def render_env(spec: AlgorithmSpec, ctx: JobContext) -> list[dict[str, Any]]:
    runtime = spec.runtime_environment
    env = [dict(item) for item in (runtime.environment_variables if runtime else None) or ()]
    env.append({"name": "NEXUS__ALGORITHM_NAME", "value": ctx.algorithm})
    env.append({"name": "NEXUS__SHARD_NAME", "value": ctx.cluster})
    if ctx.parent is not None:
        env.append({"name": "NEXUS__PARENT_REQUEST_ID", "value": ctx.parent.request_id})
        env.append({"name": "NEXUS__PARENT_ALGORITHM_NAME", "value": ctx.parent.algorithm_name})
    env.extend({"name": name, "value": value} for name, value in ctx.extra_env.items())
    return env


def render_job(spec: AlgorithmSpec, workgroup: WorkgroupSpec, ctx: JobContext) -> dict[str, Any]:
    labels = {
        TEMPLATE_LABEL: ctx.algorithm,
        COMPONENT_LABEL: COMPONENT_VALUE,
        VERSION_LABEL: ctx.nexus_version,
    }
    runtime = spec.runtime_environment
    annotations = dict((runtime.annotations if runtime else None) or {})
    container: dict[str, Any] = {
        "name": ctx.run_id,
        "image": f"{spec.container.registry}/{spec.container.image}:{spec.container.version_tag}",
        "imagePullPolicy": "IfNotPresent",
        "command": [part for part in spec.command.split(" ") if part],
        "args": render_args(spec.args, ctx.payload_url, ctx.run_id),
        "env": render_env(spec, ctx),
    }
    env_from = runtime.mapped_environment_variables if runtime else None
    if env_from:
        container["envFrom"] = [dict(item) for item in env_from]
    resources = render_resources(spec)
    if resources:
        container["resources"] = resources
    volumes, mounts = render_volumes(spec)
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes
    if spec.container.service_account_name:
        pod_spec["serviceAccountName"] = spec.container.service_account_name
    if workgroup.affinity:
        pod_spec["affinity"] = workgroup.affinity
    if workgroup.tolerations:
        pod_spec["tolerations"] = workgroup.tolerations
    job_spec: dict[str, Any] = {
        "ttlSecondsAfterFinished": ctx.ttl_seconds_after_finished,
        "podFailurePolicy": render_pod_failure_policy(spec),
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": pod_spec,
        },
    }
    if runtime and runtime.maximum_retries is not None:
        job_spec["backoffLimit"] = runtime.maximum_retries
    if runtime and runtime.deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = runtime.deadline_seconds
    metadata: dict[str, Any] = {
        "name": ctx.run_id,
        "namespace": ctx.namespace,
        "labels": labels,
        "annotations": annotations,
    }
    if ctx.parent is not None and ctx.parent_job_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": ctx.parent.request_id,
                "uid": ctx.parent_job_uid,
            }
        ]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def disruptions(manifest: dict[str, Any]) -> int:
    """How many disruptions the stored Job has been launched again after (0: none)."""
    value = manifest.get("metadata", {}).get("annotations", {}).get(DISRUPTIONS_ANNOTATION, "0")
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


def with_disruptions(manifest: dict[str, Any], count: int) -> dict[str, Any]:
    """A copy of ``manifest`` whose disruption count is ``count`` (an annotation value is
    a string in Kubernetes)."""
    metadata = dict(manifest.get("metadata", {}))
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        DISRUPTIONS_ANNOTATION: str(count),
    }
    return {**manifest, "metadata": metadata}
