"""The Go apps' settings keys and environment names (nexus.settings_go), on nexus's."""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from nexus.errors import ConfigError
from nexus.logs import configure_logging
from nexus.settings import Settings, load_settings, load_settings_and_warnings
from nexus.settings_go import GO_KEYS, Alias, AstraBundle, Ignored

GO_APPS = Path(__file__).resolve().parents[1] / "go_apps"
APPS = ("scheduler", "receiver", "supervisor")


def _yaml(folder: Path, tree: dict[str, Any], name: str = "appconfig.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(tree))
    return path


def _tree(key: str, value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    node = tree
    *sections, last = key.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    return tree


def _env_name(key: str) -> str:
    return "NEXUS__" + "__".join(part.upper().replace("-", "_") for part in key.split("."))


def _value(settings: Settings, path: str) -> Any:
    node: Any = settings
    for part in path.split("."):
        node = getattr(node, part.replace("-", "_"))
    return node


def chart_env(app: str) -> dict[str, str]:
    """What the Go app's chart sets (tests/go_apps/<app>/chart-env.yaml), Secrets too."""
    doc = yaml.safe_load((GO_APPS / app / "chart-env.yaml").read_text())
    return {**doc["env"], **doc["secrets"]}


def bundle_base64() -> str:
    """A stand-in AstraDB bundle: a zip with the files the Go loader reads from it."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("config.json", '{"host": "db.example.com", "cql_port": 29042}')
        for name in ("ca.crt", "cert", "key"):
            archive.writestr(name, "-----BEGIN CERTIFICATE-----\n")
    return base64.b64encode(data.getvalue()).decode()


# --- every alias, from the file and from the environment ---------------------------------

# A Go value, the nexus setting it stands for and the value nexus reads, for each Alias
# in GO_KEYS (written out here, not read from the table, so a wrong target fails).
ALIAS_CASES: dict[str, tuple[Any, str, Any]] = {
    "s3-buffer.buffer-config.payload-storage-path": (
        "s3a://bucket/go",
        "s3-buffer.payload-storage-path",
        "s3a://bucket/go",
    ),
    "s3-buffer.buffer-config.payload-valid-for": ("90m", "s3-buffer.payload-valid-for", 5400.0),
    "astra-cql-store.gateway-user": ("astra-user", "scylla-cql-store.user", "astra-user"),
    "astra-cql-store.gateway-password": ("astra-pass", "scylla-cql-store.password", "astra-pass"),
    "astra-cql-store.indexes-supported": ("true", "scylla-cql-store.indexes-supported", True),
    "cql-store.gateway-user": ("old-user", "scylla-cql-store.user", "old-user"),
    "cql-store.gateway-password": ("old-pass", "scylla-cql-store.password", "old-pass"),
    "cql-store.indexes-supported": ("true", "scylla-cql-store.indexes-supported", True),
    "keyspaces-cql-store.hosts": (
        "cassandra.eu-central-1.amazonaws.com",
        "scylla-cql-store.hosts",
        ["cassandra.eu-central-1.amazonaws.com"],
    ),
    "keyspaces-cql-store.port": ("9142", "scylla-cql-store.port", 9142),
    "keyspaces-cql-store.ca-path": ("/etc/ks.pem", "scylla-cql-store.tls-ca-path", "/etc/ks.pem"),
    "resource-namespace": ("algorithms", "runtime-namespace", "algorithms"),
    "external-hostname": ("nexus.example.com", "external-url", "https://nexus.example.com"),
    "alias": ("controller-eu", "controller.alias", "controller-eu"),
    "controller-config-path": (
        "/app/controller.kubeconfig",
        "kube-config-path",
        "/app/controller.kubeconfig",
    ),
    "shard-config-path": ("/app/shards", "shard-kube-config-path", "/app/shards"),
    "controller-namespace": ("nexus-ctl", "controller.namespace", "nexus-ctl"),
    "workers": ("4", "controller.workers", 4),
    "failure-rate-base-delay": ("2s", "controller.failure-rate-base-delay", 2.0),
    "failure-rate-max-delay": ("5m", "controller.failure-rate-max-delay", 300.0),
    "rate-limit-elements-per-second": ("7", "controller.rate-limit-elements-per-second", 7.0),
    "rate-limit-elements-burst": ("9", "controller.rate-limit-elements-burst", 9),
}


def test_every_alias_has_a_case():
    aliases = {key for key, entry in GO_KEYS.items() if isinstance(entry, Alias)}
    assert aliases == set(ALIAS_CASES)


@pytest.mark.parametrize("key", sorted(ALIAS_CASES))
def test_a_go_key_in_the_file_sets_its_nexus_setting(tmp_path, key):
    go_value, target, expected = ALIAS_CASES[key]
    settings, warnings = load_settings_and_warnings(_yaml(tmp_path, _tree(key, go_value)), {})
    assert _value(settings, target) == expected
    assert len(warnings) == (1 if getattr(GO_KEYS[key], "note", "") else 0)
    assert all("only --role controller reads it" in w for w in warnings)


@pytest.mark.parametrize("key", sorted(ALIAS_CASES))
def test_a_go_environment_name_sets_its_nexus_setting(key):
    go_value, target, expected = ALIAS_CASES[key]
    settings, warnings = load_settings_and_warnings(None, {_env_name(key): str(go_value)})
    assert _value(settings, target) == expected
    assert len(warnings) == (1 if getattr(GO_KEYS[key], "note", "") else 0)
    assert all("only --role controller reads it" in w for w in warnings)


def test_keyspaces_ca_path_turns_tls_on(tmp_path):
    path = _yaml(tmp_path, {"keyspaces-cql-store": {"ca-path": "/etc/ca.pem", "region": "x"}})
    assert load_settings(path, {}).scylla_cql_store.tls is True
    assert load_settings(None, {}).scylla_cql_store.tls is False


def test_the_nexus_key_wins_over_its_go_name_in_one_place(tmp_path):
    path = _yaml(tmp_path, {"runtime-namespace": "nexus-own", "resource-namespace": "go"})
    assert load_settings(path, {}).runtime_namespace == "nexus-own"
    environ = {"NEXUS__RUNTIME_NAMESPACE": "nexus-own", "NEXUS__RESOURCE_NAMESPACE": "go"}
    assert load_settings(None, environ).runtime_namespace == "nexus-own"


def test_the_environment_wins_over_the_file_whichever_names_it_uses(tmp_path):
    path = _yaml(tmp_path, {"s3-buffer": {"payload-storage-path": "s3a://file/x"}})
    environ = {"NEXUS__S3_BUFFER__BUFFER_CONFIG__PAYLOAD_STORAGE_PATH": "s3a://env/y"}
    assert load_settings(path, environ).s3_buffer.payload_storage_path == "s3a://env/y"


# --- ignored keys: accepted, one warning each ------------------------------------------

IGNORED = sorted(key for key, entry in GO_KEYS.items() if isinstance(entry, Ignored))


@pytest.mark.parametrize("key", IGNORED)
def test_a_key_without_meaning_is_accepted_with_one_warning_naming_it(tmp_path, key):
    path = _yaml(tmp_path, _tree(key, "7"))
    settings, warnings = load_settings_and_warnings(path, {_env_name(key): "8"})
    assert settings == load_settings(None, {})
    assert len(warnings) == 1, warnings
    assert key in warnings[0] and "ignored" in warnings[0]


def test_each_ignored_key_gets_its_own_warning():
    environ = {_env_name(key): "1" for key in IGNORED}
    _, warnings = load_settings_and_warnings(None, environ)
    assert len(warnings) == len(IGNORED)
    for key in IGNORED:
        assert sum(f"Setting {key} " in warning for warning in warnings) == 1, key


# --- misspellings are still refused, with their name -----------------------------------


@pytest.mark.parametrize(
    ("tree", "name"),
    [
        ({"astra-cql-store": {"gateway-usr": "u"}}, "astra-cql-store.gateway-usr"),
        ({"cql-store": {"secure-bundle": "x"}}, "cql-store.secure-bundle"),
        ({"keyspaces-cql-store": {"hots": ["h"]}}, "keyspaces-cql-store.hots"),
        (
            {"s3-buffer": {"buffer-config": {"payload-storage-pth": "s3a://b"}}},
            "payload-storage-pth",
        ),
        ({"worker": 2}, "worker"),
        ({"resource-namepace": "x"}, "resource-namepace"),
        ({"scylla-cql-store": {"indexes-suported": True}}, "indexes-suported"),
        ({"astra-cql-store": "bundle"}, "astra-cql-store"),
        # an empty value (the Go files' "not set") does not hide a misspelling
        ({"resource-namepace": ""}, "resource-namepace"),
        ({"scylla-cql-store": {"prot": ""}}, "prot"),
        ({"astra-cql-store": {"gateway-usr": ""}}, "astra-cql-store.gateway-usr"),
    ],
)
def test_a_misspelled_key_in_the_file_is_refused_by_name(tmp_path, tree, name):
    with pytest.raises(ConfigError) as caught:
        load_settings(_yaml(tmp_path, tree), {})
    assert name in caught.value.message


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NEXUS__ASTRA_CQL_STORE__GATEWAY_USR", "astra-cql-store.gateway-usr"),
        ("NEXUS__KEYSPACES_CQL_STORE__REGON", "keyspaces-cql-store.regon"),
        ("NEXUS__WORKER", "worker"),
        ("NEXUS__S3_BUFFER__BUFFER_CONFIG__PAYLOAD_VALID", "payload-valid"),
    ],
)
def test_a_misspelled_environment_name_is_refused_by_name(name, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {name: "1"})
    assert name in caught.value.message and key in caught.value.message


# --- values the Go apps write differently ----------------------------------------------


def test_an_empty_value_means_the_default(tmp_path):
    path = _yaml(
        tmp_path,
        {"max-payload-size": "", "log-level": "", "scylla-cql-store": {"port": "", "hosts": []}},
    )
    assert load_settings(path, {}) == load_settings(None, {})
    # An empty environment value overrides the file with Go's zero value: the default.
    path = _yaml(tmp_path, {"max-payload-size": "1Mi"})
    assert load_settings(path, {"NEXUS__MAX_PAYLOAD_SIZE": ""}).max_payload_size == 500 * 2**20


@pytest.mark.parametrize(
    ("value", "level"),
    [("debug", "DEBUG"), ("Info", "INFO"), ("warn", "WARN"), ("DISABLED", "DISABLED")],
)
def test_log_levels_ignore_case_as_in_go(value, level):
    assert load_settings(None, {"NEXUS__LOG_LEVEL": value}).log_level == level


def test_log_level_disabled_silences_every_logger():
    stream = io.StringIO()
    # A logger with a level of its own, as Sanic gives some of its loggers once an app
    # exists (CI ran this test after such tests and saw sanic.error get through).
    own_level = logging.getLogger("sanic.error")
    previous = own_level.level
    own_level.setLevel(logging.INFO)
    try:
        configure_logging(SimpleNamespace(log_level="DISABLED", log_format="json"), stream)
        for name in ("nexus", "sanic.error", "cassandra.cluster"):
            logging.getLogger(name).critical("must not be written")
        assert stream.getvalue() == ""
        configure_logging(SimpleNamespace(log_level="INFO", log_format="json"), stream)
        logging.getLogger("nexus").warning("now written")
        assert "now written" in stream.getvalue()
    finally:
        own_level.setLevel(previous)
        configure_logging(SimpleNamespace(log_level="WARNING", log_format="text"))


def test_host_port_contact_points_as_gocql_takes_them(tmp_path):
    path = _yaml(tmp_path, {"scylla-cql-store": {"hosts": ["10.0.0.1:9142", "[::1]:9142"]}})
    cql = load_settings(path, {}).scylla_cql_store
    assert (cql.hosts, cql.port) == (["10.0.0.1", "::1"], 9142)
    environ = {"NEXUS__SCYLLA_CQL_STORE__HOSTS": "db-1:9042,db-2:9042"}
    cql = load_settings(None, environ).scylla_cql_store
    assert (cql.hosts, cql.port) == (["db-1", "db-2"], 9042)
    assert load_settings(
        None, {"NEXUS__SCYLLA_CQL_STORE__HOSTS": "::1"}
    ).scylla_cql_store.hosts == ["::1"]
    for hosts, port in (("db-1:9042,db-2:9043", ""), ("db-1:9042", "9142")):
        environ = {"NEXUS__SCYLLA_CQL_STORE__HOSTS": hosts, "NEXUS__SCYLLA_CQL_STORE__PORT": port}
        with pytest.raises(ConfigError) as caught:
            load_settings(None, environ)
        assert "scylla-cql-store.hosts" in caught.value.message


@pytest.mark.parametrize(
    "store_type", ["astra", "scylla", "cassandra-astra", "cassandra-scylla", "cassandra-keyspaces"]
)
def test_the_go_store_types_are_accepted(store_type):
    environ = {"NEXUS__CQL_STORE_TYPE": store_type, "NEXUS__SCYLLA_CQL_STORE__HOSTS": "h1"}
    assert load_settings(None, environ).cql_store_type == store_type


# --- the AstraDB bundle ------------------------------------------------------------------


@pytest.mark.parametrize("section", ["astra-cql-store", "cql-store"])
def test_the_base64_bundle_becomes_a_file_under_data_dir(tmp_path, section):
    text = bundle_base64()
    environ = {
        "NEXUS__DATA_DIR": str(tmp_path / "data"),
        "NEXUS__CQL_STORE_TYPE": "cassandra-astra",
        _env_name(f"{section}.secure-connection-bundle-base64"): text,
        _env_name(f"{section}.gateway-user"): "token-user",
        _env_name(f"{section}.gateway-password"): "token-secret",
    }
    cql = load_settings(None, environ).scylla_cql_store
    bundle = Path(cql.secure_connect_bundle)
    assert bundle.parent.parent == tmp_path / "data"
    assert bundle.read_bytes() == base64.b64decode(text)
    assert (bundle.stat().st_mode & 0o777) == 0o600
    assert (cql.user, cql.password) == ("token-user", "token-secret")
    # A second process on the same folder finds the same file.
    assert load_settings(None, environ).scylla_cql_store.secure_connect_bundle == str(bundle)


def test_a_configured_bundle_path_wins_over_the_base64_one(tmp_path):
    environ = {
        "NEXUS__DATA_DIR": str(tmp_path),
        "NEXUS__SCYLLA_CQL_STORE__SECURE_CONNECT_BUNDLE": "/etc/bundle.zip",
        "NEXUS__ASTRA_CQL_STORE__SECURE_CONNECTION_BUNDLE_BASE64": bundle_base64(),
    }
    assert load_settings(None, environ).scylla_cql_store.secure_connect_bundle == "/etc/bundle.zip"
    assert not (tmp_path / "astra").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("base64value", "is not base64"), (base64.b64encode(b"plain").decode(), "zip file")],
)
def test_a_bad_bundle_is_refused_by_name(tmp_path, text, fragment):
    environ = {
        "NEXUS__DATA_DIR": str(tmp_path),
        "NEXUS__CQL_STORE__SECURE_CONNECTION_BUNDLE_BASE64": text,
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ)
    assert "cql-store.secure-connection-bundle-base64" in caught.value.message
    assert "NEXUS__CQL_STORE__SECURE_CONNECTION_BUNDLE_BASE64" in caught.value.message
    assert fragment in caught.value.message


def test_every_go_key_kind_is_known():
    assert all(isinstance(entry, Alias | Ignored | AstraBundle) for entry in GO_KEYS.values())


# --- APPLICATION_ENVIRONMENT ---------------------------------------------------------------


def test_application_environment_picks_the_file_next_to_the_given_one(tmp_path):
    given = _yaml(tmp_path, {"runtime-namespace": "base", "deploy-namespace": "base"})
    _yaml(tmp_path, {"runtime-namespace": "local"}, "appconfig.local.yaml")
    assert load_settings(given, {}).runtime_namespace == "base"
    chosen = load_settings(given, {"APPLICATION_ENVIRONMENT": "Local"})
    # The environment's file replaces the given one, as in the Go loader: no merging.
    assert (chosen.runtime_namespace, chosen.deploy_namespace) == ("local", "default")
    missing = load_settings(given, {"APPLICATION_ENVIRONMENT": "production"})
    assert missing.runtime_namespace == "base"


# --- each Go app's own file and chart environment ---------------------------------------


@pytest.mark.parametrize("app", APPS)
def test_each_go_apps_shipped_file_and_chart_env_load(app):
    environ = {
        **chart_env(app),
        "NEXUS__CQL_STORE_TYPE": "scylla",
        "NEXUS__SCYLLA_CQL_STORE__HOSTS": "10.0.0.1,10.0.0.2",
    }
    settings, warnings = load_settings_and_warnings(GO_APPS / app / "appconfig.yaml", environ)
    assert settings.cql_store_type == "scylla"
    assert settings.scylla_cql_store.hosts == ["10.0.0.1", "10.0.0.2"]
    assert settings.log_level == "INFO"
    ignored = sorted(key for key in GO_KEYS if f"Setting {key} " in " ".join(warnings))
    if app == "scheduler":
        s3 = settings.s3_buffer
        assert s3.payload_storage_path == "s3a://bucket/prefix"
        assert s3.payload_valid_for == 86400.0
        assert s3.buffer_config.workers == 2 and s3.buffer_config.rate_limit_elements_burst == 100
        assert settings.max_payload_size == 500 * 2**20
        assert (settings.runtime_namespace, settings.deploy_namespace) == ("nexus", "nexus")
        assert settings.shard_kube_config_path == "/app/config/shards"
        assert warnings == []
    else:
        assert ignored == sorted(
            [
                "failure-rate-base-delay",
                "failure-rate-max-delay",
                "rate-limit-elements-burst",
                "rate-limit-elements-per-second",
                "workers",
            ]
        )
        assert len(warnings) == 5
    if app == "receiver":
        assert settings.bind_port == 8080
    if app == "supervisor":
        assert settings.runtime_namespace == "nexus"
