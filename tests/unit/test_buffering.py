"""The BUFFERED step's renderer: what it reads from the run's record and what late."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from nexus.core.buffering import TOKEN_GRACE, JobRenderer, RenderConfig
from nexus.core.models import (
    AlgorithmSpec,
    ContainerSpec,
    ParentRef,
    Run,
    RuntimeEnvironment,
    Workgroup,
    WorkgroupRef,
    WorkgroupSpec,
)
from nexus.core.models import (
    LifecycleStage as S,
)
from nexus.core.signing import RUN_TOKEN_ENV, RunTokens
from nexus.errors import Forbidden, LaunchError, Unauthenticated

TOKENS = RunTokens(b"unit-test-receiver-token-secret")

SPEC = AlgorithmSpec(
    container=ContainerSpec(image="algo", registry="reg.local", version_tag="7"),
    command="python main.py",
    args=["--sas-uri=%s", "--request-id=%s"],
    workgroup_ref=WorkgroupRef(name="wg"),
)


class Templates:
    def __init__(self) -> None:
        self.workgroups = {
            "wg": Workgroup(
                "wg",
                WorkgroupSpec(
                    cluster="shard-a", tolerations=[{"key": "gpu", "operator": "Exists"}]
                ),
            )
        }

    async def workgroup(self, name: str) -> Workgroup | None:
        return self.workgroups.get(name)


class Buffer:
    def __init__(self) -> None:
        self.signed: list[tuple[str, str, float]] = []

    def result_urls(self, algorithm: str, run_id: str, valid_for: float) -> tuple[str, str]:
        self.signed.append((algorithm, run_id, valid_for))
        return f"https://up/{run_id}", f"https://down/{run_id}"


class Store:
    def __init__(self, *runs: Run) -> None:
        self.runs = {(run.algorithm, run.id): run for run in runs}

    async def get(self, algorithm: str, run_id: str) -> Run | None:
        return self.runs.get((algorithm, run_id))


def run(run_id: str = "r1", **fields) -> Run:
    values = dict(
        algorithm="algo",
        id=run_id,
        lifecycle_stage=S.NEW,
        cluster="shard-a",
        payload_uri=f"https://payload/{run_id}",
        applied_configuration=SPEC,
        payload_valid_for="2h",
        received_at=datetime.now(UTC),
    )
    values.update(fields)
    return Run(**values)


def renderer(
    store: Store, templates: Templates | None = None, buffer: Buffer | None = None
) -> JobRenderer:
    return JobRenderer(
        store,
        buffer or Buffer(),
        templates or Templates(),
        RenderConfig(
            namespace="runs",
            nexus_version="1.2.3",
            receiver_url="http://receiver",
            job_ttl=300,
            payload_valid_for=86400.0,
            tokens=TOKENS,
            token_lifetime=3600.0,
        ),
    )


async def test_renders_the_job_from_the_record():
    buffer = Buffer()
    entry = await renderer(Store(), buffer=buffer).render(run())
    assert (entry.algorithm, entry.id, entry.cluster) == ("algo", "r1", "shard-a")
    job = entry.template
    assert job["metadata"]["name"] == "r1" and job["metadata"]["namespace"] == "runs"
    pod = job["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    container = pod["containers"][0]
    assert container["args"] == ["--sas-uri=https://payload/r1", "--request-id=r1"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NEXUS__RESULT_UPLOAD_URL"] == "https://up/r1"
    assert env["NEXUS__CLIENT__RECEIVER"] == "http://receiver"
    assert buffer.signed == [("algo", "r1", 7200.0)]  # the run's own payloadValidFor


def _token(job: dict) -> str:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(item["value"] for item in env if item["name"] == RUN_TOKEN_ENV)


async def test_the_job_carries_its_runs_token_expiring_with_the_deadline():
    with_deadline = msgspec.structs.replace(
        SPEC, runtime_environment=RuntimeEnvironment(deadline_seconds=60)
    )
    rendered = await renderer(Store()).render(run(applied_configuration=with_deadline))
    token = _token(rendered.template)
    TOKENS.verify(token, "algo", "r1")
    with pytest.raises(Forbidden):
        TOKENS.verify(token, "algo", "r2")  # bound to the run
    expiry = int(token.split(".")[1])
    TOKENS.verify(token, "algo", "r1", now=expiry - 1)
    with pytest.raises(Unauthenticated, match="expired"):
        TOKENS.verify(token, "algo", "r1", now=expiry + 1)
    lasts = expiry - datetime.now(UTC).timestamp()
    assert 60 + TOKEN_GRACE - 30 < lasts <= 60 + TOKEN_GRACE  # the deadline plus the grace


async def test_a_run_without_a_deadline_gets_a_token_of_the_configured_lifetime():
    token = _token((await renderer(Store()).render(run())).template)
    lasts = int(token.split(".")[1]) - datetime.now(UTC).timestamp()
    assert 3600 - 30 < lasts <= 3600


async def test_a_deleted_workgroup_cannot_be_rendered():
    templates = Templates()
    templates.workgroups.clear()
    with pytest.raises(LaunchError, match="workgroup 'wg' no longer exists") as caught:
        await renderer(Store(), templates).render(run())
    assert not caught.value.retryable


RUNNING = {"lifecycle_stage": S.RUNNING}


@pytest.mark.parametrize(
    ("parent_fields", "owner_uid"),
    [
        ({**RUNNING, "job_uid": "uid-parent"}, "uid-parent"),
        ({**RUNNING, "job_uid": "uid-parent", "cluster": "shard-b"}, None),  # not across clusters
        ({"lifecycle_stage": S.COMPLETED, "job_uid": "uid-parent"}, None),  # its Job expires
        ({"lifecycle_stage": S.COMPLETED, "job_uid": "dry-run"}, None),
        ({"lifecycle_stage": S.BUFFERED, "job_uid": ""}, None),  # parent not launched yet
    ],
)
async def test_the_parent_owns_the_child_job_only_when_it_has_one_here(parent_fields, owner_uid):
    parent = run("parent", **parent_fields)
    child = run("child", parent=ParentRef(request_id="parent", algorithm_name="algo"))
    job = (await renderer(Store(parent)).render(child)).template
    owners = job["metadata"].get("ownerReferences")
    assert (owners[0]["uid"] if owners else None) == owner_uid
