"""Settings: YAML file + NEXUS__A__B env overrides, validated with the bad key named."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nexus.errors import ConfigError
from nexus.settings import ByteSize, Duration, Settings, load_settings


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nexus.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env():
    settings = load_settings(environ={})
    assert isinstance(settings, Settings)
    assert settings.cql_store_type == "sqlite"
    assert settings.executor == "local"
    assert settings.max_payload_size == 500 * 1024 * 1024
    assert settings.s3_buffer.payload_valid_for == 86400.0
    limits = settings.s3_buffer.buffer_config
    # Defaults must protect a stock API server (SPEC §6): a bounded rate and burst.
    assert 0 < limits.rate_limit_elements_per_second <= 100
    assert 1 <= limits.rate_limit_elements_burst <= 500
    assert limits.max_attempts >= 1 and limits.queue_capacity >= 1
    assert settings.kubernetes.job_ttl_seconds_after_finished == 300
    assert settings.supervisor.disruption_limit == 3


def test_yaml_file_is_read_with_go_key_names(tmp_path):
    path = _yaml(
        tmp_path,
        """
data-dir: /srv/nexus
cql-store-type: scylla
scylla-cql-store:
  hosts: [10.0.0.1, 10.0.0.2]
  keyspace: runs
s3-buffer:
  payload-storage-path: s3a://bucket/prefix
  payload-valid-for: 6h
  buffer-config:
    failure-rate-base-delay: 250ms
    failure-rate-max-delay: 1m
    rate-limit-elements-per-second: 5
    rate-limit-elements-burst: 10
max-payload-size: 10Mi
""",
    )
    settings = load_settings(path, environ={})
    assert settings.data_dir == "/srv/nexus"
    assert settings.cql_store_type == "scylla"
    assert settings.scylla_cql_store.hosts == ["10.0.0.1", "10.0.0.2"]
    assert settings.scylla_cql_store.keyspace == "runs"
    assert settings.s3_buffer.payload_storage_path == "s3a://bucket/prefix"
    assert settings.s3_buffer.payload_valid_for == 6 * 3600
    limits = settings.s3_buffer.buffer_config
    assert limits.failure_rate_base_delay == pytest.approx(0.25)
    assert limits.failure_rate_max_delay == 60.0
    assert limits.rate_limit_elements_per_second == 5.0
    assert limits.rate_limit_elements_burst == 10
    assert settings.max_payload_size == 10 * 2**20


def test_env_overrides_the_file(tmp_path):
    path = _yaml(tmp_path, "bind-port: 9000\ns3-buffer:\n  buffer-config:\n    workers: 3\n")
    settings = load_settings(
        path,
        environ={
            "NEXUS__BIND_PORT": "9100",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": "0.2",
            "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
            "UNRELATED": "ignored",
            "NEXUSX__BIND_PORT": "1",
        },
    )
    assert settings.bind_port == 9100
    limits = settings.s3_buffer.buffer_config
    assert limits.workers == 3  # kept from the file: overrides merge, they do not replace
    assert limits.rate_limit_elements_per_second == pytest.approx(0.2)
    assert limits.rate_limit_elements_burst == 1


def test_keyword_overrides_win_over_env():
    settings = load_settings(environ={"NEXUS__BIND_PORT": "9100"}, bind_port=9200)
    assert settings.bind_port == 9200


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NEXUS__MAX_WAIT", "90s", 90.0),
        ("NEXUS__MAX_WAIT", "1m30s", 90.0),
        ("NEXUS__MAX_WAIT", "100ms", 0.1),
        ("NEXUS__MAX_WAIT", "15", 15.0),
        ("NEXUS__SUPERVISOR__JOB_SUCCESS_GRACE", "2h", 7200.0),
        ("NEXUS__S3_BUFFER__PAYLOAD_VALID_FOR", "24h", 86400.0),
        ("NEXUS__SCYLLA_CQL_STORE__CHECKPOINT_TTL", "87600h", 87600 * 3600.0),
    ],
)
def test_durations(name, value, expected):
    settings = load_settings(environ={name: value})
    section, _, key = name.removeprefix("NEXUS__").lower().rpartition("__")
    node = settings
    for part in filter(None, section.split("__")):
        node = getattr(node, part)
    got = getattr(node, key)
    assert isinstance(got, Duration)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1Ki", 1024), ("500Mi", 500 * 2**20), ("2Gi", 2 * 2**30), ("1k", 1000), ("4096", 4096)],
)
def test_quantities(value, expected):
    settings = load_settings(environ={"NEXUS__MAX_PAYLOAD_SIZE": value})
    assert isinstance(settings.max_payload_size, ByteSize)
    assert settings.max_payload_size == expected


def test_lists_from_a_comma_separated_env_value():
    settings = load_settings(
        environ={
            "NEXUS__SCYLLA_CQL_STORE__HOSTS": " 10.0.0.1, 10.0.0.2,,10.0.0.3 ",
        }
    )
    assert settings.scylla_cql_store.hosts == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_tenant_weights_and_limits_from_yaml_and_env(tmp_path):
    path = tmp_path / "nexus.yaml"
    path.write_text(
        "s3-buffer:\n  buffer-config:\n    tenants:\n"
        "      queued-run-limit: 500\n      weights: {team-a: 3}\n"
    )
    settings = load_settings(
        path,
        environ={"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__LIMITS": "team-a=10, team-b=0"},
    )
    tenants = settings.s3_buffer.buffer_config.tenants
    assert tenants.queued_run_limit == 500
    assert tenants.weights == {"team-a": 3}
    assert tenants.limits == {"team-a": 10, "team-b": 0}
    assert load_settings(environ={}).s3_buffer.buffer_config.tenants.queued_run_limit == 0


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__WEIGHTS": "team-a=0"}, "weights.team-a"),
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__LIMITS": "team-a=-1"}, "limits.team-a"),
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__LIMITS": "team-a"}, "key=value"),
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__QUEUED_RUN_LIMIT": "-5"}, "queued-run-limit"),
    ],
)
def test_bad_tenant_settings_name_the_key(environ, names):
    with pytest.raises(ConfigError, match=names):
        load_settings(environ=environ)


def test_env_bool_and_numbers_are_converted():
    settings = load_settings(
        environ={
            "NEXUS__S3_BUFFER__VIRTUAL_HOSTED_STYLE": "true",
            "NEXUS__SCYLLA_CQL_STORE__PORT": "19042",
            "NEXUS__KUBERNETES__CLIENT_QPS": "7.5",
        }
    )
    assert settings.s3_buffer.virtual_hosted_style is True
    assert settings.scylla_cql_store.port == 19042
    assert settings.kubernetes.client_qps == 7.5


# --- every error names the key ---------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"NEXUS__NO_SUCH_KEY": "1"}, ["NEXUS__NO_SUCH_KEY", "no-such-key"]),
        ({"NEXUS__S3_BUFFER__NOPE": "1"}, ["NEXUS__S3_BUFFER__NOPE", "s3-buffer.nope"]),
        ({"NEXUS__S3_BUFFER": "x"}, ["NEXUS__S3_BUFFER", "section"]),
        ({"NEXUS__MAX_WAIT__X": "1"}, ["NEXUS__MAX_WAIT__X", "max-wait"]),
        ({"NEXUS__MAX_WAIT": "soon"}, ["max-wait", "soon"]),
        ({"NEXUS__S3_BUFFER__PAYLOAD_VALID_FOR": "-1s"}, ["s3-buffer.payload-valid-for"]),
        ({"NEXUS__MAX_WAIT": "inf"}, ["max-wait", "not a finite duration"]),
        ({"NEXUS__MAX_WAIT": "nan"}, ["max-wait", "not a finite duration"]),
        (
            {"NEXUS__SCYLLA_CQL_STORE__CHECKPOINT_TTL": "1e309"},
            ["scylla-cql-store.checkpoint-ttl", "not a finite duration"],
        ),
        (
            {"NEXUS__SUPERVISOR__LEASE_TTL": "999999999999"},
            ["supervisor.lease-ttl", "longer than the allowed 876000h"],
        ),
        ({"NEXUS__MAX_PAYLOAD_SIZE": "1Zi"}, ["max-payload-size", "1Zi"]),
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "many"}, ["s3-buffer.buffer-config.workers"]),
        ({"NEXUS__LOG_LEVEL": "LOUD"}, ["log-level"]),
        ({"NEXUS__CQL_STORE_TYPE": "mongo"}, ["cql-store-type"]),
        ({"NEXUS__BIND_PORT": "http"}, ["bind-port"]),
    ],
)
def test_env_errors_name_the_key(environ, names):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    for name in names:
        assert name in caught.value.message


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("nope: 1\n", ["nope"]),
        ("s3-buffer:\n  buffer-config:\n    wrokers: 2\n", ["wrokers", "s3-buffer.buffer-config"]),
        ("s3-buffer:\n  buffer-config:\n    workers: two\n", ["s3-buffer.buffer-config.workers"]),
        ("max-wait: forever\n", ["max-wait"]),
        ("max-payload-size: lots\n", ["max-payload-size"]),
        ("scylla-cql-store:\n  hosts: 10.0.0.1\n", ["scylla-cql-store.hosts"]),
        ("supervisor: 5\n", ["supervisor"]),
    ],
)
def test_yaml_errors_name_the_key(tmp_path, text, names):
    with pytest.raises(ConfigError) as caught:
        load_settings(_yaml(tmp_path, text), environ={})
    for name in names:
        assert name in caught.value.message


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS": "0"}, "s3-buffer.buffer-config.workers"),
        (
            {"NEXUS__S3_BUFFER__BUFFER_CONFIG__MAX_ATTEMPTS": "0"},
            "s3-buffer.buffer-config.max-attempts",
        ),
        (
            {"NEXUS__S3_BUFFER__BUFFER_CONFIG__QUEUE_CAPACITY": "0"},
            "s3-buffer.buffer-config.queue-capacity",
        ),
        (
            {"NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "0"},
            "s3-buffer.buffer-config.rate-limit-elements-burst",
        ),
        ({"NEXUS__BIND_PORT": "-1"}, "bind-port"),
        ({"NEXUS__MAX_PAYLOAD_SIZE": "0"}, "max-payload-size"),
        ({"NEXUS__SUPERVISOR__DISRUPTION_LIMIT": "-1"}, "supervisor.disruption-limit"),
        (
            {"NEXUS__S3_BUFFER__BUFFER_CONFIG__FAILURE_RATE_BASE_DELAY": "10s"},
            "s3-buffer.buffer-config.failure-rate-base-delay",
        ),
        ({"NEXUS__CQL_STORE_TYPE": "scylla"}, "scylla-cql-store.hosts"),
    ],
)
def test_range_checks_name_the_key(environ, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert key in caught.value.message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read settings file"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_invalid_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_yaml(tmp_path, "a: [unclosed\n"), environ={})


def test_yaml_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(_yaml(tmp_path, "- a\n- b\n"), environ={})


def test_empty_yaml_means_defaults(tmp_path):
    assert load_settings(_yaml(tmp_path, ""), environ={}).bind_port == Settings().bind_port


def test_public_and_receiver_urls():
    settings = load_settings(environ={"NEXUS__BIND_PORT": "8123"})
    assert settings.public_url == "http://127.0.0.1:8123"
    assert settings.receiver_base_url == settings.public_url
    settings = load_settings(
        environ={
            "NEXUS__EXTERNAL_URL": "https://nexus.example/",
            "NEXUS__RECEIVER_URL": "https://receiver.example/",
        }
    )
    assert settings.public_url == "https://nexus.example"
    assert settings.receiver_base_url == "https://receiver.example"


@pytest.mark.parametrize("bind_host", ["0.0.0.0", "::"])
def test_a_wildcard_bind_address_is_reached_by_host_name(bind_host):
    """Signed URLs naming 0.0.0.0 work nowhere: the image binds 0.0.0.0 by default."""
    settings = load_settings(environ={"NEXUS__BIND_HOST": bind_host, "NEXUS__BIND_PORT": "9000"})
    assert settings.public_url == f"http://{socket.gethostname()}:9000"


def test_an_ipv6_bind_address_is_bracketed():
    settings = load_settings(environ={"NEXUS__BIND_HOST": "::1", "NEXUS__BIND_PORT": "9000"})
    assert settings.public_url == "http://[::1]:9000"


def test_auth_defaults_to_none_and_reads_oidc_rules_from_yaml(tmp_path):
    assert load_settings(environ={}).auth.mode == "none"
    path = tmp_path / "settings.yaml"
    path.write_text(
        "auth:\n"
        "  mode: oidc\n"
        "  cache-ttl: 30s\n"
        "  oidc: {issuer: 'https://idp.example', audience: nexus, groups-claim: roles}\n"
        "  rules:\n"
        "    - {groups: [team-a], algorithms: ['team-a-*']}\n"
        "    - {groups: [auditors], algorithms: ['*'], verbs: [get]}\n"
    )
    auth = load_settings(path, environ={}).auth
    assert auth.cache_ttl == 30.0 and auth.oidc.algorithms == ["RS256", "ES256"]
    assert auth.oidc.groups_claim == "roles" and auth.oidc.user_claim == "sub"
    assert auth.rules[0].verbs == ["create", "get", "update", "delete"]
    assert auth.rules[1].verbs == ["get"]


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"NEXUS__AUTH__MODE": "oidc"}, "auth.oidc.issuer"),
        (
            {"NEXUS__AUTH__MODE": "oidc", "NEXUS__AUTH__OIDC__ISSUER": "https://i"},
            "auth.oidc.audience",
        ),
        ({"NEXUS__AUTH__MODE": "open"}, "auth.mode"),
        ({"NEXUS__AUTH__CACHE_TTL": "-1s"}, "auth.cache-ttl"),
        ({"NEXUS__AUTH__RECEIVER_TOKENS": "maybe"}, "auth.receiver-tokens"),
        ({"NEXUS__AUTH__RECEIVER_TOKEN_SECRET": "short"}, "auth.receiver-token-secret"),
        ({"NEXUS__AUTH__RECEIVER_TOKEN_LIFETIME": "0s"}, "auth.receiver-token-lifetime"),
        ({"NEXUS__AUTH__RECEIVER_TOKEN_LIFETIME": "-5m"}, "auth.receiver-token-lifetime"),
        ({"NEXUS__AUTH__CALLER_RATE": "-1"}, "auth.caller-rate"),
        ({"NEXUS__AUTH__CALLER_RATE": "nan"}, "auth.caller-rate"),
        ({"NEXUS__AUTH__CALLER_RATE": "1e300"}, "auth.caller-rate"),
        ({"NEXUS__AUTH__CALLER_RATE": "fast"}, "auth.caller-rate"),
        ({"NEXUS__AUTH__CALLER_BURST": "0"}, "auth.caller-burst"),
        (
            {"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__TENANT_BY": "caller"},
            "tenants.tenant-by caller needs auth.mode",
        ),
        ({"NEXUS__S3_BUFFER__BUFFER_CONFIG__TENANTS__TENANT_BY": "user"}, "tenant-by"),
        ({"NEXUS__AUTH__CALLER_BURST": "99999999999999999999"}, "auth.caller-burst"),
    ],
)
def test_bad_auth_settings_name_the_key(environ, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_settings(environ=environ)


@pytest.mark.parametrize("algorithm", ["none", "HS256", "hs512", "RS1"])
def test_oidc_refuses_algorithms_that_verify_nothing(algorithm):
    environ = {
        "NEXUS__AUTH__MODE": "oidc",
        "NEXUS__AUTH__OIDC__ISSUER": "https://idp.example",
        "NEXUS__AUTH__OIDC__AUDIENCE": "nexus",
        "NEXUS__AUTH__OIDC__ALGORITHMS": f"RS256,{algorithm}",
    }
    with pytest.raises(ConfigError, match=r"auth\.oidc\.algorithms may not hold"):
        load_settings(environ=environ)
