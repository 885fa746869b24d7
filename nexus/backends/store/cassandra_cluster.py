"""How the Cassandra run store connects: the driver ``Cluster`` built from settings.

Token-aware routing over DC-aware round robin when ``local-dc`` is set (round robin over
every node otherwise), one default execution profile carrying the configured consistency,
serial consistency and request timeout, quick reconnection after an outage, and
password authentication, TLS or an AstraDB secure connect bundle as configured.
"""

from __future__ import annotations

import ssl
from typing import Any

from cassandra import ConsistencyLevel, DriverException
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RoundRobinPolicy,
    TokenAwarePolicy,
)
from cassandra.protocol import ErrorMessage
from cassandra.query import dict_factory

from nexus.errors import ConfigError
from nexus.settings import ScyllaCqlStore

# Everything the driver raises when the database does not answer or refuses a request.
DRIVER_ERRORS = (DriverException, ErrorMessage, NoHostAvailable, ConnectionException, OSError)


def _level(name: str, key: str) -> int:
    try:
        return ConsistencyLevel.name_to_value[name.upper()]
    except KeyError:
        raise ConfigError(
            f"Invalid settings: scylla-cql-store.{key} {name!r} is not a consistency level "
            f"(one of {', '.join(sorted(ConsistencyLevel.name_to_value))})"
        ) from None


def consistency_levels(config: ScyllaCqlStore) -> tuple[int, int]:
    """(consistency, serial consistency) from settings; ConfigError names a bad value."""
    serial = _level(config.serial_consistency, "serial-consistency")
    if serial not in (ConsistencyLevel.SERIAL, ConsistencyLevel.LOCAL_SERIAL):
        raise ConfigError(
            "Invalid settings: scylla-cql-store.serial-consistency must be SERIAL or LOCAL_SERIAL"
        )
    return _level(config.consistency, "consistency"), serial


def build_cluster(config: ScyllaCqlStore, consistency: int, serial: int) -> Cluster:
    child = (
        DCAwareRoundRobinPolicy(local_dc=config.local_dc) if config.local_dc else RoundRobinPolicy()
    )
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(child),
        consistency_level=consistency,
        serial_consistency_level=serial,
        request_timeout=config.request_timeout,
        row_factory=dict_factory,
    )
    options: dict[str, Any] = {
        "execution_profiles": {EXEC_PROFILE_DEFAULT: profile},
        "connect_timeout": config.connect_timeout,
        "control_connection_timeout": config.connect_timeout,
        "reconnection_policy": ExponentialReconnectionPolicy(
            0.5, max(0.5, config.reconnect_max_delay)
        ),
    }
    if config.user:
        options["auth_provider"] = PlainTextAuthProvider(config.user, config.password)
    if config.secure_connect_bundle:
        options["cloud"] = {"secure_connect_bundle": config.secure_connect_bundle}
        return Cluster(**options)
    if config.tls:
        # The chain is verified against tls-ca-path (or the system CAs); host names are
        # not, because contact points are usually IP addresses.
        try:
            context = ssl.create_default_context(cafile=config.tls_ca_path or None)
        except OSError as exc:
            raise ConfigError(
                f"Invalid settings: scylla-cql-store.tls-ca-path {config.tls_ca_path!r}: {exc}"
            ) from exc
        context.check_hostname = False
        options["ssl_context"] = context
    return Cluster(contact_points=config.hosts, port=config.port, **options)
