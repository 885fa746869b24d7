"""CQL schema and statement texts of the Cassandra run store (SPEC §4).

``checkpoints`` and ``submission_buffer`` are the tables of the Go system (plus the
``cluster`` column it forgets). Lookups by tag, by (host, stage) and by parent are kept in
small lookup tables instead of secondary indexes: a secondary index on a high-cardinality
column such as the tag fans out to every node, a lookup table is one partition read.

A lookup row only says "this run may be here": readers load the run and re-check the
attribute, so a stale row (left by a crash between two writes, or by a lost race) is
harmless. The host lookup sees one insert and one delete per stage change, so its
tombstones are purged after an hour rather than the default ten days: resurrecting a
deleted lookup row by a late repair is harmless for the same reason. It holds only runs
that are not finished: its readers (recovery, supervision) look for NEW, BUFFERED and
RUNNING runs, so a finished run's row would be a write nobody reads, on every completion.

A keyspace of the Go system has one of two layouts (:class:`Layout`, detected by
:mod:`cassandra_go`): secondary indexes on ``checkpoints`` (``tag``, ``received_by_host``,
``lifecycle_stage``), read with ``WHERE tag = ?`` and ``... ALLOW FILTERING`` as the Go
reader does; or the bare lookup tables ``checkpoints_by_tag`` / ``checkpoints_by_host``
under the same names as nexus's own but keyed ``((key), id)`` with ``algorithm`` a plain
column. nexus then uses those (the insert is the same, the delete names only the key and
``id``), so the Go system and nexus see each other's runs. The parent lookup is always
nexus's own table.
"""

from __future__ import annotations

import math
import re
import zlib
from datetime import datetime
from typing import NamedTuple

from nexus.backends.store.rows import COLUMNS, TIME_COLUMNS
from nexus.core.callbacks import callback_pending
from nexus.core.models import Run
from nexus.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

# Lookup table -> the columns that key it (before ``algorithm, id``).
LOOKUPS: dict[str, tuple[str, ...]] = {
    "checkpoints_by_tag": ("tag",),
    "checkpoints_by_host": ("host", "lifecycle_stage"),
    "checkpoints_by_parent": ("parent_algorithm", "parent_id"),
    # Finished runs whose completion webhook is still to be delivered, spread over
    # CALLBACK_BUCKETS partitions by run id (each scheduler's sweep reads them all).
    "checkpoints_by_callback": ("bucket",),
}
CALLBACK_BUCKETS = 16

# Columns of ``checkpoints`` that are not Run fields: the run's history (core.history),
# appended to by the very CAS UPDATE that changes the stage (an LWT stays in one
# partition, so the history lives in the run's own row).
EXTRA_COLUMNS = {"events": "list<text>"}

# The listing's time index (core.listing): every run under its algorithm and under
# ALL_SCOPE, in hour partitions, newest first; ``run_hours`` names the hours that have
# runs, so a page never walks empty partitions. Both are written in the run's create
# batch and never change but for ``stage``, which only the stage counts read (the
# listing re-checks each run it loads).
ALL_SCOPE = "*"  # never an algorithm name (core.scheduling.check_algorithm_name)
HOUR_SECONDS = 3600


# The Go system's secondary indexes (test-resources/scylla-config/checkpoints_indexed.cql).
GO_INDEXES = {
    "tag": "submission_tag",
    "received_by_host": "host",
    "lifecycle_stage": "lifecycle_stage",
}


class Layout(NamedTuple):
    """How lookups are kept in this keyspace; the default is nexus's own."""

    indexed: bool = False  # tag and (host, stage) by the Go secondary indexes
    go_tables: frozenset[str] = frozenset()  # lookup tables in the Go shape ((key), id)
    keyspaces: bool = False  # AWS Keyspaces: its DDL options, no indexes, no SERIAL reads

    @property
    def tables(self) -> dict[str, tuple[str, ...]]:
        """The lookup tables written and read in this layout."""
        if not self.indexed:
            return LOOKUPS
        own = ("checkpoints_by_parent", "checkpoints_by_callback")  # no Go index for these
        return {name: LOOKUPS[name] for name in own}


NEXUS_LAYOUT = Layout()


class LookupRow(NamedTuple):
    table: str
    key: tuple[str, ...]


def lookup_rows(run: Run, layout: Layout = NEXUS_LAYOUT) -> set[LookupRow]:
    """The lookup rows that must exist for ``run`` as it is now."""
    return {row for row in _all_lookup_rows(run) if row.table in layout.tables}


def _all_lookup_rows(run: Run) -> set[LookupRow]:
    rows = set()
    if run.received_by_host and not run.lifecycle_stage.is_terminal:
        rows.add(
            LookupRow("checkpoints_by_host", (run.received_by_host, run.lifecycle_stage.value))
        )
    if run.tag:
        rows.add(LookupRow("checkpoints_by_tag", (run.tag,)))
    if run.parent is not None:
        rows.add(
            LookupRow("checkpoints_by_parent", (run.parent.algorithm_name, run.parent.request_id))
        )
    if callback_pending(run):
        rows.add(LookupRow("checkpoints_by_callback", (callback_bucket(run.id),)))
    return rows


def hour_of(value: datetime) -> int:
    """The ``runs_by_time`` partition (hours since the epoch) of a time."""
    return math.floor(value.timestamp() / HOUR_SECONDS)


def callback_bucket(run_id: str) -> str:
    """The partition of ``checkpoints_by_callback`` a run's pending webhook is kept in."""
    return str(zlib.crc32(run_id.encode()) % CALLBACK_BUCKETS)


def check_keyspace(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"Invalid settings: scylla-cql-store.keyspace {name!r} must be a CQL name "
            "(a letter, then letters, digits or '_', at most 48 characters)"
        )
    return name


def keyspace_cql(
    keyspace: str, replication_factor: int, local_dc: str, layout: Layout = NEXUS_LAYOUT
) -> str:
    """NetworkTopologyStrategy in the local data center when one is named, else Simple."""
    if layout.keyspaces:  # AWS Keyspaces replicates three times in the region by itself
        replication = "'class': 'SingleRegionStrategy'"
    elif local_dc:
        replication = f"'class': 'NetworkTopologyStrategy', '{local_dc}': {replication_factor}"
    else:
        replication = f"'class': 'SimpleStrategy', 'replication_factor': {replication_factor}"
    return f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{replication}}}"


def column_type(name: str) -> str:
    return "timestamp" if name in TIME_COLUMNS else "text"


# AWS Keyspaces: USING TIMESTAMP and writetime() need client-side timestamps, USING TTL
# needs TTL turned on, per table; it has no gc_grace_seconds (it purges by itself).
KEYSPACES_PROPERTIES = (
    "CUSTOM_PROPERTIES = {'client_side_timestamps': {'status': 'enabled'}, "
    "'ttl': {'status': 'enabled'}}"
)
_KEYSPACES_OPTIONS = f" WITH {KEYSPACES_PROPERTIES}"


def tables_cql(ks: str, layout: Layout = NEXUS_LAYOUT) -> list[str]:
    columns = ", ".join(
        [f"{name} {column_type(name)}" for name in COLUMNS]
        + [f"{name} {kind}" for name, kind in EXTRA_COLUMNS.items()]
    )
    options = _KEYSPACES_OPTIONS if layout.keyspaces else ""
    lookup_options = options or " WITH gc_grace_seconds = 3600"
    time_options = f" AND {KEYSPACES_PROPERTIES}" if layout.keyspaces else ""
    lookups = [
        f"CREATE TABLE IF NOT EXISTS {ks}.{table} ("
        f"{', '.join(f'{c} text' for c in key)}, algorithm text, id text, "
        f"PRIMARY KEY (({', '.join(key)}), algorithm, id)){lookup_options}"
        for table, key in layout.tables.items()
    ]
    return [
        f"CREATE TABLE IF NOT EXISTS {ks}.checkpoints ({columns}, "
        f"PRIMARY KEY ((algorithm, id))){options}",
        (
            f"CREATE TABLE IF NOT EXISTS {ks}.submission_buffer (algorithm text, id text, "
            f"cluster text, template text, PRIMARY KEY ((algorithm, id))){options}"
        ),
        *lookups,
        (
            f"CREATE TABLE IF NOT EXISTS {ks}.runs_by_time (scope text, hour int, "
            "received_at timestamp, algorithm text, id text, stage text, "
            "PRIMARY KEY ((scope, hour), received_at, algorithm, id)) "
            f"WITH CLUSTERING ORDER BY (received_at DESC, algorithm DESC, id DESC){time_options}"
        ),
        (
            f"CREATE TABLE IF NOT EXISTS {ks}.run_hours (scope text, hour int, "
            f"PRIMARY KEY ((scope), hour)) WITH CLUSTERING ORDER BY (hour DESC){time_options}"
        ),
        (
            f"CREATE TABLE IF NOT EXISTS {ks}.idempotency_keys (algorithm text, key text, "
            f"id text, PRIMARY KEY ((algorithm, key))){options}"
        ),
        f"CREATE TABLE IF NOT EXISTS {ks}.leases (host text PRIMARY KEY, "
        f"expires_at timestamp){options}",
    ]


def index_cql(ks: str, columns: list[str]) -> list[str]:
    """The Go system's secondary indexes on ``columns`` (only those not indexed yet)."""
    return [
        f"CREATE INDEX IF NOT EXISTS {GO_INDEXES[c]} ON {ks}.checkpoints ({c})" for c in columns
    ]


class Statements:
    """Every fixed statement text, fully qualified with the keyspace."""

    def __init__(self, ks: str, layout: Layout = NEXUS_LAYOUT) -> None:
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        self.insert_run = (
            f"INSERT INTO {ks}.checkpoints ({names}, events) VALUES ({marks}, ?) "
            "USING TTL ? AND TIMESTAMP ?"
        )
        self.select_run = f"SELECT {names} FROM {ks}.checkpoints WHERE algorithm = ? AND id = ?"
        # Lookups read their runs a page of ids at a time (IN on the last partition-key
        # column), not one query per run.
        self.select_runs = f"SELECT {names} FROM {ks}.checkpoints WHERE algorithm = ? AND id IN ?"
        # A webhook's progress: a compare-and-set on the state the claimer read; an
        # attempt's outcome also goes to the history.
        self.update_callback = (
            f"UPDATE {ks}.checkpoints USING TTL ? SET callback_state = ?, callback_done_at = ? "
            "WHERE algorithm = ? AND id = ? IF callback_state = ?"
        )
        self.update_callback_event = (
            f"UPDATE {ks}.checkpoints USING TTL ? SET callback_state = ?, callback_done_at = ?, "
            "events = events + ? WHERE algorithm = ? AND id = ? IF callback_state = ?"
        )
        self.select_events = f"SELECT events FROM {ks}.checkpoints WHERE algorithm = ? AND id = ?"
        # The listing (see ALL_SCOPE).
        self.insert_time = (
            f"INSERT INTO {ks}.runs_by_time (scope, hour, received_at, algorithm, id, stage) "
            "VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
        )
        self.update_time_stage = (
            f"UPDATE {ks}.runs_by_time USING TTL ? SET stage = ? WHERE scope = ? AND hour = ? "
            "AND received_at = ? AND algorithm = ? AND id = ?"
        )
        self.insert_hour = f"INSERT INTO {ks}.run_hours (scope, hour) VALUES (?, ?) USING TTL ?"
        self.select_hours = (
            f"SELECT hour FROM {ks}.run_hours WHERE scope = ? AND hour >= ? AND hour <= ? LIMIT ?"
        )
        self.select_time = (
            f"SELECT received_at, algorithm, id FROM {ks}.runs_by_time WHERE scope = ? "
            "AND hour = ? AND (received_at, algorithm, id) < (?, ?, ?) LIMIT ?"
        )
        self.select_time_stages = (
            f"SELECT algorithm, stage FROM {ks}.runs_by_time WHERE scope = ? AND hour = ? "
            "AND received_at >= ? AND received_at < ?"
        )
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
        for table, key in layout.tables.items():
            where = " AND ".join(f"{c} = ?" for c in key)
            self.lookup_insert[table] = (
                f"INSERT INTO {ks}.{table} ({', '.join(key)}, algorithm, id) "
                f"VALUES ({', '.join('?' for _ in key)}, ?, ?) USING TTL ?"
            )
            row = "id = ?" if table in layout.go_tables else "algorithm = ? AND id = ?"
            self.lookup_delete[table] = f"DELETE FROM {ks}.{table} WHERE {where} AND {row}"
            self.lookup_select[table] = f"SELECT algorithm, id FROM {ks}.{table} WHERE {where}"
        # The Go indexed layout's reads, as its store issues them.
        self.index_select: dict[str, str] = {}
        if layout.indexed:
            self.index_select = {
                "checkpoints_by_tag": f"SELECT {names} FROM {ks}.checkpoints WHERE tag = ?",
                "checkpoints_by_host": (
                    f"SELECT {names} FROM {ks}.checkpoints WHERE received_by_host = ? "
                    "AND lifecycle_stage = ? ALLOW FILTERING"
                ),
            }
        self._ks = ks

    def transition(self, names: tuple[str, ...]) -> str:
        """The compare-and-set of a stage change that also writes ``names`` and appends
        the change's event to the history."""
        assignments = ", ".join(f"{name} = ?" for name in ("lifecycle_stage", *names))
        return (
            f"UPDATE {self._ks}.checkpoints USING TTL ? SET {assignments}, events = events + ? "
            "WHERE algorithm = ? AND id = ? IF lifecycle_stage = ?"
        )


def schema_cql(
    keyspace: str, replication_factor: int, local_dc: str, layout: Layout = NEXUS_LAYOUT
) -> str:
    """The whole schema as a CQL script, for operators who create it themselves."""
    statements = [
        keyspace_cql(keyspace, replication_factor, local_dc, layout),
        *tables_cql(keyspace, layout),
        *(index_cql(keyspace, list(GO_INDEXES)) if layout.indexed else []),
    ]
    return "".join(f"{statement};\n" for statement in statements)


if __name__ == "__main__":  # python -m nexus.backends.store.cassandra_schema [settings.yaml]
    import sys

    from nexus.settings import load_settings

    settings = load_settings(sys.argv[1] if len(sys.argv) > 1 else None)
    cql = settings.scylla_cql_store
    layout = Layout(
        indexed=cql.indexes_supported, keyspaces=settings.cql_store_type == "cassandra-keyspaces"
    )
    sys.stdout.write(
        schema_cql(check_keyspace(cql.keyspace), cql.replication_factor, cql.local_dc, layout)
    )
