"""``nexus --role controller`` on two real control planes: testenv's "kube" is the
controller cluster and shard "near", "kube2" is shard "far". Each test has a fresh
namespace (same name) in both clusters and starts the controller as a subprocess.

"near" is the controller cluster itself, so there the sources are their own copies
(the controller must leave them be); "far" is where objects are really copied.

Needs NEXUS_TEST_KUBECONFIG and NEXUS_TEST_KUBECONFIG_2
(``eval "$(scripts/testenv env kube kube2)"``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from conftest import NexusProcess
from contract.servers import run_testenv
from control_plane import GROUP, Kube, install_crds, require_kubeconfig, wait_for
from test_kubernetes import V1, finished, kube_env, shard_kubeconfig, workgroup

pytestmark = pytest.mark.kube

ALIAS = "test-controller"
APP_LABEL = f"{GROUP}/controller-app"
OWNER_LABEL = f"{GROUP}/configuration-owner"
SYNC_WAIT = 60.0  # generous: CI runs this on a busy machine
TEMPLATE_ALGO = ("NexusAlgorithmTemplate", "algo")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def kubeconfig() -> str:
    return require_kubeconfig()


@pytest.fixture(scope="module")
def kubeconfig_2() -> str:
    return require_kubeconfig("NEXUS_TEST_KUBECONFIG_2")


@pytest.fixture(scope="module")
def kube(kubeconfig: str) -> Iterator[Kube]:
    client = Kube(kubeconfig)
    install_crds(client)
    yield client
    client.close()


@pytest.fixture(scope="module")
def kube2(kubeconfig_2: str) -> Iterator[Kube]:
    client = Kube(kubeconfig_2)
    install_crds(client)
    yield client
    client.close()


@pytest.fixture
def namespace(kube: Kube, kube2: Kube) -> Iterator[str]:
    name = f"nexus-ctl-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(name)
    kube2.create_namespace(name)
    yield name
    kube.delete_namespace(name)
    kube2.delete_namespace(name)


def controller_env(kubeconfig: str, shards: Path, namespace: str, **extra: str) -> dict:
    """The environment of a controller test: quick resyncs and retries."""
    return {
        "NEXUS__KUBE_CONFIG_PATH": kubeconfig,
        "NEXUS__SHARD_KUBE_CONFIG_PATH": str(shards),
        "NEXUS__CONTROLLER__NAMESPACE": namespace,
        "NEXUS__CONTROLLER__ALIAS": ALIAS,
        "NEXUS__CONTROLLER__RESYNC_INTERVAL": "2s",
        "NEXUS__CONTROLLER__FAILURE_RATE_BASE_DELAY": "200ms",
        "NEXUS__CONTROLLER__FAILURE_RATE_MAX_DELAY": "2s",
        "NEXUS__CONTROLLER__REQUEST_TIMEOUT": "5s",
        **extra,
    }


@pytest.fixture
def controller(nexus_factory, kubeconfig, kubeconfig_2, namespace, tmp_path):
    """Start ``nexus --role controller`` (stopped by the factory at the test's end)."""

    def start(instance: str = "ctl-a", **extra: str):
        shards = tmp_path / f"shards-{uuid.uuid4().hex[:6]}"
        shards.mkdir()
        shutil.copyfile(kubeconfig, shards / "near.kubeconfig")
        shutil.copyfile(kubeconfig_2, shards / "far.kubeconfig")
        return nexus_factory(
            role="controller",
            env=controller_env(kubeconfig, shards, namespace, NEXUS__INSTANCE_ID=instance, **extra),
        )

    return start


# --- objects -----------------------------------------------------------------------------


def _base(namespace: str, kind: str) -> str:
    plural = {"Secret": "secrets", "ConfigMap": "configmaps"}.get(kind)
    if plural:
        return f"/api/v1/namespaces/{namespace}/{plural}"
    return f"/apis/{GROUP}/v1/namespaces/{namespace}/{kind.lower()}s"


def get(kube: Kube, namespace: str, kind: str, name: str) -> dict | None:
    return kube.call("GET", f"{_base(namespace, kind)}/{name}")


def secret(kube: Kube, namespace: str, name: str, **data: str) -> dict:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"team": "science"}},
        "type": "Opaque",
        "data": {k: b64(v) for k, v in data.items()},
    }
    return kube.apply(_base(namespace, "Secret"), body)


def config_map(kube: Kube, namespace: str, name: str, **data: str) -> dict:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    return kube.apply(_base(namespace, "ConfigMap"), body)


def algorithm(kube: Kube, namespace: str, name: str, secrets: list[str], maps: list[str]) -> dict:
    """A template reading each Secret through an env value and each ConfigMap by envFrom."""
    spec: dict[str, Any] = {
        "container": {"registry": "test.local", "image": "behave", "versionTag": "1"},
        "command": "python main.py",
        "workgroupRef": {"name": "wg-far"},
        "runtimeEnvironment": {
            "environmentVariables": [
                {"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": s, "key": "password"}}}
                for i, s in enumerate(secrets)
            ],
            "mappedEnvironmentVariables": [{"configMapRef": {"name": m}} for m in maps],
        },
    }
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name},
        "spec": spec,
    }
    return kube.apply(_base(namespace, "NexusAlgorithmTemplate"), body)


def ready(obj: dict | None) -> dict:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return {}


def events(kube: Kube, namespace: str, name: str) -> list[dict]:
    return kube.call(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={name}",
    )["items"]


def ours(obj: dict | None, owner: str) -> bool:
    labels = (obj or {}).get("metadata", {}).get("labels") or {}
    return labels.get(APP_LABEL) == ALIAS and labels.get(OWNER_LABEL) == owner


# --- tests ---------------------------------------------------------------------------------


def test_templates_workgroups_and_sources_reach_every_shard_and_stay_there(
    kube, kube2, namespace, controller
):
    workgroup(kube, namespace, "wg-far", "far")
    secret(kube, namespace, "db", password="s3cret")
    config_map(kube, namespace, "settings", LEVEL="debug")
    source = algorithm(kube, namespace, "algo", ["db"], ["settings"])
    ctl = controller()

    # Copied to "far" with our labels; the Secret and ConfigMap owned by far's template.
    copy = wait_for(
        lambda: get(kube2, namespace, "NexusAlgorithmTemplate", "algo"), SYNC_WAIT, "the copy"
    )
    assert copy["spec"] == source["spec"] and ours(copy, "algo")
    wg = wait_for(lambda: get(kube2, namespace, "NexusAlgorithmWorkgroup", "wg-far"), 30, "wg")
    assert wg["spec"]["cluster"] == "far" and ours(wg, "wg-far")
    far_secret = wait_for(lambda: get(kube2, namespace, "Secret", "db"), 30, "the Secret")
    assert far_secret["data"] == {"password": b64("s3cret")}
    assert far_secret["metadata"]["labels"]["team"] == "science" and ours(far_secret, "algo")
    owner = {"kind": "NexusAlgorithmTemplate", "name": "algo", "uid": copy["metadata"]["uid"]}
    assert any(owner.items() <= ref.items() for ref in far_secret["metadata"]["ownerReferences"])
    far_map = wait_for(lambda: get(kube2, namespace, "ConfigMap", "settings"), 30, "the map")
    assert far_map["data"] == {"LEVEL": "debug"} and ours(far_map, "algo")

    # The sources are adopted by the template in the controller cluster, and left as
    # they are otherwise ("near" is this very cluster: no copy, no labels of ours).
    uid = source["metadata"]["uid"]
    for kind, name in (("Secret", "db"), ("ConfigMap", "settings")):
        adopted = wait_for(
            lambda kind=kind, name=name: (
                uid
                in [
                    r["uid"]
                    for r in get(kube, namespace, kind, name)["metadata"].get("ownerReferences", [])
                ]
            ),
            30,
            f"{kind} {name} adopted",
        )
        assert adopted
        assert APP_LABEL not in (get(kube, namespace, kind, name)["metadata"].get("labels") or {})

    # Status and an Event on the template; the workgroup is Ready too.
    status = wait_for(
        lambda: (
            (get(kube, namespace, "NexusAlgorithmTemplate", "algo") or {}).get("status")
            if ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")).get("status") == "True"
            else None
        ),
        SYNC_WAIT,
        "the template Ready",
    )
    assert status["syncedSecrets"] == ["db"]
    assert status["syncedConfigurations"] == ["settings"]
    assert status["syncedToClusters"] == ["far", "near"]
    assert ready({"status": status})["reason"] == "Synced"
    assert wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmWorkgroup", "wg-far")).get("status") == "True"
        ),
        SYNC_WAIT,
        "the workgroup Ready",
    )
    assert any(
        e["reason"] == "Synced" and e["type"] == "Normal" for e in events(kube, namespace, "algo")
    )

    # Drift in the shard is undone: an edited Secret, a deleted ConfigMap, an edited spec.
    far_secret, copy = get(kube2, namespace, "Secret", "db"), get(kube2, namespace, *TEMPLATE_ALGO)
    edited = {**far_secret, "data": {"password": b64("tampered")}}
    kube2.call("PUT", f"{_base(namespace, 'Secret')}/db", edited)
    kube2.call("DELETE", f"{_base(namespace, 'ConfigMap')}/settings")
    changed = {**copy, "spec": {**copy["spec"], "command": "rm -rf /"}}
    kube2.call("PUT", f"{_base(namespace, 'NexusAlgorithmTemplate')}/algo", changed)
    wait_for(
        lambda: (
            (get(kube2, namespace, "Secret", "db") or {}).get("data") == {"password": b64("s3cret")}
        ),
        SYNC_WAIT,
        "the edited Secret restored",
    )
    wait_for(lambda: get(kube2, namespace, "ConfigMap", "settings"), SYNC_WAIT, "map restored")
    wait_for(
        lambda: (
            (get(kube2, namespace, "NexusAlgorithmTemplate", "algo") or {})
            .get("spec", {})
            .get("command")
            == "python main.py"
        ),
        SYNC_WAIT,
        "the template restored",
    )

    # A change at the source reaches the shard.
    secret(kube, namespace, "db", password="rotated")
    config_map(kube, namespace, "settings", LEVEL="info")
    wait_for(
        lambda: (
            (get(kube2, namespace, "Secret", "db") or {}).get("data")
            == {"password": b64("rotated")}
        ),
        SYNC_WAIT,
        "the rotated Secret in far",
    )
    wait_for(
        lambda: (
            (get(kube2, namespace, "ConfigMap", "settings") or {}).get("data") == {"LEVEL": "info"}
        ),
        SYNC_WAIT,
        "the changed ConfigMap in far",
    )

    # Deleting the template deletes its copy, and the shard's garbage collector the
    # Secret and ConfigMap it owned; the workgroup's deletion follows too.
    kube.call("DELETE", f"{_base(namespace, 'NexusAlgorithmTemplate')}/algo")
    kube.call("DELETE", f"{_base(namespace, 'NexusAlgorithmWorkgroup')}/wg-far")
    for kind, name in (
        ("NexusAlgorithmTemplate", "algo"),
        ("Secret", "db"),
        ("ConfigMap", "settings"),
        ("NexusAlgorithmWorkgroup", "wg-far"),
    ):
        wait_for(
            lambda kind=kind, name=name: get(kube2, namespace, kind, name) is None,
            SYNC_WAIT,
            f"{kind} {name} deleted in far",
        )
    assert ctl.process.poll() is None, ctl.log()


def test_an_object_in_a_shard_that_is_not_ours_is_never_overwritten(
    kube, kube2, namespace, controller
):
    workgroup(kube, namespace, "wg-far", "far")
    secret(kube, namespace, "db", password="ours")
    foreign = secret(kube2, namespace, "db", password="someone else's")
    algorithm(kube, namespace, "algo", ["db"], [])
    controller()

    condition = wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo"))
            if ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")).get("reason")
            == "ResourceExists"
            else None
        ),
        SYNC_WAIT,
        "the template's refusal condition",
    )
    assert condition["status"] == "False"
    assert "Secret 'db' in shard 'far'" in condition["message"], condition
    status = get(kube, namespace, "NexusAlgorithmTemplate", "algo")["status"]
    assert status["syncedToClusters"] == ["near"]  # far is not in step
    warning = wait_for(
        lambda: [
            e
            for e in events(kube, namespace, "algo")
            if e["type"] == "Warning" and e["reason"] == "ResourceExists"
        ],
        SYNC_WAIT,
        "a Warning Event",
    )
    assert "Secret 'db'" in warning[0]["message"]
    # The foreign Secret is as it was, retried syncs notwithstanding.
    current = get(kube2, namespace, "Secret", "db")
    assert current["data"] == foreign["data"]
    assert current["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]

    # Once its owner removes it, the controller's copy takes its place.
    kube2.call("DELETE", f"{_base(namespace, 'Secret')}/db")
    wait_for(lambda: ours(get(kube2, namespace, "Secret", "db"), "algo"), SYNC_WAIT, "our copy")
    wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")).get("status") == "True"
        ),
        SYNC_WAIT,
        "the template Ready",
    )


def test_a_missing_source_says_so_and_syncs_once_it_exists(kube, kube2, namespace, controller):
    workgroup(kube, namespace, "wg-far", "far")
    algorithm(kube, namespace, "algo", ["not-yet"], [])
    controller()
    condition = wait_for(
        lambda: ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")) or None,
        SYNC_WAIT,
        "a Ready condition",
    )
    assert (condition["status"], condition["reason"]) == ("False", "ResourceMissing")
    assert "Secret 'not-yet'" in condition["message"]
    assert get(kube2, namespace, "NexusAlgorithmTemplate", "algo") is None
    secret(kube, namespace, "not-yet", password="here")
    wait_for(lambda: get(kube2, namespace, "Secret", "not-yet"), SYNC_WAIT, "the Secret in far")
    wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")).get("status") == "True"
        ),
        SYNC_WAIT,
        "the template Ready",
    )


def test_a_controller_cluster_that_does_not_answer_keeps_it_unready(kubeconfig, tmp_path):
    """A controller that cannot list its cluster syncs nothing: /health/ready says so
    and why, rather than looking healthy."""
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(yaml.safe_dump(doc))
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copyfile(broken, shards / "gone.kubeconfig")
    env = {
        "NEXUS__KUBE_CONFIG_PATH": str(broken),
        "NEXUS__SHARD_KUBE_CONFIG_PATH": str(shards),
        "NEXUS__CONTROLLER__NAMESPACE": "anything",
    }
    proc = NexusProcess(tmp_path / "data", "controller", env)
    try:
        with pytest.raises(RuntimeError, match="did not become ready"):
            proc.start(timeout=20)
        answer = httpx.get(f"{proc.url}/health/ready", timeout=10)
        assert answer.status_code == 503, answer.text
        assert "controller cluster" in answer.text, answer.text
    finally:
        proc.stop()


def leader_gauge(proc) -> float | None:
    try:
        text = httpx.get(f"{proc.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("nexus_controller_leader "):
            return float(line.split()[1])
    return None


def test_two_replicas_one_leader_and_the_standby_takes_over(kube, kube2, namespace, controller):
    workgroup(kube, namespace, "wg-far", "far")
    algorithm(kube, namespace, "first", [], [])
    lease = {"NEXUS__CONTROLLER__LEASE_DURATION": "3s"}
    replicas = {"ctl-a": controller("ctl-a", **lease), "ctl-b": controller("ctl-b", **lease)}
    wait_for(lambda: get(kube2, namespace, "NexusAlgorithmTemplate", "first"), SYNC_WAIT, "sync")

    def holder() -> str:
        record = kube.call(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/"
            f"{ALIAS}-configuration-controller",
        )
        return ((record or {}).get("spec") or {}).get("holderIdentity") or ""

    leader = wait_for(holder, SYNC_WAIT, "a Lease holder")
    standby = next(name for name in replicas if name != leader)

    def one_leading() -> bool:
        gauges = {name: leader_gauge(proc) for name, proc in replicas.items()}
        return gauges == {leader: 1.0, standby: 0.0}

    wait_for(one_leading, SYNC_WAIT, "exactly one replica leading")

    replicas[leader].kill()  # SIGKILL: the Lease is left to expire
    algorithm(kube, namespace, "second", [], [])
    wait_for(lambda: holder() == standby, SYNC_WAIT, f"{standby} to take the Lease")
    wait_for(
        lambda: get(kube2, namespace, "NexusAlgorithmTemplate", "second"),
        SYNC_WAIT,
        "the standby syncing",
    )
    assert leader_gauge(replicas[standby]) == 1.0


class BlackHole:
    """A TCP relay in front of an API server, which can stop answering: in ``hold``
    mode it forwards nothing, keeping every connection open and silent (a shard whose
    API server hangs, the case that catches a client without request timeouts); on
    ``release`` the held connections are closed and new ones forwarded again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._keep(client)
            if self.holding.is_set():
                continue  # accepted, never answered
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._keep(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.holding.is_set():
                    return  # swallow: the peer waits for an answer that never comes
                target.sendall(data)
        except OSError:
            pass
        finally:
            if not self.holding.is_set():
                for sock in (source, target):
                    sock.close()

    def hold(self) -> None:
        self.holding.set()

    def release(self) -> None:
        self.holding.clear()
        with self.lock:
            held, self.sockets = self.sockets, []
        for sock in held:
            sock.close()

    def close(self) -> None:
        self.release()
        self.listener.close()


def test_a_shard_that_stops_answering_is_retried_and_converges_when_back(
    kube, kube2, kubeconfig, kubeconfig_2, namespace, nexus_factory, tmp_path
):
    """Shard "far" is reached through a relay that can go silent. While it is, syncs
    still finish (timeouts), the other shard is reported in step, and the status names
    the silent shard; once it answers again the controller converges without a restart."""
    doc = yaml.safe_load(Path(kubeconfig_2).read_text())
    (cluster,) = doc["clusters"]
    address = urlsplit(cluster["cluster"]["server"])
    relay = BlackHole((address.hostname or "127.0.0.1", address.port or 443))
    cluster["cluster"]["server"] = f"https://{address.hostname}:{relay.port}"
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copyfile(kubeconfig, shards / "near.kubeconfig")
    (shards / "far.kubeconfig").write_text(yaml.safe_dump(doc))
    try:
        workgroup(kube, namespace, "wg-far", "far")
        secret(kube, namespace, "db", password="v1")
        algorithm(kube, namespace, "before", ["db"], [])
        nexus_factory(
            role="controller",
            env=controller_env(
                kubeconfig, shards, namespace, NEXUS__CONTROLLER__REQUEST_TIMEOUT="2s"
            ),
        )
        wait_for(lambda: get(kube2, namespace, "Secret", "db"), SYNC_WAIT, "the first sync")

        relay.hold()
        algorithm(kube, namespace, "during", ["db"], [])
        condition = wait_for(
            lambda: (
                ready(get(kube, namespace, "NexusAlgorithmTemplate", "during"))
                if ready(get(kube, namespace, "NexusAlgorithmTemplate", "during")).get("reason")
                == "SyncError"
                else None
            ),
            SYNC_WAIT,
            "the silent shard reported",
        )
        assert "shard 'far'" in condition["message"], condition
        status = get(kube, namespace, "NexusAlgorithmTemplate", "during")["status"]
        assert status["syncedToClusters"] == ["near"]
        assert get(kube2, namespace, "NexusAlgorithmTemplate", "during") is None

        relay.release()
        secret(kube, namespace, "db", password="v2")  # changed while far was away
        wait_for(
            lambda: get(kube2, namespace, "NexusAlgorithmTemplate", "during"),
            SYNC_WAIT,
            "the template in far once it answers",
        )
        wait_for(
            lambda: (
                (get(kube2, namespace, "Secret", "db") or {}).get("data") == {"password": b64("v2")}
            ),
            SYNC_WAIT,
            "the changed Secret in far",
        )
        wait_for(
            lambda: (
                ready(get(kube, namespace, "NexusAlgorithmTemplate", "during")).get("status")
                == "True"
            ),
            SYNC_WAIT,
            "the template Ready again",
        )
    finally:
        relay.close()


def test_a_shard_api_server_stopped_and_started_again_is_caught_up(
    kube, kube2, namespace, controller
):
    """kube2's kube-apiserver process is really stopped (its etcd, and so its objects,
    stay) and started again on the same port: while it is down the other shard keeps
    syncing and the status names the one that is away; once it is back, what changed
    meanwhile reaches it without a controller restart."""
    workgroup(kube, namespace, "wg-far", "far")
    secret(kube, namespace, "db", password="v1")
    algorithm(kube, namespace, "before", ["db"], [])
    controller()
    wait_for(lambda: get(kube2, namespace, "Secret", "db"), SYNC_WAIT, "the first sync")

    run_testenv("stop-part", "kube2", "apiserver")
    try:
        algorithm(kube, namespace, "during", ["db"], [])
        secret(kube, namespace, "db", password="v2")
        condition = wait_for(
            lambda: (
                ready(get(kube, namespace, "NexusAlgorithmTemplate", "during"))
                if ready(get(kube, namespace, "NexusAlgorithmTemplate", "during")).get("reason")
                == "SyncError"
                else None
            ),
            SYNC_WAIT,
            "the stopped shard reported",
        )
        assert "shard 'far'" in condition["message"], condition
        status = get(kube, namespace, "NexusAlgorithmTemplate", "during")["status"]
        assert status["syncedToClusters"] == ["near"]
    finally:
        run_testenv("start-part", "kube2", "apiserver")

    wait_for(
        lambda: get(kube2, namespace, "NexusAlgorithmTemplate", "during"),
        SYNC_WAIT * 2,  # the shard's backoff may have grown while it was away
        "the template in far once its API server is back",
    )
    wait_for(
        lambda: (
            (get(kube2, namespace, "Secret", "db") or {}).get("data") == {"password": b64("v2")}
        ),
        SYNC_WAIT * 2,
        "the Secret changed while far was away",
    )
    wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmTemplate", "during")).get("status") == "True"
        ),
        SYNC_WAIT * 2,
        "the template Ready again",
    )


CHART = Path(__file__).resolve().parents[2] / "helm" / "nexus"


def _apply_chart_rbac(kube: Kube, namespace: str, *values: str) -> None:
    """Apply the ServiceAccounts, Roles and RoleBindings the chart renders with
    ``values`` into ``namespace`` (nothing else: no Deployments are needed here)."""
    helm = os.environ.get("NEXUS_TEST_HELM", "")
    if not helm:
        pytest.fail("NEXUS_TEST_HELM is not set: eval the kube testenv env", pytrace=False)
    args = [helm, "template", "nexus", str(CHART), "--namespace", namespace]
    for value in (f"runtimeNamespace={namespace}", *values):
        args += ["--set", value]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    for doc in yaml.safe_load_all(rendered.stdout):
        if not doc or doc["kind"] not in ("ServiceAccount", "Role", "RoleBinding"):
            continue
        if doc["kind"] == "ServiceAccount":
            base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        else:
            plural = doc["kind"].lower() + "s"
            base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{plural}"
        kube.apply(base, doc)


def _as_service_account(kube: Kube, admin: str, namespace: str, account: str, target: Path) -> str:
    """A kubeconfig for ``admin``'s cluster that signs in as the ServiceAccount."""
    token = kube.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    doc = yaml.safe_load(Path(admin).read_text())
    for user in doc["users"]:
        user["user"] = {"token": token}
    target.write_text(yaml.safe_dump(doc))
    return str(target)


def test_the_charts_rbac_is_all_the_controller_needs(
    kube, kube2, kubeconfig, kubeconfig_2, namespace, nexus_factory, tmp_path
):
    """The controller signed in as the chart's ServiceAccounts (its own Role in the
    controller cluster, shardAccess's in the shard) syncs, adopts, writes status and
    Events and holds its Lease: no permission the chart does not grant is needed."""
    _apply_chart_rbac(
        kube,
        namespace,
        "controller.enabled=true",
        "scheduler.enabled=false",
        "receiver.enabled=false",
        "supervisor.enabled=false",
    )
    _apply_chart_rbac(
        kube2,
        namespace,
        "shardAccess.create=true",
        "scheduler.enabled=false",
        "receiver.enabled=false",
        "supervisor.enabled=false",
    )
    home = _as_service_account(kube, kubeconfig, namespace, "nexus-controller", tmp_path / "c")
    shards = tmp_path / "shards"
    shards.mkdir()
    _as_service_account(
        kube2, kubeconfig_2, namespace, "nexus-shard-access", shards / "far.kubeconfig"
    )
    workgroup(kube, namespace, "wg-far", "far")
    secret(kube, namespace, "db", password="least")
    config_map(kube, namespace, "settings", LEVEL="info")
    algorithm(kube, namespace, "algo", ["db"], ["settings"])
    nexus_factory(role="controller", env=controller_env(home, shards, namespace))
    wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")).get("status") == "True"
        ),
        SYNC_WAIT,
        "the template Ready",
    )
    assert get(kube2, namespace, "Secret", "db")["data"] == {"password": b64("least")}
    assert get(kube2, namespace, "ConfigMap", "settings")["data"] == {"LEVEL": "info"}
    assert get(kube2, namespace, "NexusAlgorithmWorkgroup", "wg-far")
    assert any(e["reason"] == "Synced" for e in events(kube, namespace, "algo"))
    lease = kube.call(
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/"
        f"{ALIAS}-configuration-controller",
    )
    assert lease["spec"]["holderIdentity"] == "test-host"
    # Deletion in the shard is allowed too.
    kube.call("DELETE", f"{_base(namespace, 'NexusAlgorithmTemplate')}/algo")
    wait_for(
        lambda: get(kube2, namespace, "NexusAlgorithmTemplate", "algo") is None,
        SYNC_WAIT,
        "the copy deleted",
    )


# --- a run on the second shard -----------------------------------------------------------
# A template whose Pod reads a Secret, defined only in the controller cluster, runs on
# "far" because the controller copied the template, its workgroup and the Secret there.
# A scheduler (--role all on the Kubernetes executor, templates read from the controller
# cluster) launches the Job on "far"; kwok plays the node; the test plays the container:
# it resolves the Job's secretKeyRef in "far" as the kubelet would (a Secret not synced is
# the CreateContainerConfigError a real node reports), uploads a result holding what it
# read and reports to the receiver. The run must end COMPLETED with it.

PASSWORD = "s3cret-for-far"


def _template(kube, namespace: str) -> None:
    spec = {
        "container": {"registry": "test.local", "image": "behave", "versionTag": "1"},
        "command": "python main.py",
        "args": ["--sas-uri=%s", "--request-id=%s"],
        "workgroupRef": {"name": "wg-far"},
        "runtimeEnvironment": {
            # kwok keeps the Pod running until the test, playing the container, is done
            "annotations": {"nexus.test/hold": "true"},
            "deadlineSeconds": 300,
            "environmentVariables": [
                {
                    "name": "DB_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                }
            ],
        },
    }
    kube.apply(
        f"/apis/{GROUP}/v1/namespaces/{namespace}/nexusalgorithmtemplates",
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "NexusAlgorithmTemplate",
            "metadata": {"name": "algo"},
            "spec": spec,
        },
    )


def _resolve_env(kube2, namespace: str, container: dict) -> dict[str, str]:
    """The container's environment as the kubelet of "far" builds it (secretKeyRef read
    from far's API server; a missing Secret or key is the CreateContainerConfigError a
    real node would report)."""
    env: dict[str, str] = {}
    for item in container["env"]:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            env[item["name"]] = item.get("value", "")
            continue
        found = get(kube2, namespace, "Secret", ref["name"])
        assert found is not None, f"CreateContainerConfigError: secret {ref['name']!r} not found"
        env[item["name"]] = base64.b64decode(found["data"][ref["key"]]).decode()
    return env


def test_a_run_on_the_second_shard_reads_the_synced_secret_and_completes(
    kube, kube2, kubeconfig, kubeconfig_2, namespace, controller, nexus_factory, tmp_path
):
    workgroup(kube, namespace, "wg-far", "far")
    secret(kube, namespace, "db", password=PASSWORD)
    _template(kube, namespace)
    controller()
    wait_for(
        lambda: (
            ready(get(kube, namespace, "NexusAlgorithmTemplate", "algo")).get("status") == "True"
        ),
        SYNC_WAIT,
        "the template synced to both shards",
    )
    assert get(kube2, namespace, "Secret", "db") is not None

    shards = tmp_path / f"shards-{uuid.uuid4().hex[:6]}"
    shards.mkdir()
    shard_kubeconfig(kubeconfig, shards / "near.kubeconfig", namespace)
    shard_kubeconfig(kubeconfig_2, shards / "far.kubeconfig", namespace)
    scheduler = nexus_factory(env=kube_env(kubeconfig, namespace, shards))
    with httpx.Client(base_url=scheduler.url, timeout=60) as http:
        created = wait_for(
            lambda: (
                answer
                if (
                    answer := http.post(f"{V1}/run/algo", json={"algorithmParameters": {"n": 7}})
                ).status_code
                == 202
                else None
            ),
            30,
            "the scheduler to know template algo",
            every=0.3,
        )
        run_id = created.json()["requestId"]
        job = wait_for(lambda: kube2.job(namespace, run_id), 60, "the Job on far")
        assert kube.job(namespace, run_id) is None  # not on the controller cluster
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = _resolve_env(kube2, namespace, container)
        assert env["DB_PASSWORD"] == PASSWORD and env["NEXUS__SHARD_NAME"] == "far"

        payload_url = next(arg.split("=", 1)[1] for arg in container["args"] if "sas-uri" in arg)
        payload = httpx.get(payload_url, timeout=10).json()
        body = json.dumps({"n": payload["n"], "password_read": env["DB_PASSWORD"]}).encode()
        assert httpx.put(env["NEXUS__RESULT_UPLOAD_URL"], content=body, timeout=10).status_code in (
            200,
            201,
        )
        reported = httpx.post(
            f"{env['NEXUS__CLIENT__RECEIVER']}{V1}/complete/algo/requests/{run_id}",
            json={"resultUri": env["NEXUS__RESULT_URL"]},
            timeout=10,
        )
        assert reported.status_code == 202, reported.text
        done = finished(http, "algo", run_id)
        assert done["status"] == "COMPLETED", done
        assert httpx.get(done["resultUri"], timeout=10).json() == {
            "n": 7,
            "password_read": PASSWORD,
        }
