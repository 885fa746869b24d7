"""A run's tenant: its template's name, or the tenant label of its template or workgroup."""

from __future__ import annotations

import msgspec

from nexus.core.models import AlgorithmSpec, LifecycleStage, Run, Template, Workgroup, WorkgroupSpec
from nexus.core.tenancy import TENANT_LABEL, Tenancy, tenant_of

SPEC = msgspec.convert(
    {
        "container": {"image": "i", "registry": "r", "versionTag": "1"},
        "command": "c",
        "workgroupRef": {"name": "wg"},
    },
    AlgorithmSpec,
)


def template(labels: dict[str, str] | None = None) -> Template:
    return Template("algo", SPEC, labels or {})


def workgroup(labels: dict[str, str] | None = None) -> Workgroup:
    return Workgroup("wg", WorkgroupSpec(cluster="local"), labels or {})


def test_the_tenant_is_the_template_name_by_default():
    assert tenant_of(template(), workgroup()) == "algo"
    assert tenant_of(template(), None) == "algo"
    assert tenant_of(template({"other": "x"}), workgroup({"other": "y"})) == "algo"


def test_a_workgroup_label_names_the_tenant_of_its_templates():
    assert tenant_of(template(), workgroup({TENANT_LABEL: "team-a"})) == "team-a"


def test_the_template_label_wins_over_the_workgroup_label():
    labelled = template({TENANT_LABEL: "team-t"})
    assert tenant_of(labelled, workgroup({TENANT_LABEL: "team-w"})) == "team-t"


class Templates:
    def __init__(self, found: Template | None, group: Workgroup | None) -> None:
        self.found, self.group = found, group

    async def template(self, name: str) -> Template | None:
        return self.found

    async def workgroup(self, name: str) -> Workgroup | None:
        return self.group if name == "wg" else None


async def test_a_stored_run_gets_the_tenant_its_accept_gave_it():
    run = Run(
        algorithm="algo", id="r1", lifecycle_stage=LifecycleStage.NEW, applied_configuration=SPEC
    )
    labelled = workgroup({TENANT_LABEL: "team-a"})
    assert await Tenancy(Templates(template(), labelled)).of_run(run) == "team-a"
    assert await Tenancy(Templates(None, labelled)).of_run(run) == "algo"  # template gone


def test_a_caller_given_is_the_tenant_over_every_label():
    labelled = template({TENANT_LABEL: "team-t"})
    assert tenant_of(labelled, workgroup({TENANT_LABEL: "team-w"}), "alice") == "alice"
    assert tenant_of(labelled, None, None) == "team-t"  # no caller: as before
    assert tenant_of(labelled, None, "") == "team-t"


async def test_a_stored_run_keeps_its_creator_as_tenant_when_served_by_caller():
    run = Run(
        algorithm="algo",
        id="r1",
        lifecycle_stage=LifecycleStage.NEW,
        applied_configuration=SPEC,
        created_by="alice",
    )
    labelled = Templates(template(), workgroup({TENANT_LABEL: "team-a"}))
    assert await Tenancy(labelled, by_caller=True).of_run(run) == "alice"
    assert await Tenancy(labelled).of_run(run) == "team-a"  # tenant-by: template
    anonymous = msgspec.structs.replace(run, created_by="")  # mode none, or an older row
    assert await Tenancy(labelled, by_caller=True).of_run(anonymous) == "team-a"
