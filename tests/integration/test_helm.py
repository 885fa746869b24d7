"""The Helm chart (helm/nexus): lint, render, schema, and an install into the test
control plane of scripts/testenv (kube component: NEXUS_TEST_HELM, NEXUS_TEST_KUBECONFIG).

The rendered settings file must pass nexus's own validation, with the environment the
Deployments give each role, so a chart change can never ship a config nexus refuses."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from nexus.settings import load_settings

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nexus"
ROLES = ("scheduler", "receiver", "supervisor")
SETTINGS_PATH = "/etc/nexus/settings.yaml"

# What a production install sets (docs/deploy.md): external Cassandra and S3, credentials
# from Secrets, remote shards, an autoscaled scheduler.
PRODUCTION_VALUES = {
    "image": {"repository": "registry.test/nexus", "tag": "test"},
    "config": {
        "scylla-cql-store": {
            "hosts": ["cassandra-0.cassandra", "cassandra-1.cassandra"],
            "local-dc": "dc1",
        },
        "s3-buffer": {
            "payload-storage-path": "s3a://payloads/nexus",
            "endpoint": "http://seaweedfs.storage:8333",
        },
        "kubernetes": {"in-cluster-shard": "home"},
    },
    "secrets": {
        "cassandra": {"name": "nexus-cassandra"},
        "s3": {"name": "nexus-s3"},
        "shards": {"name": "nexus-shards"},
        "payloadSigning": {"name": "nexus-signing"},
    },
    "scheduler": {
        "replicas": 2,
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
    },
    "receiver": {"replicas": 1},
}


def _need(*names: str) -> dict[str, str]:
    found = {name: os.environ.get(name, "") for name in names}
    missing = [name for name, value in found.items() if not value or not Path(value).exists()]
    if missing:
        message = (
            f"{' and '.join(missing)} not set or missing: run `scripts/testenv up kube` "
            'and `eval "$(scripts/testenv env kube)"` (helm and the control plane)'
        )
        if os.environ.get("NEXUS_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }


@pytest.fixture(scope="module")
def helm(helm_env):
    binary = _need("NEXUS_TEST_HELM")["NEXUS_TEST_HELM"]

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [binary, *args], env=helm_env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    return run


@pytest.fixture
def values_file(tmp_path: Path) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(PRODUCTION_VALUES))
    return path


def _documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _check_settings(settings_yaml: str, container: dict, tmp_path: Path) -> None:
    """nexus.settings.load_settings accepts the file with the container's environment
    (placeholder values for what Secrets and the downward API would provide)."""
    path = tmp_path / f"settings-{uuid.uuid4().hex}.yaml"
    path.write_text(settings_yaml)
    environ = {env["name"]: env.get("value", "placeholder") for env in container.get("env", [])}
    settings = load_settings(path, environ=environ)
    assert settings.executor == "kubernetes" and settings.template_source == "kubernetes"
    assert settings.bind_host == "0.0.0.0"
    assert settings.bind_port == container["ports"][0]["containerPort"]


def _check_deployments(docs: list[dict], settings_yaml: str, tmp_path: Path) -> None:
    deployments = _by_kind(docs, "Deployment")
    assert len(deployments) == len(ROLES)
    for role in ROLES:
        (deployment,) = [d for name, d in deployments.items() if name.endswith(f"-{role}")]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["--role", role, "--config", SETTINGS_PATH]
        assert "command" not in container  # the image's ENTRYPOINT is `nexus`
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == SETTINGS_PATH)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"].endswith("-settings")
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert pod["securityContext"]["runAsNonRoot"] is True
        _check_settings(settings_yaml, container, tmp_path)


def test_lint(helm, values_file: Path) -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", str(values_file))


def test_default_values_render_a_valid_settings_file(helm, tmp_path: Path) -> None:
    docs = _documents(helm("template", "nexus", str(CHART), "--namespace", "ml").stdout)
    (config_map,) = _by_kind(docs, "ConfigMap").values()
    settings = yaml.safe_load(config_map["data"]["settings.yaml"])
    assert settings["runtime-namespace"] == "ml"
    assert settings["receiver-url"] == "http://nexus-receiver.ml.svc:8080"
    _check_deployments(docs, config_map["data"]["settings.yaml"], tmp_path)
    assert set(_by_kind(docs, "PodDisruptionBudget")) == {"nexus-scheduler"}
    assert _by_kind(docs, "HorizontalPodAutoscaler") == {}


def test_production_values_render(helm, values_file: Path, tmp_path: Path) -> None:
    docs = _documents(
        helm("template", "prod", str(CHART), "--namespace", "ml", "-f", str(values_file)).stdout
    )
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == [
        "ClusterRole",
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    (config_map,) = _by_kind(docs, "ConfigMap").values()
    settings_yaml = config_map["data"]["settings.yaml"]
    settings = yaml.safe_load(settings_yaml)
    assert settings["shard-kube-config-path"] == "/etc/nexus/shards"
    assert settings["scylla-cql-store"]["hosts"] == [
        "cassandra-0.cassandra",
        "cassandra-1.cassandra",
    ]
    _check_deployments(docs, settings_yaml, tmp_path)

    deployments = _by_kind(docs, "Deployment")
    scheduler = deployments["prod-nexus-scheduler"]
    assert "replicas" not in scheduler["spec"]  # the HPA owns it
    container = scheduler["spec"]["template"]["spec"]["containers"][0]
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secret_env == {
        "NEXUS__SCYLLA_CQL_STORE__USER": "nexus-cassandra",
        "NEXUS__SCYLLA_CQL_STORE__PASSWORD": "nexus-cassandra",
        "NEXUS__S3_BUFFER__ACCESS_KEY_ID": "nexus-s3",
        "NEXUS__S3_BUFFER__SECRET_ACCESS_KEY": "nexus-s3",
        "NEXUS__S3_BUFFER__REQUEST_PAYLOAD_PROXY_CONFIGURATION__SIGN_SECRET": "nexus-signing",
    }
    shards = next(
        v for v in scheduler["spec"]["template"]["spec"]["volumes"] if v["name"] == "shards"
    )
    assert shards["secret"]["secretName"] == "nexus-shards"
    receiver = deployments["prod-nexus-receiver"]["spec"]["template"]["spec"]
    assert receiver["automountServiceAccountToken"] is False
    assert {e["name"] for e in receiver["containers"][0]["env"]} == {
        "NEXUS__INSTANCE_ID",
        "NEXUS__SCYLLA_CQL_STORE__USER",
        "NEXUS__SCYLLA_CQL_STORE__PASSWORD",
    }
    assert all(v["name"] != "shards" for v in receiver["volumes"])

    rules = {name: role["rules"] for name, role in _by_kind(docs, "Role").items()}
    assert set(rules) == {"prod-nexus-scheduler", "prod-nexus-supervisor"}
    verbs = {
        (name, group, resource): sorted(rule["verbs"])
        for name, role_rules in rules.items()
        for rule in role_rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert verbs[("prod-nexus-scheduler", "batch", "jobs")] == ["create", "delete", "get"]
    assert verbs[
        ("prod-nexus-scheduler", "science.sneaksanddata.com", "nexusalgorithmtemplates")
    ] == ["get", "list", "watch"]
    assert verbs[("prod-nexus-supervisor", "batch", "jobs")] == [
        "create",
        "delete",
        "get",
        "list",
        "watch",
    ]
    assert verbs[("prod-nexus-supervisor", "", "pods")] == ["get", "list", "watch"]
    assert not any(
        v in ("*", "update", "patch", "deletecollection") for vs in verbs.values() for v in vs
    )
    services = _by_kind(docs, "Service")
    assert set(services) == {"prod-nexus-scheduler", "prod-nexus-receiver"}
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["prod-nexus-scheduler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)


@pytest.mark.parametrize(
    "bad",
    [
        "scheduler.replicas=-1",
        "scheduler.workers=0",
        "image.pullPolicy=Sometimes",
        "config.log-format=xml",
        "config.scylla-cql-store.password=in-plain-text",
        "probes.liveness.path=health",
        "schedulr.replicas=2",
        "image.digest=latest",
        "serviceMonitor.interval=often",
        "probes.startup.failureThreshold=0",
        "ingress.hostz[0]=nexus.example",
        "supervisor.shards[0]=Shard_A",
        "supervisor.shards={shard-a,shard-a}",
        "supervisor.shards[0]=",
        "secrets.receiverTokens.key=",
        "rbac.teams[0].name=Team_A",
        "rbac.teams[0].name=a,rbac.teams[0].verbs[0]=escalate",
        "rbac.teams[0].name=a",  # no subjects: a Role bound to nobody
    ],
)
def test_values_schema_refuses_bad_values(helm, bad: str) -> None:
    done = helm("template", "nexus", str(CHART), "--set", bad, check=False)
    assert done.returncode != 0
    assert "schema" in done.stderr.lower(), done.stderr


def test_opt_in_knobs_render(helm) -> None:
    """ServiceMonitor, NetworkPolicy and Ingress are off by default and render when asked;
    the pod knobs reach every role's pod."""
    digest = "sha256:" + "ab" * 32
    defaults = _documents(helm("template", "nexus", str(CHART)).stdout)
    assert not any(
        _by_kind(defaults, kind) for kind in ("ServiceMonitor", "NetworkPolicy", "Ingress")
    )
    docs = _documents(
        helm(
            "template",
            "nexus",
            str(CHART),
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.hosts[0]=nexus.example",
            "--set",
            f"image.digest={digest}",
            "--set",
            "priorityClassName=high",
            "--set",
            "podLabels.team=ml",
            "--set",
            "podAnnotations.owner=ml-team",
            "--set",
            "extraVolumes[0].name=ca",
            "--set",
            "extraVolumes[0].emptyDir.medium=Memory",
            "--set",
            "extraVolumeMounts[0].name=ca",
            "--set",
            "extraVolumeMounts[0].mountPath=/etc/ca",
        ).stdout
    )
    assert set(_by_kind(docs, "ServiceMonitor")) == {"nexus-scheduler", "nexus-receiver"}
    assert set(_by_kind(docs, "NetworkPolicy")) == {
        "nexus-scheduler",
        "nexus-receiver",
        "nexus-supervisor",
    }
    (ingress,) = _by_kind(docs, "Ingress").values()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["spec"]["rules"][0]["host"] == "nexus.example"
    assert backend["name"] == "nexus-scheduler"
    for deployment in _by_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["image"].endswith("@" + digest)
        assert pod["spec"]["priorityClassName"] == "high"
        assert pod["metadata"]["labels"]["team"] == "ml"
        assert pod["metadata"]["annotations"]["owner"] == "ml-team"
        assert {"name": "ca", "emptyDir": {"medium": "Memory"}} in pod["spec"]["volumes"]
        assert {"name": "ca", "mountPath": "/etc/ca"} in container["volumeMounts"]
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"


def test_workers_per_pod_reach_the_command_line(helm) -> None:
    """scheduler.workers / receiver.workers: nexus --workers N, left out at 1."""
    docs = _documents(helm("template", "nexus", str(CHART), "--set", "scheduler.workers=4").stdout)
    args = {
        name: deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        for name, deployment in _by_kind(docs, "Deployment").items()
    }
    assert args["nexus-scheduler"][-2:] == ["--workers", "4"]
    assert "--workers" not in args["nexus-receiver"] + args["nexus-supervisor"]


def test_roles_can_be_turned_off(helm) -> None:
    docs = _documents(
        helm(
            "template",
            "nexus",
            str(CHART),
            "--set",
            "receiver.enabled=false",
            "--set",
            "supervisor.enabled=false",
        ).stdout
    )
    assert set(_by_kind(docs, "Deployment")) == {"nexus-scheduler"}
    assert set(_by_kind(docs, "ServiceAccount")) == {"nexus-scheduler"}
    assert set(_by_kind(docs, "Role")) == {"nexus-scheduler"}
    people = set(_by_kind(docs, "ClusterRole"))
    assert people == {"nexus-algorithm-editor", "nexus-algorithm-viewer"}
    without = _documents(
        helm("template", "nexus", str(CHART), "--set", "rbac.aggregateToDefaultRoles=false").stdout
    )
    assert _by_kind(without, "ClusterRole") == {}


def test_a_supervisor_per_shard_renders_one_deployment_each(
    helm, values_file: Path, tmp_path: Path
) -> None:
    """supervisor.shards: one Deployment per item, each given its shards as the setting
    nexus reads (checked by nexus's own loader), with selectors that cannot take each
    other's pods; without it, the one supervisor Deployment is as it always was."""
    groups = {"home": ["home"], "far": ["far"], "eu-1-eu-2": ["eu-1", "eu-2"]}
    values = {**PRODUCTION_VALUES, "supervisor": {"shards": ["home", "far", ["eu-1", "eu-2"]]}}
    values_file.write_text(yaml.safe_dump(values))
    docs = _documents(helm("template", "prod", str(CHART), "-f", str(values_file)).stdout)
    (config_map,) = _by_kind(docs, "ConfigMap").values()
    deployments = _by_kind(docs, "Deployment")
    supervisors = {n: d for n, d in deployments.items() if "-supervisor" in n}
    assert set(supervisors) == {f"prod-nexus-supervisor-{suffix}" for suffix in groups}
    for suffix, shards in groups.items():
        deployment = supervisors[f"prod-nexus-supervisor-{suffix}"]
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["args"][:2] == ["--role", "supervisor"]
        assert pod["spec"]["serviceAccountName"] == "prod-nexus-supervisor"
        path = tmp_path / f"settings-{suffix}.yaml"
        path.write_text(config_map["data"]["settings.yaml"])
        environ = {e["name"]: e.get("value", "placeholder") for e in container["env"]}
        assert load_settings(path, environ=environ).supervisor.shards == shards
        # Only its own shards' kubeconfigs ("home" is the in-cluster shard: it has none).
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "shards"]
        if shards == ["home"]:
            assert volume == {"name": "shards", "emptyDir": {}}
        else:
            assert volume["secret"]["secretName"] == "nexus-shards"
            assert [item["key"] for item in volume["secret"]["items"]] == [
                f"{shard}.kubeconfig" for shard in shards
            ]
    for name, deployment in supervisors.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        for other_name, other in deployments.items():
            labels = other["spec"]["template"]["metadata"]["labels"]
            matches = selector.items() <= labels.items()
            assert matches == (other_name == name), (name, other_name)
    values_file.write_text(yaml.safe_dump(PRODUCTION_VALUES))
    docs = _documents(helm("template", "prod", str(CHART), "-f", str(values_file)).stdout)
    only = _by_kind(docs, "Deployment")["prod-nexus-supervisor"]
    (container,) = only["spec"]["template"]["spec"]["containers"]
    assert "NEXUS__SUPERVISOR__SHARDS" not in {e["name"] for e in container["env"]}
    (volume,) = [v for v in only["spec"]["template"]["spec"]["volumes"] if v["name"] == "shards"]
    assert volume == {"name": "shards", "secret": {"secretName": "nexus-shards"}}
    assert only["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "nexus",
        "app.kubernetes.io/instance": "prod",
        "app.kubernetes.io/component": "supervisor",
    }


def _template(helm, *values: str, namespace: str = "") -> list[dict]:
    """``helm template`` of the chart with ``--set`` for each of ``values``."""
    args = ["template", "nexus", str(CHART), *(["--namespace", namespace] if namespace else [])]
    for value in values:
        args += ["--set", value]
    return _documents(helm(*args).stdout)


def _granted(role: dict) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_controller_is_off_by_default_and_renders_behind_its_value(
    helm, tmp_path: Path
) -> None:
    defaults = _template(helm)
    assert "nexus-controller" not in _by_kind(defaults, "Deployment")
    assert "nexus-controller" not in _by_kind(defaults, "Role")
    docs = _template(
        helm,
        "controller.enabled=true",
        "secrets.shards.name=nexus-shards",
        "secrets.cassandra.name=cql",
        "config.controller.alias=eu-controller",
    )
    deployment = _by_kind(docs, "Deployment")["nexus-controller"]
    assert deployment["spec"]["replicas"] == 2  # leader election makes a standby safe
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["--role", "controller", "--config", SETTINGS_PATH]
    assert pod["serviceAccountName"] == "nexus-controller"
    assert "nexus-controller" in _by_kind(docs, "ServiceAccount")
    shards = next(v for v in pod["volumes"] if v["name"] == "shards")
    assert shards["secret"]["secretName"] == "nexus-shards"  # keys: <shard>.kubeconfig
    assert "/etc/nexus/shards" in {m["mountPath"] for m in container["volumeMounts"]}
    # Kubernetes only: the store's credentials are not handed to it.
    assert not any(e["name"].startswith("NEXUS__SCYLLA") for e in container["env"])
    granted = _granted(_by_kind(docs, "Role")["nexus-controller"])
    group = "science.sneaksanddata.com"
    for wanted in (
        (group, "nexusalgorithmtemplates", "watch"),
        (group, "nexusalgorithmtemplates/status", "patch"),
        (group, "nexusalgorithmworkgroups/status", "patch"),
        ("", "secrets", "watch"),
        ("", "secrets", "patch"),  # adoption: owner references on the sources
        ("", "configmaps", "patch"),
        ("", "events", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ):
        assert wanted in granted, wanted
    # It never creates or deletes anything in the controller cluster but Events/Leases.
    assert not {g for g in granted if g[2] == "delete"}
    assert ("", "secrets", "create") not in granted
    (config_map,) = _by_kind(docs, "ConfigMap").values()
    _check_settings(config_map["data"]["settings.yaml"], container, tmp_path)
    settings = yaml.safe_load(config_map["data"]["settings.yaml"])
    assert settings["shard-kube-config-path"] == "/etc/nexus/shards"
    assert settings["controller"]["alias"] == "eu-controller"


def test_shard_access_renders_what_the_controller_needs_in_a_shard(helm) -> None:
    docs = _template(
        helm,
        "shardAccess.create=true",
        "scheduler.enabled=false",
        "receiver.enabled=false",
        "supervisor.enabled=false",
        namespace="nexus",
    )
    assert _by_kind(docs, "Deployment") == {}
    account = _by_kind(docs, "ServiceAccount")["nexus-shard-access"]
    assert account["metadata"]["namespace"] == "nexus"
    token = _by_kind(docs, "Secret")["nexus-shard-access-token"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == (
        "nexus-shard-access"
    )
    granted = _granted(_by_kind(docs, "Role")["nexus-shard-access"])
    for resource in ("nexusalgorithmtemplates", "nexusalgorithmworkgroups"):
        for verb in ("get", "watch", "create", "update", "delete"):
            assert ("science.sneaksanddata.com", resource, verb) in granted
    for resource in ("secrets", "configmaps"):
        for verb in ("get", "watch", "create", "update", "delete"):
            assert ("", resource, verb) in granted
    (binding,) = _by_kind(docs, "RoleBinding").values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nexus-shard-access", "namespace": "nexus"}
    ]


def test_auth_mode_kubernetes_lets_the_scheduler_ask_for_reviews(helm, tmp_path: Path) -> None:
    """Only with auth.mode kubernetes: a ClusterRole creating TokenReviews and
    SubjectAccessReviews, bound to the scheduler alone; the settings still load."""
    assert not any(
        name.endswith("-auth")
        for name in _by_kind(
            _documents(helm("template", "nexus", str(CHART)).stdout), "ClusterRole"
        )
    )
    docs = _documents(
        helm("template", "nexus", str(CHART), "--set", "config.auth.mode=kubernetes").stdout
    )
    role = _by_kind(docs, "ClusterRole")["nexus-scheduler-auth"]
    assert role["rules"] == [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    binding = _by_kind(docs, "ClusterRoleBinding")["nexus-scheduler-auth"]
    assert binding["roleRef"]["name"] == "nexus-scheduler-auth"
    assert [s["name"] for s in binding["subjects"]] == ["nexus-scheduler"]
    (config_map,) = _by_kind(docs, "ConfigMap").values()
    settings = tmp_path / "settings.yaml"
    settings.write_text(next(iter(config_map["data"].values())))
    assert load_settings(settings, environ={}).auth.mode == "kubernetes"


TEAM = {
    "name": "forecasting",
    "templates": ["demand-forecast", "price-forecast"],
    "subjects": [
        {"kind": "ServiceAccount", "name": "forecast-pipeline", "namespace": "forecasting"},
        {"kind": "Group", "name": "forecasting-team", "apiGroup": "rbac.authorization.k8s.io"},
    ],
}


def test_teams_get_the_runs_of_their_templates_with_ordinary_rbac(helm, tmp_path: Path) -> None:
    """rbac.teams: a Role on nexusalgorithmtemplates/runs in the runtime namespace, what
    nexus's SubjectAccessReviews ask about, and a RoleBinding to the team."""
    values = tmp_path / "teams.yaml"
    readers = {"name": "auditors", "verbs": ["get"], "subjects": [{"kind": "User", "name": "x"}]}
    values.write_text(
        yaml.safe_dump(
            {
                "runtimeNamespace": "runs",
                "config": {"auth": {"mode": "kubernetes"}},
                "rbac": {"teams": [TEAM, readers]},
            }
        )
    )
    docs = _documents(helm("template", "nexus", str(CHART), "-f", str(values)).stdout)
    roles, bindings = _by_kind(docs, "Role"), _by_kind(docs, "RoleBinding")
    team = roles["nexus-runs-forecasting"]
    assert team["metadata"]["namespace"] == "runs"
    assert team["rules"] == [
        {
            "apiGroups": ["science.sneaksanddata.com"],
            "resources": ["nexusalgorithmtemplates/runs"],
            "resourceNames": ["demand-forecast", "price-forecast"],
            "verbs": ["create", "get", "update", "delete"],
        }
    ]
    assert roles["nexus-runs-auditors"]["rules"] == [
        {
            "apiGroups": ["science.sneaksanddata.com"],
            "resources": ["nexusalgorithmtemplates/runs"],  # every template
            "verbs": ["get"],
        }
    ]
    binding = bindings["nexus-runs-forecasting"]
    assert binding["metadata"]["namespace"] == "runs"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "nexus-runs-forecasting",
    }
    assert binding["subjects"] == TEAM["subjects"]
    assert "nexus-runs-forecasting" not in _by_kind(
        _documents(helm("template", "nexus", str(CHART), "--set", "rbac.create=false").stdout),
        "Role",
    )


def test_receiver_tokens_share_one_secret_and_oidc_settings_load(helm, tmp_path: Path) -> None:
    """Every role gets the token key from the Secret; without one the chart refuses to
    render (separate Pods cannot share a random key); oidc settings pass nexus's checks."""
    refused = helm(
        "template", "nexus", str(CHART), "--set", "config.auth.receiver-tokens=true", check=False
    )
    assert refused.returncode != 0
    assert "needs secrets.receiverTokens.name" in refused.stderr
    values = tmp_path / "oidc.yaml"
    oidc = {"issuer": "https://login.example.com/t/v2.0", "audience": "nexus"}
    auth = {
        "mode": "oidc",
        "receiver-tokens": True,
        "caller-rate": 5,
        "oidc": oidc,
        "rules": [{"groups": ["forecasting"], "algorithms": ["demand-*"]}],
    }
    values.write_text(
        yaml.safe_dump(
            {"config": {"auth": auth}, "secrets": {"receiverTokens": {"name": "nexus-tokens"}}}
        )
    )
    docs = _documents(helm("template", "nexus", str(CHART), "-f", str(values)).stdout)
    (config_map,) = _by_kind(docs, "ConfigMap").values()
    for deployment in _by_kind(docs, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["NEXUS__AUTH__RECEIVER_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": "nexus-tokens",
            "key": "receiver-token-secret",
        }
        path = tmp_path / "settings.yaml"
        path.write_text(config_map["data"]["settings.yaml"])
        environ = {"NEXUS__AUTH__RECEIVER_TOKEN_SECRET": "a-shared-key-of-32-characters!!!"}
        settings = load_settings(path, environ=environ)
        assert settings.auth.mode == "oidc" and settings.auth.receiver_tokens
        assert settings.auth.oidc.issuer == oidc["issuer"] and settings.auth.caller_rate == 5


# --- install into the test control plane ---------------------------------------------


@pytest.fixture
def kube(helm):
    kubeconfig = _need("NEXUS_TEST_KUBECONFIG")["NEXUS_TEST_KUBECONFIG"]
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=kubeconfig)
    yield kubeconfig, api
    api.close()


def _install_release(helm, kubeconfig: str, release: str, namespace: str, values: Path) -> None:
    """Install the chart as a test release into a namespace of its own."""
    helm(
        "install",
        release,
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        namespace,
        "--create-namespace",
        "-f",
        str(values),
        "--timeout",
        "120s",
    )


def _remove_release(helm, kubeconfig: str, release: str, namespace: str, core) -> None:
    """Uninstall a test release and delete its namespace, whatever state they are in."""
    helm(
        "uninstall",
        release,
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        namespace,
        "--ignore-not-found",
        check=False,
    )
    try:
        core.delete_namespace(namespace)
    except Exception:  # noqa: BLE001 - cleanup of a test namespace must not mask the result
        pass


def _get(dynamic, doc: dict, namespace: str) -> dict | None:
    from kubernetes.dynamic.exceptions import NotFoundError

    resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    try:
        return resource.get(name=doc["metadata"]["name"], namespace=namespace).to_dict()
    except NotFoundError:
        return None


# (role, verb, group, resource, allowed): what the API server answers for each role's
# ServiceAccount in the runtime namespace.
PERMISSIONS = [
    ("scheduler", "create", "batch", "jobs", True),
    ("scheduler", "delete", "batch", "jobs", True),
    ("scheduler", "list", "batch", "jobs", False),
    ("scheduler", "watch", "science.sneaksanddata.com", "nexusalgorithmtemplates", True),
    ("scheduler", "list", "science.sneaksanddata.com", "nexusalgorithmworkgroups", True),
    ("scheduler", "create", "science.sneaksanddata.com", "nexusalgorithmtemplates", False),
    ("scheduler", "list", "", "pods", False),
    ("scheduler", "get", "", "secrets", False),
    ("supervisor", "watch", "batch", "jobs", True),
    ("supervisor", "create", "batch", "jobs", True),
    ("supervisor", "watch", "", "pods", True),
    ("supervisor", "list", "", "events", True),
    ("supervisor", "delete", "", "pods", False),
    ("supervisor", "patch", "batch", "jobs", False),
    ("supervisor", "list", "science.sneaksanddata.com", "nexusalgorithmworkgroups", True),
    ("supervisor", "create", "science.sneaksanddata.com", "nexusalgorithmworkgroups", False),
    ("receiver", "get", "batch", "jobs", False),
    ("receiver", "list", "", "pods", False),
]


def _check_permissions(api, namespace: str, release: str) -> None:
    from kubernetes.client import (
        AuthorizationV1Api,
        V1ResourceAttributes,
        V1SubjectAccessReview,
        V1SubjectAccessReviewSpec,
    )

    authorization = AuthorizationV1Api(api)
    wrong = []
    for role, verb, group, resource, allowed in PERMISSIONS:
        user = f"system:serviceaccount:{namespace}:{release}-nexus-{role}"
        review = authorization.create_subject_access_review(
            V1SubjectAccessReview(
                spec=V1SubjectAccessReviewSpec(
                    user=user,
                    groups=["system:serviceaccounts"],
                    resource_attributes=V1ResourceAttributes(
                        namespace=namespace, verb=verb, group=group, resource=resource
                    ),
                )
            )
        )
        if review.status.allowed != allowed:
            wrong.append(
                f"{role} {verb} {group or 'core'}/{resource}: "
                f"allowed={review.status.allowed}, expected {allowed}"
            )
    assert wrong == []


def test_install_into_the_control_plane(helm, kube, values_file: Path, tmp_path: Path) -> None:
    kubeconfig, api = kube
    from kubernetes.client import CoreV1Api
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api)
    core = CoreV1Api(api)
    namespace = f"nexus-helm-{uuid.uuid4().hex[:8]}"
    release = "it"
    try:
        _install_release(helm, kubeconfig, release, namespace, values_file)
        manifest = helm(
            "get", "manifest", release, "--kubeconfig", kubeconfig, "--namespace", namespace
        ).stdout
        docs = _documents(manifest)
        assert len(docs) >= 13
        live: list[dict] = []
        for doc in docs:
            found = _get(dynamic, doc, doc["metadata"].get("namespace", namespace))
            assert found is not None, f"{doc['kind']} {doc['metadata']['name']} was not created"
            assert found["metadata"]["labels"]["app.kubernetes.io/instance"] == release
            live.append(found)
        (config_map,) = [d for d in live if d["kind"] == "ConfigMap"]
        _check_deployments(live, config_map["data"]["settings.yaml"], tmp_path)

        # The control plane's controllers take the Deployments from there: Pods appear.
        deadline = time.monotonic() + 90
        while True:
            pods = core.list_namespaced_pod(namespace).items
            roles = {p.metadata.labels.get("app.kubernetes.io/component") for p in pods}
            if roles >= set(ROLES):
                break
            assert time.monotonic() < deadline, f"no Pods for every role yet: {roles}"
            time.sleep(1)
        for pod in pods:
            (container,) = pod.spec.containers
            role = pod.metadata.labels["app.kubernetes.io/component"]
            assert container.args == ["--role", role, "--config", SETTINGS_PATH]
            assert container.image == "registry.test/nexus:test"

        _check_permissions(api, namespace, release)

        status = helm("status", release, "--kubeconfig", kubeconfig, "--namespace", namespace)
        assert "STATUS: deployed" in status.stdout
        helm(
            "uninstall",
            release,
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "120s",
        )
        assert all(_get(dynamic, doc, namespace) is None for doc in docs)
    finally:
        _remove_release(helm, kubeconfig, release, namespace, core)


# --- roles for people ------------------------------------------------------------------


def _as(kubeconfig: str, user: str):
    """An API client that acts as ``user`` (impersonation by the test's admin identity)."""
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=kubeconfig)
    api.set_default_header("Impersonate-User", user)
    return api


def _word_stats_template(name: str) -> dict:
    docs = yaml.safe_load_all((REPO / "examples" / "templates" / "word-stats.yaml").read_text())
    (template,) = [d for d in docs if d and d["kind"] == "NexusAlgorithmTemplate"]
    template["metadata"] = {"name": name}
    return template


def test_people_bound_to_edit_or_view_get_templates_through_aggregation(
    helm, kube, values_file: Path
) -> None:
    """The chart's people roles aggregate into Kubernetes' own `edit` and `view`: a
    ServiceAccount bound only to `edit` creates a template, one bound only to `view` reads
    templates but cannot create one, and one bound to nothing can do neither. The API
    server's authorizer and the aggregation controller decide, not the test."""
    from kubernetes.client import CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api
    from kubernetes.client.exceptions import ApiException

    kubeconfig, api = kube
    core, rbac = CoreV1Api(api), RbacAuthorizationV1Api(api)
    namespace = f"nexus-people-{uuid.uuid4().hex[:8]}"
    release = "people"
    group = ("science.sneaksanddata.com", "v1", namespace, "nexusalgorithmtemplates")
    try:
        _install_release(helm, kubeconfig, release, namespace, values_file)
        for account, role in (("editor", "edit"), ("viewer", "view"), ("nobody", None)):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
            if role:
                rbac.create_namespaced_role_binding(
                    namespace,
                    {
                        "metadata": {"name": account},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": role,
                        },
                        "subjects": [
                            {"kind": "ServiceAccount", "name": account, "namespace": namespace}
                        ],
                    },
                )
        editor, viewer, nobody = (
            CustomObjectsApi(_as(kubeconfig, f"system:serviceaccount:{namespace}:{account}"))
            for account in ("editor", "viewer", "nobody")
        )

        # The aggregation controller copies the rules into `edit` a moment after install.
        deadline = time.monotonic() + 90
        while True:
            try:
                editor.create_namespaced_custom_object(*group, _word_stats_template("by-editor"))
                break
            except ApiException as exc:
                assert exc.status == 403, exc
                assert time.monotonic() < deadline, f"`edit` never allowed it: {exc.body}"
                time.sleep(1)

        listed = viewer.list_namespaced_custom_object(*group)
        assert [t["metadata"]["name"] for t in listed["items"]] == ["by-editor"]
        for client, action in ((viewer, "create"), (nobody, "create"), (nobody, "list")):
            with pytest.raises(ApiException) as refused:
                if action == "create":
                    client.create_namespaced_custom_object(*group, _word_stats_template("no"))
                else:
                    client.list_namespaced_custom_object(*group)
            assert refused.value.status == 403
        editor.delete_namespaced_custom_object(*group, "by-editor")
    finally:
        _remove_release(helm, kubeconfig, release, namespace, core)
