"""Supervisors and shards on testenv's two real control planes: shard "near" is the first
cluster (kube, where templates live), shard "far" the second (kube2).

A scheduler launches runs of both shards at a crawl and is killed (SIGKILL) with runs of
each shard still queued. Then supervisors take over: either one per shard, each knowing
only its own cluster (the Go topology: ``supervisor.shards`` names it, and its shard
folder holds only its kubeconfig), or one for all shards. Every accepted run must reach
its terminal stage through the supervisor of its own shard; a supervisor that judged
another shard's runs would mark them lost (their Jobs are not in its snapshot) or fail
to launch them (it has no client for that shard).

Needs NEXUS_TEST_KUBECONFIG and NEXUS_TEST_KUBECONFIG_2
(``eval "$(scripts/testenv env kube kube2)"``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from control_plane import Kube, wait_for
from test_kubernetes import finished, kube_env, submit, template, workgroup

from nexus.core.supervision import FATAL_CAUSE

pytestmark = pytest.mark.kube

SHARDS = ("near", "far")
RUNS_PER_SHARD = 6
LEASE = {"NEXUS__SUPERVISOR__LEASE_TTL": "2s", "NEXUS__SUPERVISOR__HEARTBEAT_INTERVAL": "500ms"}


def shard_folder(tmp_path: Path, name: str, kubeconfigs: dict[str, str]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for shard, kubeconfig in kubeconfigs.items():
        shutil.copyfile(kubeconfig, folder / f"{shard}.kubeconfig")
    return folder


def launched(clusters: dict[str, Kube], namespace: str) -> dict[str, set[str]]:
    return {
        shard: {job["metadata"]["name"] for job in kube.jobs(namespace)}
        for shard, kube in clusters.items()
    }


def finished_by(log_path: Path, algorithm: str) -> set[str]:
    """The runs of ``algorithm`` whose stage this supervisor changed (its log lines)."""
    runs = set()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue
        prefix = f"run {algorithm}/"
        if message.startswith(prefix) and " -> " in message:
            runs.add(message[len(prefix) :].split(" ", 1)[0])
    return runs


@pytest.mark.parametrize("topology", ["one per shard", "one for all shards"])
def test_supervisors_finish_a_killed_schedulers_runs_each_on_its_own_shard(
    topology,
    kube,
    kube2,
    kubeconfig,
    kubeconfig_2,
    namespace,
    namespace_2,
    tmp_path,
    nexus_factory,
):
    clusters = {"near": kube, "far": kube2}
    kubeconfigs = {"near": kubeconfig, "far": kubeconfig_2}
    for shard in SHARDS:
        workgroup(kube, namespace, f"wg-{shard}", shard)
        # Runs a while, then exits with a fatal code: only a supervisor that sees the Job
        # ends the run (FAILED, FATAL_CAUSE), and nothing needs the dead scheduler.
        template(
            kube,
            namespace,
            f"on-{shard}",
            {"nexus.test/exit-code": "42", "nexus.test/run-duration": "3s"},
            workgroup_name=f"wg-{shard}",
            fatal=[42],
        )
    data_dir = tmp_path / "data"  # one SQLite store for every process
    every_shard = shard_folder(tmp_path, "all-shards", kubeconfigs)
    scheduler = nexus_factory(
        role="scheduler",
        data_dir=data_dir,
        env=kube_env(
            kubeconfig,
            namespace,
            every_shard,
            NEXUS__INSTANCE_ID="scheduler-1",
            NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND="0.5",
            NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST="1",
            **LEASE,
        ),
    )
    with httpx.Client(base_url=scheduler.url, timeout=60) as http:
        runs = {
            shard: {submit(http, f"on-{shard}", {"i": i}) for i in range(RUNS_PER_SHARD)}
            for shard in SHARDS
        }
    # Killed once each shard has a Job: both then have runs RUNNING and runs still queued.
    wait_for(lambda: all(launched(clusters, namespace).values()), 60, "a Job on each cluster")
    scheduler.kill()
    before = launched(clusters, namespace)
    for shard in SHARDS:
        assert before[shard] <= runs[shard], (shard, before)
        assert len(before[shard]) < RUNS_PER_SHARD, "the queue drained before the kill"

    # Reads runs back over the run API; it has no runs of its own to recover.
    reader = nexus_factory(
        role="scheduler",
        data_dir=data_dir,
        env=kube_env(kubeconfig, namespace, every_shard, NEXUS__INSTANCE_ID="reader", **LEASE),
    )
    if topology == "one per shard":
        supervisors = {
            shard: nexus_factory(
                role="supervisor",
                data_dir=data_dir,
                env=kube_env(
                    kubeconfig,
                    namespace,
                    shard_folder(tmp_path, f"only-{shard}", {shard: kubeconfigs[shard]}),
                    NEXUS__INSTANCE_ID=f"supervisor-{shard}",
                    NEXUS__SUPERVISOR__SHARDS=shard,
                    **LEASE,
                ),
            )
            for shard in SHARDS
        }
    else:
        everything = nexus_factory(
            role="supervisor",
            data_dir=data_dir,
            env=kube_env(
                kubeconfig, namespace, every_shard, NEXUS__INSTANCE_ID="supervisor", **LEASE
            ),
        )
        supervisors = dict.fromkeys(SHARDS, everything)

    with httpx.Client(base_url=reader.url, timeout=60) as http:
        for shard in SHARDS:
            for run_id in runs[shard]:
                done = finished(http, f"on-{shard}", run_id, timeout=180)
                # Not LOST_CAUSE (judged by a supervisor that cannot see its Job), not
                # SCHEDULING_FAILED (launched by one that has no client for its shard).
                assert (done["status"], done["runErrorMessage"]) == ("FAILED", FATAL_CAUSE), (
                    shard,
                    done,
                    [proc.log() for proc in {*supervisors.values(), reader}],
                )
    for shard in SHARDS:
        own = supervisors[shard]
        assert finished_by(own.log_path, f"on-{shard}") == runs[shard]
        for other in SHARDS:
            if supervisors[other] is not own:
                assert finished_by(supervisors[other].log_path, f"on-{shard}") == set()


def test_an_unknown_shard_stops_the_supervisor_naming_the_setting(
    kubeconfig, namespace, tmp_path, nexus_factory
):
    """A supervisor told to supervise a shard it has no kubeconfig for would leave that
    shard's runs to no one: it refuses to start, and says which key and which names."""
    only_near = shard_folder(tmp_path, "only-near", {"near": kubeconfig})
    for names, named in (("far", "'far'"), ("near,Far\x1b[31m", "'Far\\x1b[31m'")):
        with pytest.raises(RuntimeError) as caught:
            nexus_factory(
                role="supervisor",
                env=kube_env(kubeconfig, namespace, only_near, NEXUS__SUPERVISOR__SHARDS=names),
            )
        text = str(caught.value)
        assert "exited with 2" in text, text
        assert "supervisor.shards" in text and named in text and "known: near" in text, text
    assert not (tmp_path / "data" / "nexus.db").exists()  # refused before opening the store
