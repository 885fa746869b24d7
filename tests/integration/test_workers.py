"""``nexus --role scheduler --workers 2``: two processes on one port, one identity each,
launching on the test API server (a scheduler's executor is Kubernetes) into a namespace
of their own; templates from the e2e files, the store one SQLite file.

The parent serves nothing: each worker is a ``--reuse-port`` child whose instance id is
``test-host-<k>``, and the kernel spreads new connections over them. A worker killed with
SIGKILL comes back under its own id; SIGTERM to the parent stops every worker, and a
parent killed with SIGKILL takes its workers with it (no orphan keeps the port).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_kubernetes import shard_kubeconfig

ALGORITHM = "noop"  # its Jobs never run: the test API server has no kubelet
API = "/algorithm/v1"
IDS = {"test-host-1", "test-host-2"}


def workers(parent: int) -> dict[str, int]:
    """The parent's live children, by the instance id in their environment."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return {}
    found = {}
    for pid in map(int, children):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        for entry in environ:
            if entry.startswith(b"NEXUS__INSTANCE_ID="):
                found[entry.split(b"=", 1)[1].decode()] = pid
    return found


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def scheduler(nexus_factory, kubeconfig: str, namespace: str, tmp_path: Path):
    shards = tmp_path / "shards"
    shards.mkdir()
    shard_kubeconfig(kubeconfig, shards / "local.kubeconfig", namespace)  # the e2e workgroup's
    env = {
        "NEXUS__EXECUTOR": "kubernetes",
        "NEXUS__KUBE_CONFIG_PATH": kubeconfig,
        "NEXUS__SHARD_KUBE_CONFIG_PATH": str(shards),
        "NEXUS__RUNTIME_NAMESPACE": namespace,
    }
    proc = nexus_factory(role="scheduler", env=env, args=("--workers", "2"))
    wait_for(lambda: set(workers(proc.process.pid)) == IDS, "two workers")
    return proc


def received_by(proc, runs: int) -> set[str]:
    """The hosts that received ``runs`` runs, each created on a new connection."""
    hosts = set()
    for _ in range(runs):
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            answer = http.post(f"{API}/run/{ALGORITHM}", json={"algorithmParameters": {}})
            assert answer.status_code == 202, answer.text
            run_id = answer.json()["requestId"]
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            meta = http.get(f"{API}/metadata/{ALGORITHM}/requests/{run_id}")
            assert meta.status_code == 200, meta.text
            hosts.add(meta.json()["received_by_host"])
    return hosts


def test_two_workers_share_the_port_each_under_its_own_id(scheduler) -> None:
    # 40 connections from 40 source ports: both workers take some (the kernel hashes them).
    assert received_by(scheduler, 40) == IDS


def test_a_killed_worker_comes_back_under_its_id(scheduler) -> None:
    parent = scheduler.process.pid
    killed = workers(parent)["test-host-1"]
    os.kill(killed, signal.SIGKILL)
    restarted = wait_for(
        lambda: (pid := workers(parent).get("test-host-1")) and pid != killed and pid,
        "worker 1 restarted",
    )
    assert workers(parent)["test-host-2"] != restarted
    wait_for(lambda: received_by(scheduler, 40) == IDS, "both workers serving again")


def test_sigterm_stops_every_worker(scheduler) -> None:
    pids = list(workers(scheduler.process.pid).values())
    scheduler.process.terminate()
    assert scheduler.process.wait(60) == 0
    assert not [pid for pid in pids if alive(pid)]


def test_a_parent_killed_takes_its_workers_with_it(scheduler) -> None:
    pids = list(workers(scheduler.process.pid).values())
    scheduler.kill()
    wait_for(lambda: not [pid for pid in pids if alive(pid)], "workers gone", timeout=60)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{scheduler.url}/health/live", timeout=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "all", "--workers", "2"), "--role all runs as one process"),
        (("--role", "supervisor", "--workers", "3"), "only scheduler and receiver"),
        (("--role", "scheduler", "--workers", "0"), "must be at least 1"),
        (("--role", "scheduler", "--workers", "2", "--reuse-port"), "use --reuse-port already"),
        (("ls", "--workers", "2"), "unrecognized arguments"),
    ],
)
def test_bad_worker_counts_and_roles_are_refused(args: tuple[str, ...], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nexus.cli", *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
