"""The SQLite store's listing statements use its indexes: SQLite's own query plan of
each shape of listing page, on the store's real schema (no sort, no table scan)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from nexus.backends.store.sqlite import INDEXES, SCHEMA, _add_columns, list_statement
from nexus.core.listing import Position, RunQuery
from nexus.core.models import LifecycleStage as S
from nexus.core.models import ParentRef

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def conn():
    connection = sqlite3.connect(":memory:")
    connection.executescript(SCHEMA)
    _add_columns(connection)
    connection.executescript(INDEXES)
    yield connection
    connection.close()


@pytest.mark.parametrize(
    "query",
    [
        RunQuery(),
        RunQuery(algorithm="a"),
        RunQuery(algorithm="a", after=Position(AT, "a", "x")),
        RunQuery(after=Position(AT, "a", "x"), stages=frozenset({S.FAILED})),
        RunQuery(since=AT, until=AT),
        RunQuery(algorithm="a", since=AT, stages=frozenset({S.NEW, S.RUNNING})),
        RunQuery(tag="t"),
        RunQuery(parent=ParentRef(request_id="p", algorithm_name="a")),
    ],
)
def test_every_listing_reads_an_index_in_order(conn, query):
    statement, args = list_statement(query)
    plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", args))
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert not plan.startswith("SCAN checkpoints |") and plan != "SCAN checkpoints", plan
    if query.tag or query.parent is not None:  # their own index; their few rows sorted
        wanted = "checkpoints_by_tag" if query.tag else "checkpoints_by_parent"
        assert wanted in plan, plan
    else:
        assert "TEMP B-TREE" not in plan, plan
