"""The Go system's keyspace and AWS Keyspaces, at the level of encodings and statements.

The behaviour on a real keyspace is tested in tests/integration/test_go_keyspace.py; no
AWS Keyspaces server is available to the tests, so what the ``cassandra-keyspaces`` mode
does differently is checked here: what it refuses and which statements it issues.
"""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from cassandra import ConsistencyLevel, OperationTimedOut

from nexus.backends.factory import make_store
from nexus.backends.store.cassandra import CassandraRunStore
from nexus.backends.store.cassandra_go import (
    check_keyspaces,
    detect_layout,
    migrate_cql,
    wait_active,
)
from nexus.backends.store.cassandra_schema import (
    Layout,
    Statements,
    keyspace_cql,
    lookup_rows,
    schema_cql,
    tables_cql,
)
from nexus.backends.store.rows import decode_json_column, encode_json_column
from nexus.core.models import AlgorithmSpec, LifecycleStage, ParentRef, Run
from nexus.errors import ConfigError
from nexus.settings import ScyllaCqlStore, Settings

GO_JSON = Path(__file__).parents[1] / "integration" / "go_schema" / "go_json.txt"
GO_SPEC, GO_OVERRIDE, GO_PARENT = (
    line for line in GO_JSON.read_text().splitlines() if not line.startswith("#")
)
KEYSPACES = ScyllaCqlStore(hosts=["cassandra.eu-west-1.amazonaws.com"], port=9142, tls=True)
KEYSPACES = msgspec.structs.replace(KEYSPACES, user="nexus-at-123", password="secret")


def b64(text: str) -> str:
    return "b64__" + base64.b64encode(text.encode()).decode()


def test_go_b64_json_columns_read_back():
    spec = decode_json_column("applied_configuration", b64(GO_SPEC))
    assert spec == msgspec.json.decode(GO_SPEC, type=AlgorithmSpec)
    assert decode_json_column("parent", b64(GO_PARENT)) == ParentRef(
        "11111111-2222-4333-8444-555555555555", "parent-algorithm"
    )
    assert decode_json_column("parent", GO_PARENT).algorithm_name == "parent-algorithm"
    # How the Go writer stores "unset": a nil spec marshals to null, a nil parent to {}.
    for unset in (b64("null"), b64("{}"), "b64__", "{}", "", None):
        assert decode_json_column("configuration_overrides", unset) is None


def test_a_broken_b64_column_is_an_error_not_a_silent_unset():
    with pytest.raises(ValueError):
        decode_json_column("applied_configuration", "b64__not base64!")


def test_b64_encoding_is_the_go_writers():
    parent = ParentRef("r1", "algo")
    assert encode_json_column(parent, b64=True) == b64('{"requestId":"r1","algorithmName":"algo"}')
    assert encode_json_column(parent) == '{"requestId":"r1","algorithmName":"algo"}'
    assert encode_json_column(None, b64=True) == "{}"  # the Go reader's own "unset"


def table(clustering: list[str] = (), columns=(), indexes=()):
    return SimpleNamespace(
        clustering_key=[SimpleNamespace(name=c) for c in clustering],
        columns={c: None for c in columns},
        indexes={
            f"i{n}": SimpleNamespace(index_options={"target": c}) for n, c in enumerate(indexes)
        },
    )


GO_CHECKPOINTS = ["algorithm", "id", "lifecycle_stage", "tag", "parent", "received_at"]


def test_layout_detection():
    config = ScyllaCqlStore()
    assert detect_layout(None, config, keyspaces=False) == Layout()
    bare = SimpleNamespace(
        tables={
            "checkpoints": table(columns=GO_CHECKPOINTS),
            "checkpoints_by_tag": table(["id"]),
            "checkpoints_by_host": table(["id"]),
        }
    )
    layout = detect_layout(bare, config, keyspaces=False)
    assert layout == Layout(go_tables=frozenset({"checkpoints_by_tag", "checkpoints_by_host"}))
    indexed = SimpleNamespace(
        tables={"checkpoints": table(columns=GO_CHECKPOINTS, indexes=["tag", "received_by_host"])}
    )
    assert detect_layout(indexed, config, keyspaces=False).indexed
    own = SimpleNamespace(tables={"checkpoints_by_tag": table(["algorithm", "id"])})
    assert detect_layout(own, config, keyspaces=False) == Layout()
    chosen = msgspec.structs.replace(config, indexes_supported=True)
    assert detect_layout(bare, chosen, keyspaces=False).indexed  # the setting decides

    # The columns nexus adds, and the Go indexes still missing.
    statements = migrate_cql(indexed, "ks", Layout(indexed=True))
    assert statements[0].startswith("ALTER TABLE ks.checkpoints ADD (")
    assert "cluster text" in statements[0] and "payload_valid_for text" in statements[0]
    assert statements[1:] == [
        "CREATE INDEX IF NOT EXISTS lifecycle_stage ON ks.checkpoints (lifecycle_stage)"
    ]


def test_statements_follow_the_layout():
    go = Statements("ks", Layout(go_tables=frozenset({"checkpoints_by_tag"})))
    assert go.lookup_delete["checkpoints_by_tag"] == (
        "DELETE FROM ks.checkpoints_by_tag WHERE tag = ? AND id = ?"
    )
    assert go.lookup_delete["checkpoints_by_host"].endswith("AND algorithm = ? AND id = ?")
    assert go.index_select == {}
    indexed = Statements("ks", Layout(indexed=True))
    assert set(indexed.lookup_select) == {"checkpoints_by_parent", "checkpoints_by_callback"}
    assert indexed.index_select["checkpoints_by_host"].endswith(
        "WHERE received_by_host = ? AND lifecycle_stage = ? ALLOW FILTERING"
    )
    run = Run(
        algorithm="a", id="1", lifecycle_stage=LifecycleStage.NEW, tag="t", received_by_host="h"
    )
    assert {row.table for row in lookup_rows(run, Layout(indexed=True))} == set()
    assert len(lookup_rows(run)) == 2
    script = schema_cql("ks", 3, "", Layout(indexed=True))
    assert "CREATE INDEX IF NOT EXISTS submission_tag ON ks.checkpoints (tag)" in script
    assert "checkpoints_by_tag" not in script


def test_keyspaces_statements():
    layout = Layout(keyspaces=True)
    assert keyspace_cql("ks", 3, "", layout).endswith("{'class': 'SingleRegionStrategy'}")
    for statement in tables_cql("ks", layout):
        assert "gc_grace_seconds" not in statement
        assert "'client_side_timestamps': {'status': 'enabled'}" in statement
        assert "'ttl': {'status': 'enabled'}" in statement
    assert all("CUSTOM_PROPERTIES" not in s for s in tables_cql("ks"))


def test_keyspaces_refuses_what_cannot_work():
    check_keyspaces(KEYSPACES)
    refused = {
        "indexes_supported": True,
        "consistency": "ONE",
        "serial_consistency": "SERIAL",
        "tls": False,
        "user": "",
    }
    for field, value in refused.items():
        config = msgspec.structs.replace(KEYSPACES, **{field: value})
        with pytest.raises(ConfigError, match=field.replace("_", "-")):
            CassandraRunStore(config, keyspaces=True)


def test_keyspaces_settles_an_ambiguous_lwt_without_a_serial_read():
    settings = Settings(cql_store_type="cassandra-keyspaces", scylla_cql_store=KEYSPACES)
    store = make_store(settings)
    assert store._settle_read == ConsistencyLevel.LOCAL_QUORUM
    assert store._layout == Layout(keyspaces=True)
    plain = CassandraRunStore(KEYSPACES)
    assert plain._settle_read == ConsistencyLevel.LOCAL_SERIAL


class FakeSession:
    """Answers the Keyspaces status queries from a script of results."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.queries = []

    def execute(self, query, params):
        self.queries.append((query, params))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_keyspaces_waits_for_its_asynchronous_ddl():
    creating = [{"table_name": "checkpoints", "status": "CREATING"}]
    active = [{"table_name": "checkpoints", "status": "ACTIVE"}]
    session = FakeSession([], creating, active)
    wait_active(session, "ks", timeout=5, pause=0)
    assert len(session.queries) == 3 and "system_schema_mcs.tables" in session.queries[0][0]
    wait_active(FakeSession([{"keyspace_name": "ks"}]), "ks", timeout=5, tables=False, pause=0)
    with pytest.raises(OperationTimedOut, match="not ACTIVE yet: checkpoints"):
        wait_active(FakeSession(creating), "ks", timeout=0, pause=0)


def test_keyspaces_turns_on_what_nexus_needs_on_the_go_tables():
    go = SimpleNamespace(
        tables={"checkpoints": table(columns=GO_CHECKPOINTS), "submission_buffer": table()}
    )
    statements = migrate_cql(go, "ks", Layout(keyspaces=True))
    assert statements[1:] == [
        f"ALTER TABLE ks.{name} WITH CUSTOM_PROPERTIES = {{'client_side_timestamps': "
        "{'status': 'enabled'}, 'ttl': {'status': 'enabled'}}"
        for name in ("checkpoints", "submission_buffer")
    ]
    assert migrate_cql(go, "ks", Layout())[1:] == []
