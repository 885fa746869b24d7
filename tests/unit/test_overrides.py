"""customConfiguration: which parts of a request's partial spec override the template."""

from __future__ import annotations

import msgspec
import pytest

from nexus.core.models import (
    AlgorithmSpec,
    ComputeResources,
    ContainerOverride,
    ContainerSpec,
    ErrorHandlingBehaviour,
    RuntimeEnvironment,
    SpecOverride,
    WorkgroupRef,
    WorkgroupRefOverride,
)
from nexus.core.overrides import apply_overrides

TEMPLATE = AlgorithmSpec(
    container=ContainerSpec(
        image="algo", registry="registry.example", version_tag="1.0", service_account_name="sa"
    ),
    command="python algo.py",
    args=["--sas-uri=%s"],
    compute_resources=ComputeResources(cpu_limit="1", memory_limit="1Gi"),
    workgroup_ref=WorkgroupRef(name="wg", group="g", kind="k"),
    runtime_environment=RuntimeEnvironment(
        environment_variables=[{"name": "A", "value": "1"}],
        annotations={"x": "y"},
        deadline_seconds=60,
        maximum_retries=2,
    ),
    error_handling_behaviour=ErrorHandlingBehaviour(fatal_exit_codes=[42]),
)

decode_override = msgspec.json.Decoder(SpecOverride).decode


def test_no_override_returns_the_template():
    assert apply_overrides(TEMPLATE, None) is TEMPLATE
    assert apply_overrides(TEMPLATE, SpecOverride()) == TEMPLATE


def test_container_fields_override():
    merged = apply_overrides(
        TEMPLATE,
        SpecOverride(
            container=ContainerOverride(
                image="other", registry="r2", version_tag="2.0", service_account_name="evil"
            )
        ),
    )
    assert merged.container == ContainerSpec(
        image="other", registry="r2", version_tag="2.0", service_account_name="sa"
    )


def test_partial_container_override_keeps_the_rest():
    merged = apply_overrides(TEMPLATE, SpecOverride(container=ContainerOverride(version_tag="3")))
    assert merged.container.image == "algo"
    assert merged.container.registry == "registry.example"
    assert merged.container.version_tag == "3"


def test_empty_strings_do_not_blank_the_template():
    merged = apply_overrides(
        TEMPLATE, SpecOverride(container=ContainerOverride(image="", registry="", version_tag=""))
    )
    assert merged.container == TEMPLATE.container


def test_compute_resources_override():
    merged = apply_overrides(
        TEMPLATE, SpecOverride(compute_resources=ComputeResources(cpu_limit="4"))
    )
    assert merged.compute_resources.cpu_limit == "4"
    assert merged.compute_resources.memory_limit == "1Gi"


def test_limits_and_requests_maps_override():
    merged = apply_overrides(
        TEMPLATE,
        decode_override(
            b'{"computeResources": {"limits": {"cpu": "3", "memory": "3Gi"},'
            b' "requests": {"cpu": "1500m"}}}'
        ),
    )
    assert merged.compute_resources.limits == {"cpu": "3", "memory": "3Gi"}
    assert merged.compute_resources.requests == {"cpu": "1500m"}
    assert merged.compute_resources.cpu_limit == "1"


def test_workgroup_override():
    merged = apply_overrides(TEMPLATE, SpecOverride(workgroup_ref=WorkgroupRefOverride(name="wg2")))
    assert merged.workgroup_ref == WorkgroupRef(name="wg2", group="g", kind="k")


def test_deadline_and_retries_override():
    merged = apply_overrides(
        TEMPLATE,
        SpecOverride(runtime_environment=RuntimeEnvironment(deadline_seconds=5, maximum_retries=0)),
    )
    assert merged.runtime_environment.deadline_seconds == 5
    assert merged.runtime_environment.maximum_retries == 0
    assert merged.runtime_environment.annotations == {"x": "y"}
    assert merged.runtime_environment.environment_variables == [{"name": "A", "value": "1"}]


def test_other_runtime_fields_do_not_override():
    merged = apply_overrides(
        TEMPLATE,
        SpecOverride(
            runtime_environment=RuntimeEnvironment(
                environment_variables=[{"name": "B", "value": "2"}], annotations={"evil": "1"}
            )
        ),
    )
    assert merged.runtime_environment == TEMPLATE.runtime_environment


@pytest.mark.parametrize(
    "override",
    [
        SpecOverride(command="rm -rf /"),
        SpecOverride(args=["--other"]),
        SpecOverride(error_handling_behaviour=ErrorHandlingBehaviour(fatal_exit_codes=[1])),
    ],
)
def test_command_args_and_error_handling_are_not_overridable(override):
    assert apply_overrides(TEMPLATE, override) == TEMPLATE


def test_sections_the_template_lacks_are_created():
    bare = AlgorithmSpec(container=TEMPLATE.container, command="run")
    merged = apply_overrides(
        bare,
        SpecOverride(
            compute_resources=ComputeResources(cpu_limit="2"),
            workgroup_ref=WorkgroupRefOverride(name="wg"),
            runtime_environment=RuntimeEnvironment(deadline_seconds=9),
        ),
    )
    assert merged.compute_resources == ComputeResources(cpu_limit="2")
    assert merged.workgroup_ref.name == "wg"
    assert merged.runtime_environment == RuntimeEnvironment(deadline_seconds=9)


def test_the_template_is_not_mutated():
    before = msgspec.json.encode(TEMPLATE)
    apply_overrides(
        TEMPLATE,
        SpecOverride(
            container=ContainerOverride(image="x"),
            compute_resources=ComputeResources(cpu_limit="9"),
            runtime_environment=RuntimeEnvironment(deadline_seconds=1),
        ),
    )
    assert msgspec.json.encode(TEMPLATE) == before


def test_override_decodes_from_the_camel_case_wire_form():
    override = decode_override(
        b'{"container": {"versionTag": "7"}, "runtimeEnvironment": {"maximumRetries": 1},'
        b' "workgroupRef": {"name": "wg3"}, "computeResources": {"cpuLimit": "250m"}}'
    )
    merged = apply_overrides(TEMPLATE, override)
    assert merged.container.version_tag == "7"
    assert merged.runtime_environment.maximum_retries == 1
    assert merged.workgroup_ref.name == "wg3"
    assert merged.compute_resources.cpu_limit == "250m"
