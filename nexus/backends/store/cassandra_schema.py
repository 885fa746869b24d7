"""CQL schema and statement texts of the Cassandra run store (SPEC §4).

``checkpoints`` and ``submission_buffer`` are the tables of the Go system (plus the
``cluster`` column it forgets). Lookups by tag, by (host, stage) and by parent are kept in
small lookup tables instead of secondary indexes: a secondary index on a high-cardinality
column such as the tag fans out to every node, a lookup table is one partition read.

A lookup row only says "this run may be here": readers load the run and re-check the
attribute, so a stale row (left by a crash between two writes, or by a lost race) is
harmless. The host lookup sees one insert and one delete per stage change, so its
tombstones are purged after an hour rather than the default ten days: resurrecting a
deleted lookup row by a late repair is harmless for the same reason.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from nexus.backends.store.rows import COLUMNS, TIME_COLUMNS
from nexus.core.models import Run
from nexus.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

# Lookup table -> the columns that key it (before ``algorithm, id``).
LOOKUPS: dict[str, tuple[str, ...]] = {
    "checkpoints_by_tag": ("tag",),
    "checkpoints_by_host": ("host", "lifecycle_stage"),
    "checkpoints_by_parent": ("parent_algorithm", "parent_id"),
}


class LookupRow(NamedTuple):
    table: str
    key: tuple[str, ...]


def lookup_rows(run: Run) -> set[LookupRow]:
    """The lookup rows that must exist for ``run`` as it is now."""
    rows = set()
    if run.received_by_host:
        rows.add(
            LookupRow("checkpoints_by_host", (run.received_by_host, run.lifecycle_stage.value))
        )
    if run.tag:
        rows.add(LookupRow("checkpoints_by_tag", (run.tag,)))
    if run.parent is not None:
        rows.add(
            LookupRow("checkpoints_by_parent", (run.parent.algorithm_name, run.parent.request_id))
        )
    return rows


def check_keyspace(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"Invalid settings: scylla-cql-store.keyspace {name!r} must be a CQL name "
            "(a letter, then letters, digits or '_', at most 48 characters)"
        )
    return name


def keyspace_cql(keyspace: str, replication_factor: int, local_dc: str) -> str:
    """NetworkTopologyStrategy in the local data center when one is named, else Simple."""
    if local_dc:
        replication = f"'class': 'NetworkTopologyStrategy', '{local_dc}': {replication_factor}"
    else:
        replication = f"'class': 'SimpleStrategy', 'replication_factor': {replication_factor}"
    return f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{replication}}}"


def tables_cql(ks: str) -> list[str]:
    columns = ", ".join(
        f"{name} {'timestamp' if name in TIME_COLUMNS else 'text'}" for name in COLUMNS
    )
    lookups = [
        f"CREATE TABLE IF NOT EXISTS {ks}.{table} ("
        f"{', '.join(f'{c} text' for c in key)}, algorithm text, id text, "
        f"PRIMARY KEY (({', '.join(key)}), algorithm, id)) WITH gc_grace_seconds = 3600"
        for table, key in LOOKUPS.items()
    ]
    return [
        f"CREATE TABLE IF NOT EXISTS {ks}.checkpoints ({columns}, PRIMARY KEY ((algorithm, id)))",
        (
            f"CREATE TABLE IF NOT EXISTS {ks}.submission_buffer (algorithm text, id text, "
            "cluster text, template text, PRIMARY KEY ((algorithm, id)))"
        ),
        *lookups,
        (
            f"CREATE TABLE IF NOT EXISTS {ks}.idempotency_keys (algorithm text, key text, "
            "id text, PRIMARY KEY ((algorithm, key)))"
        ),
        f"CREATE TABLE IF NOT EXISTS {ks}.leases (host text PRIMARY KEY, expires_at timestamp)",
    ]


class Statements:
    """Every fixed statement text, fully qualified with the keyspace."""

    def __init__(self, ks: str) -> None:
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        self.insert_run = (
            f"INSERT INTO {ks}.checkpoints ({names}) VALUES ({marks}) USING TTL ? AND TIMESTAMP ?"
        )
        self.select_run = f"SELECT {names} FROM {ks}.checkpoints WHERE algorithm = ? AND id = ?"
        # Lookups read their runs a page of ids at a time (IN on the last partition-key
        # column), not one query per run.
        self.select_runs = f"SELECT {names} FROM {ks}.checkpoints WHERE algorithm = ? AND id IN ?"
        self.update_tag = (
            f"UPDATE {ks}.checkpoints USING TTL ? SET tag = ?, last_modified = ? "
            "WHERE algorithm = ? AND id = ?"
        )
        self.insert_submission = (
            f"INSERT INTO {ks}.submission_buffer (algorithm, id, cluster, "
            "template) VALUES (?, ?, ?, ?) USING TTL ?"
        )
        self.select_submission = (
            f"SELECT cluster, template FROM {ks}.submission_buffer WHERE algorithm = ? AND id = ?"
        )
        self.claim_key = (
            f"INSERT INTO {ks}.idempotency_keys (algorithm, key, id) "
            "VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?"
        )
        self.select_key = (
            f"SELECT id, writetime(id) AS written FROM {ks}.idempotency_keys "
            "WHERE algorithm = ? AND key = ?"
        )
        self.replace_key = (
            f"UPDATE {ks}.idempotency_keys USING TTL ? SET id = ? "
            "WHERE algorithm = ? AND key = ? IF id = ?"
        )
        self.release_key = (
            f"DELETE FROM {ks}.idempotency_keys WHERE algorithm = ? AND key = ? IF id = ?"
        )
        self.heartbeat = f"INSERT INTO {ks}.leases (host, expires_at) VALUES (?, ?)"
        self.select_leases = f"SELECT host, expires_at FROM {ks}.leases"
        self.drop_lease = f"DELETE FROM {ks}.leases WHERE host = ? IF expires_at < ?"
        self.ping = "SELECT release_version FROM system.local"
        self.lookup_insert: dict[str, str] = {}
        self.lookup_delete: dict[str, str] = {}
        self.lookup_select: dict[str, str] = {}
        for table, key in LOOKUPS.items():
            where = " AND ".join(f"{c} = ?" for c in key)
            self.lookup_insert[table] = (
                f"INSERT INTO {ks}.{table} ({', '.join(key)}, algorithm, id) "
                f"VALUES ({', '.join('?' for _ in key)}, ?, ?) USING TTL ?"
            )
            self.lookup_delete[table] = (
                f"DELETE FROM {ks}.{table} WHERE {where} AND algorithm = ? AND id = ?"
            )
            self.lookup_select[table] = f"SELECT algorithm, id FROM {ks}.{table} WHERE {where}"
        self._ks = ks

    def transition(self, names: tuple[str, ...]) -> str:
        """The compare-and-set of a stage change that also writes ``names``."""
        assignments = ", ".join(f"{name} = ?" for name in ("lifecycle_stage", *names))
        return (
            f"UPDATE {self._ks}.checkpoints USING TTL ? SET {assignments} "
            "WHERE algorithm = ? AND id = ? IF lifecycle_stage = ?"
        )


def schema_cql(keyspace: str, replication_factor: int, local_dc: str) -> str:
    """The whole schema as a CQL script, for operators who create it themselves."""
    statements = [keyspace_cql(keyspace, replication_factor, local_dc), *tables_cql(keyspace)]
    return "".join(f"{statement};\n" for statement in statements)


if __name__ == "__main__":  # python -m nexus.backends.store.cassandra_schema [settings.yaml]
    import sys

    from nexus.settings import load_settings

    cql = load_settings(sys.argv[1] if len(sys.argv) > 1 else None).scylla_cql_store
    sys.stdout.write(schema_cql(check_keyspace(cql.keyspace), cql.replication_factor, cql.local_dc))
