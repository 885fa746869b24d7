"""Every template field of the Go system, rendered into the Job as the Go code does.

The expected fragments are read off the Go code, not off nexus: nexus-core
``pkg/checkpoint/models/checkpointed_request.go`` (``CheckpointedRequest.ToV1Job``,
``PayloadValidityPeriod``) and ``pkg/apis/science/v1/types.go``
(``NexusAlgorithmResources.GetDefaultQuota``, ``NexusAlgorithmSpec.Merge``). Each row
cites the part of the Go code it follows. Where nexus departs from Go on purpose (Go
walks the mount maps in random order; nexus sorts them), the row says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from nexus.backends.templates.folder import parse_manifests
from nexus.core.jobs import JobContext, render_job
from nexus.core.models import AlgorithmSpec, ParentRef, SpecOverride, WorkgroupSpec
from nexus.core.overrides import apply_overrides
from nexus.errors import ConfigError

EVERY_FIELD = Path(__file__).parents[1] / "templates" / "every-field.yaml"
RUN_ID = "5b7c2a1e-3d4f-4a6b-8c9d-0e1f2a3b4c5d"
BASE = {
    "container": {"image": "algo", "registry": "registry.example", "versionTag": "1.0"},
    "command": "python job.py",
    "computeResources": {"cpuLimit": "1000m", "memoryLimit": "2000Mi"},
    "workgroupRef": {"name": "wg", "group": "science.sneaksanddata.com", "kind": "W"},
    "runtimeEnvironment": {"deadlineSeconds": 120, "maximumRetries": 3},
}
WORKGROUP = WorkgroupSpec(cluster="shard-0")


def spec_with(**sections: dict[str, Any]) -> AlgorithmSpec:
    spec = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return msgspec.convert(spec, AlgorithmSpec)


def render(spec: AlgorithmSpec) -> dict[str, Any]:
    ctx = JobContext(
        run_id=RUN_ID,
        algorithm="algo",
        cluster="shard-0",
        namespace="runs",
        payload_url="https://somewhere",
        nexus_version="v0.0.0",
    )
    return render_job(spec, WORKGROUP, ctx)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def container(job: dict[str, Any]) -> dict[str, Any]:
    [only] = pod(job)["containers"]
    return only


# (case, spec sections, part of the Job, expected)
TABLE: list[tuple[str, dict[str, Any], str, Any]] = [
    # ToV1Job: `if *...MountDatadogSocket` appends Volume{Name: "dsdsocket", HostPath:
    # {Path: "/var/run/datadog/"}} and VolumeMount{Name: "dsdsocket", MountPath:
    # "/var/run/datadog"} (ReadOnly false, omitted in JSON), before every other volume.
    (
        "datadog socket",
        {"datadogIntegrationSettings": {"mountDatadogSocket": True}},
        "volumes",
        [{"name": "dsdsocket", "hostPath": {"path": "/var/run/datadog/"}}],
    ),
    (
        "datadog socket mount",
        {"datadogIntegrationSettings": {"mountDatadogSocket": True}},
        "volumeMounts",
        [{"name": "dsdsocket", "mountPath": "/var/run/datadog"}],
    ),
    # ToV1Job: mountDatadogSocket false adds nothing (Go dereferences the pointer, so it
    # panics when the section is absent; nexus reads absent as false).
    ("datadog off", {"datadogIntegrationSettings": {"mountDatadogSocket": False}}, "volumes", None),
    ("datadog absent", {}, "volumeMounts", None),
    # ToV1Job: `for fileSource, fileMount := range ConfigurationFileMounts` — the mount as
    # given, and Volume{Name: fileMount.Name, ConfigMap: {LocalObjectReference{Name:
    # fileSource}}}.
    (
        "configuration file mount",
        {
            "runtimeEnvironment": {
                "configurationFileMounts": {
                    "algo-config": {"name": "config", "mountPath": "/etc/algo", "readOnly": True}
                }
            }
        },
        "volumes",
        [{"name": "config", "configMap": {"name": "algo-config"}}],
    ),
    (
        "configuration file mount's mount",
        {
            "runtimeEnvironment": {
                "configurationFileMounts": {
                    "algo-config": {"name": "config", "mountPath": "/etc/algo", "readOnly": True}
                }
            }
        },
        "volumeMounts",
        [{"name": "config", "mountPath": "/etc/algo", "readOnly": True}],
    ),
    # ToV1Job: `range SecretFileMounts` — Volume{Name: fileMount.Name, Secret:
    # {SecretName: fileSource}}; every VolumeMount field is kept (subPath here).
    (
        "secret file mount",
        {
            "runtimeEnvironment": {
                "secretFileMounts": {
                    "algo-secret": {"name": "creds", "mountPath": "/s", "subPath": "a.json"}
                }
            }
        },
        "volumes",
        [{"name": "creds", "secret": {"secretName": "algo-secret"}}],
    ),
    (
        "secret file mount's mount",
        {
            "runtimeEnvironment": {
                "secretFileMounts": {
                    "algo-secret": {"name": "creds", "mountPath": "/s", "subPath": "a.json"}
                }
            }
        },
        "volumeMounts",
        [{"name": "creds", "mountPath": "/s", "subPath": "a.json"}],
    ),
    # ToV1Job: `range StorageMounts` — the key "emptyDir" is an EmptyDir volume (Medium
    # StorageMediumDefault, "" and so omitted: `emptyDir: {}`), any other key the claim
    # name of a PersistentVolumeClaim volume.
    (
        "storage mounts",
        {
            "runtimeEnvironment": {
                "storageMounts": {
                    "emptyDir": {"name": "scratch", "mountPath": "/tmp/s"},
                    "algo-pvc": {"name": "data", "mountPath": "/data"},
                }
            }
        },
        "volumes",
        # nexus sorts by source name; Go's map order is random
        [
            {"name": "data", "persistentVolumeClaim": {"claimName": "algo-pvc"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    ),
    # ToV1Job: the order of the loops — datadog, ConfigMaps, Secrets, storage.
    (
        "volume order",
        {
            "datadogIntegrationSettings": {"mountDatadogSocket": True},
            "runtimeEnvironment": {
                "storageMounts": {"emptyDir": {"name": "d", "mountPath": "/d"}},
                "secretFileMounts": {"s": {"name": "c", "mountPath": "/c"}},
                "configurationFileMounts": {"z": {"name": "b", "mountPath": "/b"}},
            },
        },
        "volume names",
        ["dsdsocket", "b", "c", "d"],
    ),
    # ToV1Job: requests = limits with CPU `fmt.Sprintf("%.0fm", MilliValue() *
    # GetDefaultQuota())`; GetDefaultQuota is ParseFloat(DefaultResourceQuota), 0.1 on
    # failure (and so when empty).
    (
        "cpu request at 10% by default",
        {},
        "resources",
        {
            "limits": {"cpu": "1000m", "memory": "2000Mi"},
            "requests": {"cpu": "100m", "memory": "2000Mi"},
        },
    ),
    (
        "defaultResourceQuota",
        {"computeResources": {"defaultResourceQuota": "0.5"}},
        "resources",
        {
            "limits": {"cpu": "1000m", "memory": "2000Mi"},
            "requests": {"cpu": "500m", "memory": "2000Mi"},
        },
    ),
    (
        "empty defaultResourceQuota",
        {"computeResources": {"defaultResourceQuota": ""}},
        "cpu",
        "100m",
    ),
    # %.0f rounds half to even, in float64: 5m * 0.1 = 0.5 -> 0m; 15m * 0.1 -> 2m
    ("tiny limit", {"computeResources": {"cpuLimit": "5m"}}, "cpu", "0m"),
    ("half rounds to even", {"computeResources": {"cpuLimit": "15m"}}, "cpu", "2m"),
    # ToV1Job: `if Limits != nil` the limits map wins over cpuLimit/memoryLimit, and the
    # quota applies to its CPU.
    (
        "limits map with quota",
        {
            "computeResources": {
                "limits": {"cpu": 2, "memory": "4Gi"},
                "defaultResourceQuota": "0.25",
            }
        },
        "resources",
        {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "500m", "memory": "4Gi"}},
    ),
    # ToV1Job: `for customResourceKey ... range CustomResources` sets each in both
    # jobResourceLimits and jobResourceRequests — after either branch, so also with a
    # limits map and with a requests map.
    (
        "custom resources with cpuLimit",
        {"computeResources": {"customResources": {"nvidia.com/gpu": "1"}}},
        "resources",
        {
            "limits": {"cpu": "1000m", "memory": "2000Mi", "nvidia.com/gpu": "1"},
            "requests": {"cpu": "100m", "memory": "2000Mi", "nvidia.com/gpu": "1"},
        },
    ),
    (
        "custom resources with a limits map",
        {
            "computeResources": {
                "limits": {"cpu": "4", "memory": "8Gi"},
                "customResources": {"nvidia.com/gpu": "2"},
            }
        },
        "resources",
        {
            "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"},
            "requests": {"cpu": "400m", "memory": "8Gi", "nvidia.com/gpu": "2"},
        },
    ),
    (
        "custom resources with limits and requests maps",
        {
            "computeResources": {
                "limits": {"cpu": "4"},
                "requests": {"cpu": "3"},
                "customResources": {"example.com/fpga": "1"},
            }
        },
        "resources",
        {
            "limits": {"cpu": "4", "example.com/fpga": "1"},
            "requests": {"cpu": "3", "example.com/fpga": "1"},
        },
    ),
]


def part(job: dict[str, Any], name: str) -> Any:
    if name == "volume names":
        return [volume["name"] for volume in pod(job).get("volumes", [])]
    if name == "volumes":
        return pod(job).get("volumes")
    if name == "cpu":
        return container(job)["resources"]["requests"]["cpu"]
    return container(job).get(name)


@pytest.mark.parametrize(
    ("sections", "name", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_field_renders_as_go_renders_it(sections, name, expected):
    assert part(render(spec_with(**sections)), name) == expected


def test_every_field_template_loads_and_renders():
    templates, workgroups = parse_manifests(EVERY_FIELD)
    spec, workgroup = templates["every-field"].spec, workgroups["every-field"].spec
    job = render_job(
        spec,
        workgroup,
        JobContext(
            run_id=RUN_ID,
            algorithm="every-field",
            cluster=workgroup.cluster,
            namespace="runs",
            payload_url="https://p",
            nexus_version="v0.0.0",
        ),
    )
    pod_spec = pod(job)
    assert [v["name"] for v in pod_spec["volumes"]] == [
        "dsdsocket",
        "config",
        "credentials",
        "scratch",  # source "emptyDir" sorts before "every-field-cache"
        "cache",
    ]
    assert pod_spec["volumes"][4] == {
        "name": "cache",
        "persistentVolumeClaim": {"claimName": "every-field-cache"},
    }
    assert container(job)["volumeMounts"][2] == {
        "name": "credentials",
        "mountPath": "/var/run/secrets/every-field",
        "readOnly": True,
        "subPath": "credentials.json",
    }
    assert container(job)["resources"] == {
        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "500m", "memory": "4Gi", "nvidia.com/gpu": "1"},
    }
    assert pod_spec["tolerations"] == workgroup.tolerations
    assert pod_spec["affinity"] == workgroup.affinity
    assert pod_spec["serviceAccountName"] == "every-field-sa"
    assert spec.payload_valid_for == "6h" and spec.payload_serialization == "s3"
    assert container(job)["envFrom"][1] == {
        "secretRef": {"name": "every-field-secret-env"},
        "prefix": "SECRET_",
    }


def test_every_field_round_trips_through_the_store_encoding():
    """The applied configuration is stored as JSON and read back: nothing is lost."""
    templates, _ = parse_manifests(EVERY_FIELD)
    spec = templates["every-field"].spec
    assert msgspec.json.decode(msgspec.json.encode(spec), type=AlgorithmSpec) == spec


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"runtimeEnvironment": {"deadlineSecond": 5}}, r"unknown field `deadlineSecond`"),
        ({"surprise": {"a": 1}}, r"unknown field `surprise`"),
        (
            {
                "runtimeEnvironment": {
                    "storageMounts": {"x": {"name": "a", "mountPath": "/a", "rw": 1}}
                }
            },
            r"unknown field `rw`",
        ),
        ({"runtimeEnvironment": {"storageMounts": {"x": {"name": "a"}}}}, "mountPath"),
        ({"datadogIntegrationSettings": {"mountDatadogSockets": True}}, "mountDatadogSockets"),
        ({"computeResources": {"defaultResourceQuota": "10%"}}, "defaultResourceQuota"),
        ({"computeResources": {"defaultResourceQuota": "1.5"}}, "defaultResourceQuota"),
        ({"computeResources": {"defaultResourceQuota": "nan"}}, "defaultResourceQuota"),
        ({"payloadConfiguration": {"payloadValidFor": "1 day"}}, "payloadValidFor"),
        ({"payloadConfiguration": {"payloadValidFor": "0s"}}, "payloadValidFor"),
        ({"payloadConfiguration": {"payloadSerialization": "S3"}}, "payloadSerialization"),
    ],
)
def test_a_field_nexus_does_not_know_or_cannot_use_is_refused(sections, message, tmp_path):
    """Not dropped: the folder source stops with the field named (the API server refuses
    or prunes unknown keys itself, given the CRDs)."""
    with pytest.raises(msgspec.ValidationError, match=message):
        spec_with(**sections)
    manifest = {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": "algo"},
        "spec": msgspec.to_builtins(spec_with()) | sections,
    }
    (tmp_path / "t.yaml").write_text(msgspec.json.encode(manifest).decode())
    with pytest.raises(ConfigError, match=message):
        parse_manifests(tmp_path / "t.yaml")


def test_unknown_workgroup_field_is_refused():
    with pytest.raises(msgspec.ValidationError, match="unknown field `clusters`"):
        msgspec.convert({"cluster": "a", "clusters": ["b"]}, WorkgroupSpec)


def test_new_fields_are_not_overridden_by_a_request_as_in_go():
    """NexusAlgorithmSpec.Merge ignores customConfiguration's mounts, payloadConfiguration,
    datadogIntegrationSettings and defaultResourceQuota: the template's stand."""
    spec = spec_with(
        computeResources={"defaultResourceQuota": "0.5"},
        payloadConfiguration={"payloadValidFor": "2h"},
    )
    override = msgspec.convert(
        {
            "computeResources": {"defaultResourceQuota": "0.9"},
            "payloadConfiguration": {"payloadValidFor": "9h", "payloadSerialization": "backend"},
            "datadogIntegrationSettings": {"mountDatadogSocket": True},
            "runtimeEnvironment": {"storageMounts": {"pvc": {"name": "a", "mountPath": "/a"}}},
        },
        SpecOverride,
    )
    assert apply_overrides(spec, override) == spec


def test_the_go_test_fixture_renders_the_job_the_go_test_expects():
    """nexus-core's own case: ``util_test.GetFakeRequest(true)`` rendered by
    ``TestCheckpointedRequest_ToV1Job`` (pkg/checkpoint/models/checkpointed_request_test.go),
    its expected Job written out here as JSON. Go's test passes a template as the owner;
    nexus owns a child by its parent's Job, so owner references are left out, as are the
    keys nexus adds (namespace, empty annotations)."""
    spec = msgspec.convert(
        {
            "container": {
                "image": "test.io",
                "registry": "algorithms/test",
                "versionTag": "v1.0.0",
                "serviceAccountName": "test-sa",
            },
            "computeResources": {"cpuLimit": "1000m", "memoryLimit": "2000Mi"},
            "workgroupRef": {
                "name": "test-workgroup",
                "group": "nexus-workgroup.io",
                "kind": "KarpenterWorkgroupV1",
            },
            "command": "python",
            "args": ["job.py", "--sas-uri=%s", "--request-id=%s", "--arg1=true"],
            "runtimeEnvironment": {"deadlineSeconds": 120, "maximumRetries": 3},
            "datadogIntegrationSettings": {"mountDatadogSocket": True},
        },
        AlgorithmSpec,
    )
    job = render_job(
        spec,
        WorkgroupSpec(cluster="shard-0", description="default"),
        JobContext(
            run_id="test-id",
            algorithm="test",
            cluster="shard-0",
            namespace="runs",
            payload_url="https://somewhere",
            nexus_version="v0.0.0",
            parent=ParentRef(request_id="test-parent", algorithm_name="test-parent-algorithm"),
        ),
    )
    labels = {
        "science.sneaksanddata.com/algorithm-template-name": "test",
        "science.sneaksanddata.com/nexus-version": "v0.0.0",
        "science.sneaksanddata.com/nexus-component": "algorithm-run",
    }
    expected_container = {
        "name": "test-id",
        "image": "algorithms/test/test.io:v1.0.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["python"],
        "args": ["job.py", "--sas-uri=https://somewhere", "--request-id=test-id", "--arg1=true"],
        "env": [
            {"name": "NEXUS__ALGORITHM_NAME", "value": "test"},
            {"name": "NEXUS__SHARD_NAME", "value": "shard-0"},
            {"name": "NEXUS__PARENT_REQUEST_ID", "value": "test-parent"},
            {"name": "NEXUS__PARENT_ALGORITHM_NAME", "value": "test-parent-algorithm"},
        ],
        "resources": {
            "limits": {"cpu": "1000m", "memory": "2000Mi"},
            "requests": {"cpu": "100m", "memory": "2000Mi"},
        },
        "volumeMounts": [{"name": "dsdsocket", "mountPath": "/var/run/datadog"}],
    }
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "test-id" and job["metadata"]["labels"] == labels
    assert {key: job["spec"][key] for key in job["spec"] if key != "template"} == {
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                }
            ]
        },
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 300,
        "activeDeadlineSeconds": 120,
    }
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert pod(job) == {
        "volumes": [{"name": "dsdsocket", "hostPath": {"path": "/var/run/datadog/"}}],
        "serviceAccountName": "test-sa",
        "restartPolicy": "Never",
        "containers": [expected_container],
    }
