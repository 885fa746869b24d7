"""Where the real test servers are, from the environment `scripts/testenv env` prints.

A test that needs a server and finds no address fails when NEXUS_TEST_REQUIRE_SERVERS=1
(CI: a server that did not start must not turn into a silent skip) and is skipped
otherwise (a laptop without the servers).

Shared by tests/contract and tests/integration (imported as ``contract.servers``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus.settings import S3Buffer, ScyllaCqlStore

REPO = Path(__file__).resolve().parents[2]
TESTENV = REPO / "scripts" / "testenv"
CASSANDRA_VARS = (
    "NEXUS_TEST_CASSANDRA_HOSTS",
    "NEXUS_TEST_CASSANDRA_PORT",
    "NEXUS_TEST_CASSANDRA_USER",
    "NEXUS_TEST_CASSANDRA_PASSWORD",
)
S3_VARS = (
    "NEXUS_TEST_S3_ENDPOINT",
    "NEXUS_TEST_S3_ACCESS_KEY_ID",
    "NEXUS_TEST_S3_SECRET_ACCESS_KEY",
    "NEXUS_TEST_S3_BUCKET",
    "NEXUS_TEST_S3_REGION",
)


def require(component: str, names: tuple[str, ...]) -> dict[str, str]:
    values = {name: os.environ.get(name, "") for name in names}
    missing = [name for name, value in values.items() if not value]
    if missing:
        setup = f'scripts/testenv up {component} && eval "$(scripts/testenv env {component})"'
        message = (
            f"needs the {component} test server but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: run `{setup}`"
        )
        if os.environ.get("NEXUS_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail(message + " (NEXUS_TEST_REQUIRE_SERVERS=1 forbids skipping)", pytrace=False)
        pytest.skip(message)
    return values


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def cassandra_config(keyspace: str, **overrides) -> ScyllaCqlStore:
    env = require("cassandra", CASSANDRA_VARS)
    settings = {
        "hosts": env["NEXUS_TEST_CASSANDRA_HOSTS"].split(","),
        "port": int(env["NEXUS_TEST_CASSANDRA_PORT"]),
        "keyspace": keyspace,
        "user": env["NEXUS_TEST_CASSANDRA_USER"],
        "password": env["NEXUS_TEST_CASSANDRA_PASSWORD"],
    }
    return ScyllaCqlStore(**{**settings, **overrides})


def s3_config(prefix: str, **overrides) -> S3Buffer:
    env = require("seaweedfs", S3_VARS)
    return S3Buffer(
        payload_storage_path=f"s3a://{env['NEXUS_TEST_S3_BUCKET']}/{prefix}",
        endpoint=env["NEXUS_TEST_S3_ENDPOINT"],
        access_key_id=env["NEXUS_TEST_S3_ACCESS_KEY_ID"],
        secret_access_key=env["NEXUS_TEST_S3_SECRET_ACCESS_KEY"],
        region=env["NEXUS_TEST_S3_REGION"],
        **overrides,
    )


def cassandra_settings_env(keyspace: str) -> dict[str, str]:
    """``NEXUS__...`` overrides that point a nexus process at the test Cassandra."""
    env = require("cassandra", CASSANDRA_VARS)
    return {
        "NEXUS__CQL_STORE_TYPE": "cassandra",
        "NEXUS__SCYLLA_CQL_STORE__HOSTS": env["NEXUS_TEST_CASSANDRA_HOSTS"],
        "NEXUS__SCYLLA_CQL_STORE__PORT": env["NEXUS_TEST_CASSANDRA_PORT"],
        "NEXUS__SCYLLA_CQL_STORE__USER": env["NEXUS_TEST_CASSANDRA_USER"],
        "NEXUS__SCYLLA_CQL_STORE__PASSWORD": env["NEXUS_TEST_CASSANDRA_PASSWORD"],
        "NEXUS__SCYLLA_CQL_STORE__KEYSPACE": keyspace,
    }


def s3_settings_env(prefix: str) -> dict[str, str]:
    """``NEXUS__...`` overrides that point a nexus process at the test S3 store."""
    env = require("seaweedfs", S3_VARS)
    return {
        "NEXUS__S3_BUFFER__PAYLOAD_STORAGE_PATH": f"s3a://{env['NEXUS_TEST_S3_BUCKET']}/{prefix}",
        "NEXUS__S3_BUFFER__ENDPOINT": env["NEXUS_TEST_S3_ENDPOINT"],
        "NEXUS__S3_BUFFER__ACCESS_KEY_ID": env["NEXUS_TEST_S3_ACCESS_KEY_ID"],
        "NEXUS__S3_BUFFER__SECRET_ACCESS_KEY": env["NEXUS_TEST_S3_SECRET_ACCESS_KEY"],
        "NEXUS__S3_BUFFER__REGION": env["NEXUS_TEST_S3_REGION"],
    }


@contextlib.contextmanager
def cql_session(keyspace: str | None = None) -> Iterator[Any]:
    """A plain driver session on the test Cassandra, for checks behind the store's back."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy
    from cassandra.query import dict_factory

    env = require("cassandra", CASSANDRA_VARS)
    profile = ExecutionProfile(
        load_balancing_policy=RoundRobinPolicy(), row_factory=dict_factory, request_timeout=60
    )
    cluster = Cluster(
        env["NEXUS_TEST_CASSANDRA_HOSTS"].split(","),
        port=int(env["NEXUS_TEST_CASSANDRA_PORT"]),
        connect_timeout=5,
        auth_provider=PlainTextAuthProvider(
            env["NEXUS_TEST_CASSANDRA_USER"], env["NEXUS_TEST_CASSANDRA_PASSWORD"]
        ),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        yield cluster.connect(keyspace)
    finally:
        cluster.shutdown()


def drop_keyspace(keyspace: str) -> None:
    """Remove a test keyspace (best effort: the server may be the one a test stopped)."""
    try:
        with cql_session() as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the test's own result
        print(f"could not drop test keyspace {keyspace}: {exc}")


def delete_prefix(prefix: str) -> None:
    """Remove every object a test session wrote under ``prefix`` (best effort)."""
    import obstore

    from nexus.backends.buffer.s3 import s3_buffer

    store = s3_buffer(s3_config(prefix)).object_store
    try:
        for chunk in obstore.list(store, prefix):
            obstore.delete(store, [item["path"] for item in chunk])
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the test's own result
        print(f"could not delete test objects under {prefix}: {exc}")


def run_testenv(command: str, component: str, *args: str, timeout: float = 300) -> None:
    """Run ``scripts/testenv <command> <component> [args]``; fail the test with its output."""
    result = subprocess.run(
        [str(TESTENV), command, component, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/testenv {' '.join((command, component, *args))} failed "
            f"({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
