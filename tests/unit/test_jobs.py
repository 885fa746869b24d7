"""The Kubernetes Job manifest rendered for a run (SPEC §7)."""

from __future__ import annotations

import msgspec
import pytest

from nexus.core.jobs import (
    COMPONENT_LABEL,
    TEMPLATE_LABEL,
    VERSION_LABEL,
    JobContext,
    render_args,
    render_job,
    render_pod_failure_policy,
    render_resources,
)
from nexus.core.models import (
    AlgorithmSpec,
    ComputeResources,
    ContainerSpec,
    ErrorHandlingBehaviour,
    ParentRef,
    RuntimeEnvironment,
    WorkgroupRef,
    WorkgroupSpec,
)

RUN_ID = "5b7c2a1e-3d4f-4a6b-8c9d-0e1f2a3b4c5d"
PAYLOAD_URL = "http://nexus.local/data/v1/payloads/algo/requests/x?exp=1&sig=abc"


def make_spec(**changes) -> AlgorithmSpec:
    spec = AlgorithmSpec(
        container=ContainerSpec(
            image="algo",
            registry="registry.example",
            version_tag="1.2.3",
            service_account_name="algo-sa",
        ),
        command="python -m algo.main",
        args=["--sas-uri=%s", "--request-id=%s", "--verbose"],
        compute_resources=ComputeResources(cpu_limit="2", memory_limit="1Gi"),
        workgroup_ref=WorkgroupRef(name="wg"),
        runtime_environment=RuntimeEnvironment(
            environment_variables=[
                {"name": "MODE", "value": "fast"},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            mapped_environment_variables=[{"configMapRef": {"name": "algo-config"}}],
            annotations={"example.com/team": "science", "example.com/cost": "42"},
            deadline_seconds=600,
            maximum_retries=3,
        ),
        error_handling_behaviour=ErrorHandlingBehaviour(
            transient_exit_codes=[75, 75, 11], fatal_exit_codes=[42, 2]
        ),
    )
    return msgspec.structs.replace(spec, **changes)


WORKGROUP = WorkgroupSpec(
    cluster="shard-a",
    tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    affinity={
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["science"]}]}
                ]
            }
        }
    },
)


def make_ctx(**changes) -> JobContext:
    ctx = JobContext(
        run_id=RUN_ID,
        algorithm="algo",
        cluster="shard-a",
        namespace="runs",
        payload_url=PAYLOAD_URL,
        nexus_version="9.9.9",
    )
    return msgspec.structs.replace(ctx, **changes)


@pytest.fixture
def job() -> dict:
    return render_job(make_spec(), WORKGROUP, make_ctx())


def container_of(job: dict) -> dict:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_job_identity(job):
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == RUN_ID
    assert job["metadata"]["namespace"] == "runs"
    assert "ownerReferences" not in job["metadata"]


def test_labels_on_job_and_pod(job):
    expected = {
        "science.sneaksanddata.com/algorithm-template-name": "algo",
        "science.sneaksanddata.com/nexus-component": "algorithm-run",
        "science.sneaksanddata.com/nexus-version": "9.9.9",
    }
    assert (TEMPLATE_LABEL, COMPONENT_LABEL, VERSION_LABEL) == tuple(expected)
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected


def test_annotations_on_job_and_pod(job):
    expected = {"example.com/team": "science", "example.com/cost": "42"}
    assert job["metadata"]["annotations"] == expected
    assert job["spec"]["template"]["metadata"]["annotations"] == expected


def test_limits_and_ttl(job):
    spec = job["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 300


def test_ttl_is_configurable():
    job = render_job(make_spec(), WORKGROUP, make_ctx(ttl_seconds_after_finished=60))
    assert job["spec"]["ttlSecondsAfterFinished"] == 60


def test_no_limits_when_the_template_has_none():
    job = render_job(make_spec(runtime_environment=None), WORKGROUP, make_ctx())
    assert "backoffLimit" not in job["spec"]
    assert "activeDeadlineSeconds" not in job["spec"]
    assert job["metadata"]["annotations"] == {}


def test_zero_retries_is_kept():
    job = render_job(
        make_spec(runtime_environment=RuntimeEnvironment(maximum_retries=0, deadline_seconds=0)),
        WORKGROUP,
        make_ctx(),
    )
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 0


def test_pod_failure_policy(job):
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 42]}} in rules
    assert {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [11, 75]}} in rules
    assert len(rules) == 3


@pytest.mark.parametrize(
    "behaviour",
    [
        None,
        ErrorHandlingBehaviour(),
        ErrorHandlingBehaviour(transient_exit_codes=[], fatal_exit_codes=[]),
    ],
)
def test_pod_failure_policy_without_exit_codes_only_ignores_disruptions(behaviour):
    policy = render_pod_failure_policy(make_spec(error_handling_behaviour=behaviour))
    assert policy == {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        ]
    }
    assert not any("onExitCodes" in rule for rule in policy["rules"])


def test_only_fatal_codes():
    policy = render_pod_failure_policy(
        make_spec(error_handling_behaviour=ErrorHandlingBehaviour(fatal_exit_codes=[3]))
    )
    assert [rule["action"] for rule in policy["rules"]] == ["Ignore", "FailJob"]


def test_pod_spec(job):
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "algo-sa"
    assert pod["tolerations"] == WORKGROUP.tolerations
    assert pod["affinity"] == WORKGROUP.affinity


def test_pod_spec_without_service_account_or_placement():
    spec = make_spec(container=ContainerSpec(image="a", registry="r", version_tag="t"))
    job = render_job(spec, WorkgroupSpec(cluster="c"), make_ctx())
    pod = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod
    assert "affinity" not in pod and "tolerations" not in pod


def test_container_image_command_and_args(job):
    container = container_of(job)
    assert container["image"] == "registry.example/algo:1.2.3"
    assert container["command"] == ["python", "-m", "algo.main"]
    assert container["args"] == [f"--sas-uri={PAYLOAD_URL}", f"--request-id={RUN_ID}", "--verbose"]


def test_command_split_ignores_repeated_spaces():
    job = render_job(make_spec(command="  run   the  thing "), WORKGROUP, make_ctx())
    assert container_of(job)["command"] == ["run", "the", "thing"]


def test_render_args():
    assert render_args(None, "u", "r") == []
    assert render_args(["--sas-uri", "%s"], "u", "r") == ["--sas-uri", "%s"]
    assert render_args(["--sas-uri=%s", "--request-id=%s", "--x=%s"], "U", "R") == [
        "--sas-uri=U",
        "--request-id=R",
        "--x=%s",
    ]
    # only the first placeholder of an arg is formatted
    assert render_args(["sas-uri:%s:%s"], "U", "R") == ["sas-uri:U:%s"]


def test_env(job):
    env = container_of(job)["env"]
    assert env[0] == {"name": "MODE", "value": "fast"}
    assert env[1]["name"] == "SECRET" and "valueFrom" in env[1]
    by_name = {item["name"]: item.get("value") for item in env}
    assert by_name["NEXUS__ALGORITHM_NAME"] == "algo"
    assert by_name["NEXUS__SHARD_NAME"] == "shard-a"
    assert "NEXUS__PARENT_REQUEST_ID" not in by_name
    assert container_of(job)["envFrom"] == [{"configMapRef": {"name": "algo-config"}}]


def test_env_of_a_child_names_its_parent():
    parent = ParentRef(request_id="parent-id", algorithm_name="parent-algo")
    job = render_job(make_spec(), WORKGROUP, make_ctx(parent=parent, parent_job_uid="uid-1"))
    by_name = {item["name"]: item.get("value") for item in container_of(job)["env"]}
    assert by_name["NEXUS__PARENT_REQUEST_ID"] == "parent-id"
    assert by_name["NEXUS__PARENT_ALGORITHM_NAME"] == "parent-algo"


def test_extra_env_is_appended():
    job = render_job(
        make_spec(), WORKGROUP, make_ctx(extra_env={"NEXUS__CLIENT__RECEIVER": "http://r"})
    )
    assert container_of(job)["env"][-1] == {"name": "NEXUS__CLIENT__RECEIVER", "value": "http://r"}


def test_resources_cpu_request_is_ten_percent_of_the_limit(job):
    assert container_of(job)["resources"] == {
        "limits": {"cpu": "2", "memory": "1Gi"},
        "requests": {"cpu": "200m", "memory": "1Gi"},
    }


def test_custom_resources_join_the_limits():
    resources = render_resources(
        make_spec(
            compute_resources=ComputeResources(
                cpu_limit="500m", memory_limit="256Mi", custom_resources={"nvidia.com/gpu": "1"}
            )
        )
    )
    assert resources == {
        "limits": {"cpu": "500m", "memory": "256Mi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "50m", "memory": "256Mi", "nvidia.com/gpu": "1"},
    }


def test_limits_and_requests_maps_win():
    resources = render_resources(
        make_spec(
            compute_resources=ComputeResources(
                cpu_limit="8",
                memory_limit="64Gi",
                limits={"cpu": "4", "memory": "2Gi"},
                requests={"cpu": "1", "memory": "1Gi"},
            )
        )
    )
    assert resources == {
        "limits": {"cpu": "4", "memory": "2Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }


def test_limits_map_alone_derives_requests():
    resources = render_resources(
        make_spec(
            compute_resources=ComputeResources(cpu_limit="8", limits={"cpu": "4", "memory": "2Gi"})
        )
    )
    assert resources == {
        "limits": {"cpu": "4", "memory": "2Gi"},
        "requests": {"cpu": "400m", "memory": "2Gi"},
    }


def test_requests_map_alone_is_kept():
    resources = render_resources(
        make_spec(compute_resources=ComputeResources(cpu_limit="2", requests={"cpu": "1"}))
    )
    assert resources == {"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}


def test_no_compute_resources_means_no_resources_key():
    job = render_job(make_spec(compute_resources=None), WORKGROUP, make_ctx())
    assert "resources" not in container_of(job)
    assert render_resources(make_spec(compute_resources=ComputeResources())) == {}


def test_memory_only_limit_copies_to_requests():
    resources = render_resources(
        make_spec(compute_resources=ComputeResources(memory_limit="128Mi"))
    )
    assert resources == {"limits": {"memory": "128Mi"}, "requests": {"memory": "128Mi"}}


def test_child_job_has_an_owner_reference_to_its_parent_job():
    parent = ParentRef(
        request_id="7d1c0f00-0000-4000-8000-000000000001", algorithm_name="parent-algo"
    )
    job = render_job(make_spec(), WORKGROUP, make_ctx(parent=parent, parent_job_uid="uid-123"))
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "7d1c0f00-0000-4000-8000-000000000001",
            "uid": "uid-123",
        }
    ]


def test_child_without_a_known_parent_job_has_no_owner_reference():
    parent = ParentRef(request_id="p", algorithm_name="parent-algo")
    job = render_job(make_spec(), WORKGROUP, make_ctx(parent=parent))
    assert "ownerReferences" not in job["metadata"]


def test_manifest_is_plain_json_data(job):
    assert msgspec.json.decode(msgspec.json.encode(job)) == job


def test_labels_of_job_and_pod_are_separate_objects(job):
    job["metadata"]["labels"]["x"] = "y"
    assert "x" not in job["spec"]["template"]["metadata"]["labels"]
