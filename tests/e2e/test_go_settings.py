"""Each role started as the Go app it replaces is deployed: its own settings file and the
environment names its chart sets, with values pointing at the real test servers.

The files are the Go apps' shipped ``appconfig.yaml`` (tests/go_apps, vendored with their
source commits); the environment is the one their charts give the container (its Secrets'
names included), plus the few nexus settings the Go apps have no key for
(docs/go-settings.md, "What nexus needs that the Go settings do not say"). Each process
must become ready on its real backends, log one warning per Go key that means nothing to
nexus, and a misspelled key must stop it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from contract.servers import (
    CASSANDRA_VARS,
    S3_VARS,
    delete_prefix,
    drop_keyspace,
    require,
    unique,
)
from integration.control_plane import Kube, install_crds, require_kubeconfig, wait_for
from integration.test_kubernetes import template, workgroup

REPO = Path(__file__).resolve().parents[2]
GO_APPS = REPO / "tests" / "go_apps"
API = "/algorithm/v1"
QUEUE_KEYS = (
    "workers",
    "failure-rate-base-delay",
    "failure-rate-max-delay",
    "rate-limit-elements-per-second",
    "rate-limit-elements-burst",
)
IGNORED = {"scheduler": (), "receiver": QUEUE_KEYS, "supervisor": QUEUE_KEYS}
ALGORITHM = "go-settings"

pytestmark = [pytest.mark.cassandra, pytest.mark.kube]


@pytest.fixture(scope="module")
def stores():
    """A keyspace and an S3 prefix of this module's own, removed at its end."""
    keyspace, prefix = unique("nexus_go_"), unique("nexus-go-")
    yield keyspace, prefix
    drop_keyspace(keyspace)
    delete_prefix(prefix)


@pytest.fixture(scope="module")
def kubeconfig() -> str:
    return require_kubeconfig()


@pytest.fixture(scope="module")
def namespace(kubeconfig):
    """A namespace with a template whose workgroup names the shard ``shard-a``."""
    client = Kube(kubeconfig)
    install_crds(client)  # template-source kubernetes lists the templates
    name = client.create_namespace(unique("nexus-go-"))
    workgroup(client, name, "wg-a", "shard-a")
    template(client, name, ALGORITHM, {})
    yield name
    client.delete_namespace(name, wait=30)
    client.close()


def chart_env(
    app: str, stores: tuple[str, str], kubeconfig: str, namespace: str, shards: Path
) -> dict:
    """The chart's environment (tests/go_apps/<app>/chart-env.yaml) aimed at the test
    servers, with the Go names: only the keys the Go apps lack are nexus's own."""
    doc = yaml.safe_load((GO_APPS / app / "chart-env.yaml").read_text())
    env = {**doc["env"], **doc["secrets"]}
    keyspace, prefix = stores
    cassandra = require("cassandra", CASSANDRA_VARS)
    env.update(
        {
            "NEXUS__CQL_STORE_TYPE": "cassandra-scylla",
            "NEXUS__SCYLLA_CQL_STORE__HOSTS": cassandra["NEXUS_TEST_CASSANDRA_HOSTS"],
            "NEXUS__SCYLLA_CQL_STORE__PORT": cassandra["NEXUS_TEST_CASSANDRA_PORT"],
            "NEXUS__SCYLLA_CQL_STORE__USER": cassandra["NEXUS_TEST_CASSANDRA_USER"],
            "NEXUS__SCYLLA_CQL_STORE__PASSWORD": cassandra["NEXUS_TEST_CASSANDRA_PASSWORD"],
            "NEXUS__SCYLLA_CQL_STORE__KEYSPACE": keyspace,  # Go's is fixed: nexus
            "NEXUS__EXECUTOR": "kubernetes",  # Go has no other
            "NEXUS__TEMPLATE_SOURCE": "kubernetes",
        }
    )
    if app != "receiver":  # the receiver's chart sets no kube-config-path
        env["NEXUS__KUBE_CONFIG_PATH"] = kubeconfig
    if app == "scheduler":
        s3 = require("seaweedfs", S3_VARS)
        env.update(
            {
                "NEXUS__RUNTIME_NAMESPACE": namespace,
                "NEXUS__DEPLOY_NAMESPACE": namespace,
                "NEXUS__SHARD_KUBE_CONFIG_PATH": str(shards),
                "NEXUS__S3_BUFFER__BUFFER_CONFIG__PAYLOAD_STORAGE_PATH": (
                    f"s3a://{s3['NEXUS_TEST_S3_BUCKET']}/{prefix}"
                ),
                "NEXUS__S3_BUFFER__ACCESS_KEY_ID": s3["NEXUS_TEST_S3_ACCESS_KEY_ID"],
                "NEXUS__S3_BUFFER__SECRET_ACCESS_KEY": s3["NEXUS_TEST_S3_SECRET_ACCESS_KEY"],
                "NEXUS__S3_BUFFER__ENDPOINT": s3["NEXUS_TEST_S3_ENDPOINT"],
                "NEXUS__S3_BUFFER__REGION": s3["NEXUS_TEST_S3_REGION"],
            }
        )
    if app == "supervisor":
        env["NEXUS__RESOURCE_NAMESPACE"] = namespace
        # A Go supervisor watches the one cluster it runs in: nexus must be told its name.
        env["NEXUS__KUBERNETES__IN_CLUSTER_SHARD"] = "shard-a"
    return env


def dry_run_on_s3(http: httpx.Client, env: dict[str, str]) -> None:
    """A dry run goes through, its payload stored where the Go name
    s3-buffer.buffer-config.payload-storage-path says, its record in Cassandra."""

    def accepted() -> str | None:
        response = http.post(
            f"{API}/run/{ALGORITHM}",
            params={"dryRun": "true"},
            json={"algorithmParameters": {"go": "settings"}},
        )
        if response.status_code == 400 and "No valid configuration" in response.text:
            return None  # the template watch has not delivered it yet
        assert response.status_code == 202, response.text
        return response.json()["requestId"]

    run_id = wait_for(accepted, 20, f"template {ALGORITHM} to reach nexus", every=0.3)
    result = http.get(f"{API}/results/{ALGORITHM}/requests/{run_id}", params={"wait": 20})
    assert result.json()["status"] == "COMPLETED", result.text
    payload = http.get(f"{API}/payload/{ALGORITHM}/requests/{run_id}")
    assert payload.status_code == 302, payload.text
    where = env["NEXUS__S3_BUFFER__BUFFER_CONFIG__PAYLOAD_STORAGE_PATH"].removeprefix("s3a://")
    location = payload.headers["location"]
    assert location.startswith(env["NEXUS__S3_BUFFER__ENDPOINT"]) and where in location, location
    assert httpx.get(location).json() == {"go": "settings"}


def warnings_in(log: str) -> list[str]:
    # The queue keys of the Go receiver and supervisor are read as controller.* and say so.
    notes = ("has no meaning in nexus", "only --role controller reads it")
    return [line for line in log.splitlines() if any(note in line for note in notes)]


@pytest.mark.s3
@pytest.mark.parametrize("app", ["scheduler", "receiver", "supervisor"])
def test_each_role_starts_on_its_go_apps_settings(
    app, nexus_factory, stores, kubeconfig, namespace, tmp_path
):
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copyfile(kubeconfig, shards / "shard-a.kubeconfig")
    config = tmp_path / "app" / "appconfig.yaml"
    config.parent.mkdir()
    shutil.copyfile(GO_APPS / app / "appconfig.yaml", config)
    env = chart_env(app, stores, kubeconfig, namespace, shards)
    nexus = nexus_factory(role=app, env=env, args=("--config", str(config)))

    with httpx.Client(base_url=nexus.url, timeout=10) as http:
        assert http.get("/health/ready").status_code == 200
        if app == "receiver":  # the completion API answers from the store
            response = http.get("/algorithm/v1/check/behave/requests/not-a-run")
            assert response.status_code == 404, response.text
        if app == "scheduler":
            dry_run_on_s3(http, env)
    warnings = warnings_in(nexus.log())
    for key in IGNORED[app]:
        # once, though the file and the environment both set it
        assert sum(f"Setting {key} " in line for line in warnings) == 1, (key, warnings)
    assert len(warnings) == len(IGNORED[app]), warnings


def test_log_level_disabled_silences_the_go_supervisor(
    nexus_factory, stores, kubeconfig, namespace, tmp_path
):
    env = chart_env("supervisor", stores, kubeconfig, namespace, tmp_path)
    env["NEXUS__LOG_LEVEL"] = "DISABLED"
    nexus = nexus_factory(
        role="supervisor",
        env=env,
        args=("--config", str(GO_APPS / "supervisor" / "appconfig.yaml")),
    )
    with httpx.Client(base_url=nexus.url, timeout=10) as http:
        assert http.get("/health/ready").status_code == 200
    nexus.stop()
    assert nexus.log() == ""


@pytest.mark.parametrize(
    ("app", "correct", "typo"),
    [
        ("receiver", "  gateway-user:", "  gateway-usr:"),
        ("supervisor", "resource-namespace:", "resource-namepace:"),
        ("scheduler", "    payload-valid-for:", "    payload-valid-fr:"),
    ],
)
def test_a_misspelled_key_in_a_go_file_stops_the_role_naming_it(app, correct, typo, tmp_path):
    text = (GO_APPS / app / "appconfig.yaml").read_text()
    assert correct in text
    config = tmp_path / "appconfig.yaml"
    config.write_text(text.replace(correct, typo, 1))
    done = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "--role", app, "--config", str(config)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "NEXUS__DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert typo.strip().rstrip(":") in done.stderr, done.stderr
