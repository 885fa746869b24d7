"""Opening a keyspace the Go system created and filled (SPEC §8b), and AWS Keyspaces.

* **Layout.** :func:`detect_layout` reads the schema: lookup tables in the Go shape
  (``PRIMARY KEY ((key), id)``) mean the Go bare layout and are used as they are; Go's
  secondary index on ``checkpoints(tag)`` without such tables means the indexed layout.
  ``scylla-cql-store.indexes-supported: true`` (the Go setting) chooses the indexed layout
  explicitly, also on a fresh keyspace (nexus then creates Go's indexes).
* **Migration** (:func:`migrate_cql`): the columns nexus adds (``cluster``,
  ``payload_valid_for``) are added with ``ALTER TABLE``; rows are never rewritten.
* **AWS Keyspaces** runs DDL asynchronously: :func:`wait_active` waits until the keyspace
  and every table are ACTIVE before nexus prepares its statements. Tables the Go system
  made there get client-side timestamps and TTL turned on (nexus writes with ``USING
  TIMESTAMP``/``TTL`` and reads ``writetime``); turning them on cannot be undone, and
  changes nothing for the Go system.
* **Adoption** (:func:`adopt_go_runs`), once, when nexus's parent lookup table is new in
  a keyspace that already holds runs: the parent rows of the Go runs are written, and
  every host with unfinished Go runs gets an already expired lease, so the supervisor's
  recovery re-queues its NEW/BUFFERED runs and watches its RUNNING ones to their end (the
  Go system has no leases; a Job is named by its run, so a run the Go scheduler launches
  meanwhile is not launched twice).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from cassandra import OperationTimedOut

from nexus.backends.store.cassandra_schema import (
    EXTRA_COLUMNS,
    GO_INDEXES,
    KEYSPACES_PROPERTIES,
    LOOKUPS,
    Layout,
    column_type,
    index_cql,
)
from nexus.backends.store.rows import COLUMNS, decode_json_column
from nexus.core.models import LifecycleStage
from nexus.errors import ConfigError
from nexus.settings import ScyllaCqlStore

log = logging.getLogger("nexus.store.cassandra")

_UNFINISHED = {
    s.value for s in (LifecycleStage.NEW, LifecycleStage.BUFFERED, LifecycleStage.RUNNING)
}
_SCAN_PAGE = 500


def check_keyspaces(config: ScyllaCqlStore) -> None:
    """Refuse, at start-up, what cannot work on AWS Keyspaces (``cassandra-keyspaces``)."""
    problems = []
    if config.indexes_supported:
        problems.append("indexes-supported must be false (Keyspaces has no secondary indexes)")
    if config.consistency.upper() != "LOCAL_QUORUM":
        problems.append("consistency must be LOCAL_QUORUM (Keyspaces writes at no other level)")
    if config.serial_consistency.upper() != "LOCAL_SERIAL":
        problems.append("serial-consistency must be LOCAL_SERIAL")
    if not config.tls:
        problems.append("tls must be true (Keyspaces accepts TLS connections only, port 9142)")
    if not config.user:
        problems.append(
            "user and password must be the service-specific credentials of an IAM user "
            "(SigV4 authentication is not supported)"
        )
    if config.secure_connect_bundle:
        problems.append("secure-connect-bundle is for AstraDB")
    if problems:
        raise ConfigError(
            "Invalid settings for cql-store-type cassandra-keyspaces: scylla-cql-store."
            + "; scylla-cql-store.".join(problems)
        )


def _indexed_columns(table: Any) -> set[str]:
    return {index.index_options.get("target", "") for index in table.indexes.values()}


def detect_layout(keyspace: Any, config: ScyllaCqlStore, *, keyspaces: bool) -> Layout:
    """The layout of ``keyspace`` (driver metadata, None when it does not exist yet)."""
    tables = keyspace.tables if keyspace is not None else {}
    go_tables = frozenset(
        name
        for name in ("checkpoints_by_tag", "checkpoints_by_host")
        if name in tables and [c.name for c in tables[name].clustering_key] == ["id"]
    )
    indexed = config.indexes_supported or (
        "checkpoints" in tables
        and "tag" in _indexed_columns(tables["checkpoints"])
        and not go_tables
    )
    return Layout(indexed=indexed, go_tables=go_tables, keyspaces=keyspaces)


def migrate_cql(keyspace: Any, ks: str, layout: Layout) -> list[str]:
    """What a keyspace made by the Go system lacks (run after the CREATE ... IF NOT EXISTS)."""
    statements = []
    checkpoints = keyspace.tables.get("checkpoints") if keyspace is not None else None
    if checkpoints is not None:
        wanted = {name: column_type(name) for name in COLUMNS} | EXTRA_COLUMNS
        missing = [name for name in wanted if name not in checkpoints.columns]
        if missing:
            added = ", ".join(f"{name} {wanted[name]}" for name in missing)
            statements.append(f"ALTER TABLE {ks}.checkpoints ADD ({added})")
    if layout.indexed:
        have = _indexed_columns(checkpoints) if checkpoints is not None else set()
        statements += index_cql(ks, [c for c in GO_INDEXES if c not in have])
    if layout.keyspaces and needs_adoption(keyspace):
        statements += [
            f"ALTER TABLE {ks}.{table} WITH {KEYSPACES_PROPERTIES}"
            for table in sorted(keyspace.tables)
        ]
    return statements


def wait_active(
    session: Any, ks: str, timeout: float, *, tables: bool = True, pause: float = 1.0
) -> None:
    """AWS Keyspaces: block until the keyspace exists (``tables=False``) or until all its
    tables are ACTIVE."""
    if tables:
        query = "SELECT table_name, status FROM system_schema_mcs.tables WHERE keyspace_name = %s"
    else:
        query = "SELECT keyspace_name FROM system_schema_mcs.keyspaces WHERE keyspace_name = %s"
    deadline = time.monotonic() + timeout
    while True:
        rows = list(session.execute(query, (ks,)))
        waiting = sorted(r["table_name"] for r in rows if tables and r["status"] != "ACTIVE")
        if rows and not waiting:
            return
        if time.monotonic() > deadline:
            raise OperationTimedOut(
                f"AWS Keyspaces did not make keyspace {ks} ready within {timeout:.0f}s "
                f"(not ACTIVE yet: {', '.join(waiting) or ('its tables' if tables else 'it')})"
            )
        time.sleep(pause)


def needs_adoption(keyspace: Any) -> bool:
    """True when the keyspace holds Go runs that nexus has not taken over yet."""
    if keyspace is None or "checkpoints" not in keyspace.tables:
        return False
    return "checkpoints_by_parent" not in keyspace.tables


def adopt_go_runs(session: Any, ks: str, ttl: int) -> tuple[int, list[str]]:
    """Parent lookup rows for every run with a parent, expired leases for the hosts of
    unfinished runs; returns (parent rows written, hosts adopted)."""
    key = ", ".join(LOOKUPS["checkpoints_by_parent"])
    insert_parent = session.prepare(
        f"INSERT INTO {ks}.checkpoints_by_parent ({key}, algorithm, id) "
        "VALUES (?, ?, ?, ?) USING TTL ?"
    )
    scan = session.prepare(
        f"SELECT algorithm, id, lifecycle_stage, received_by_host, received_at, parent "
        f"FROM {ks}.checkpoints"
    )
    scan.fetch_size = _SCAN_PAGE
    now = datetime.now(UTC)
    parents, hosts = 0, set()
    for row in session.execute(scan):  # the driver fetches the next pages as it goes
        parent = decode_json_column("parent", row["parent"])
        if parent is not None:
            session.execute(
                insert_parent,
                (
                    parent.algorithm_name,
                    parent.request_id,
                    row["algorithm"],
                    row["id"],
                    _ttl_left(ttl, row["received_at"], now),
                ),
            )
            parents += 1
        if row["lifecycle_stage"] in _UNFINISHED and row["received_by_host"]:
            hosts.add(row["received_by_host"])
    lease = session.prepare(f"INSERT INTO {ks}.leases (host, expires_at) VALUES (?, ?)")
    for host in sorted(hosts):
        session.execute(lease, (host, now))
    log.warning(
        "keyspace %s was written by the Go system: %d parent lookup rows written, "
        "runs of hosts %s handed to recovery",
        ks,
        parents,
        sorted(hosts),
    )
    return parents, sorted(hosts)


def _ttl_left(ttl: int, received_at: datetime | None, now: datetime) -> int:
    if not ttl or received_at is None:
        return ttl
    received = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    return max(1, int(ttl - (now - received).total_seconds()))
