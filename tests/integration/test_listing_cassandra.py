"""The listing, history and resubmit on the real Cassandra (docs/runs-api.md).

End to end: ``nexus --role all`` on a Cassandra keyspace (the payloads in the local
folder), through the HTTP routes. At scale: 100,000 runs written concurrently through
the store's own create path, then pages read with CQL tracing on every statement the
store issues, to show a page reads only the time index, the hour index and the page's
own runs (single-partition reads, no range scan) and a number of rows bounded by the
page size, not by the 100,000.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from contract.servers import cassandra_config, cassandra_settings_env, drop_keyspace, unique
from test_real_backends import wait_finished

from nexus.backends.store.cassandra import CassandraRunStore
from nexus.core.listing import RunQuery, position_of
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run

pytestmark = pytest.mark.cassandra

API = "/algorithm/v1"
SCALE = 100_000
WRITERS = 192  # creates in flight at once


@pytest.fixture(scope="module")
def keyspace():
    name = unique("nexus_list_")
    yield name
    drop_keyspace(name)


def test_listing_history_and_resubmit_end_to_end(nexus_factory, keyspace):
    nexus = nexus_factory(env=cassandra_settings_env(keyspace))
    tag = f"it-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=nexus.url, timeout=30) as http:
        ids = []
        for payload in ({"n": 1}, {"error": "bad rows"}, {"n": 2}):
            response = http.post(
                f"{API}/run/behave", json={"algorithmParameters": payload, "tag": tag}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["requestId"])
        for run_id in ids:
            wait_finished(http, "behave", run_id)

        page = http.get(f"{API}/runs", params={"algorithm": "behave", "limit": 2}).json()
        assert [r["requestId"] for r in page["runs"]] == ids[::-1][:2], nexus.log()
        rest = http.get(
            f"{API}/runs", params={"algorithm": "behave", "limit": 2, "cursor": page["nextCursor"]}
        ).json()
        assert [r["requestId"] for r in rest["runs"]] == [ids[0]] and "nextCursor" not in rest
        failed = http.get(f"{API}/runs", params={"stage": "FAILED", "tag": tag}).json()
        assert [r["requestId"] for r in failed["runs"]] == [ids[1]]
        counts = http.get(f"{API}/runs/counts", params={"algorithm": "behave"}).json()
        assert {(c["stage"], c["count"]) for c in counts["counts"]} == {
            ("COMPLETED", 2),
            ("FAILED", 1),
        }

        events = http.get(f"{API}/runs/behave/requests/{ids[1]}/events").json()["events"]
        assert [e["stage"] for e in events] == ["NEW", "BUFFERED", "RUNNING", "FAILED"]
        assert events[-1]["cause"] == "bad rows"

        response = http.post(f"{API}/resubmit/behave/requests/{ids[1]}", json={"tag": "again"})
        assert response.status_code == 202, response.text
        again = response.json()["requestId"]
        assert wait_finished(http, "behave", again)["runErrorMessage"] == "bad rows"
        meta = http.get(f"{API}/metadata/behave/requests/{again}").json()
        assert meta["resubmitted_from"] == ids[1] and meta["tag"] == "again"
        unknown = http.post(f"{API}/resubmit/behave/requests/{uuid.uuid4()}")
        assert unknown.status_code == 404, unknown.text


def _run(algorithm: str, received_at: datetime) -> Run:
    return Run(
        algorithm=algorithm,
        id=str(uuid.uuid4()),
        lifecycle_stage=S.NEW,
        received_at=received_at,
        last_modified=received_at,
        cluster="shard-a",
    )


async def _write_all(store: CassandraRunStore, runs: list[Run]) -> None:
    pending = iter(runs)

    async def writer() -> None:
        for run in pending:  # one shared iterator: WRITERS creates in flight
            await store.create(run, None)

    await asyncio.gather(*(writer() for _ in range(WRITERS)))


class Tracer:
    """Every statement the store sends, traced by Cassandra (``trace=True``)."""

    def __init__(self, store: CassandraRunStore) -> None:
        self.session = store._session
        self.futures: list[Any] = []
        self._send = self.session.execute_async

    def __enter__(self) -> Tracer:
        def traced(statement: Any, params: Any = None, **kwargs: Any) -> Any:
            future = self._send(statement, params, trace=True, **kwargs)
            self.futures.append((statement, future))
            return future

        self.session.execute_async = traced
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.execute_async = self._send

    def report(self) -> list[tuple[str, list[str]]]:
        """(CQL text, trace event descriptions) of each statement sent."""
        found = []
        for statement, future in self.futures:
            prepared = getattr(statement, "prepared_statement", statement)
            text = prepared.query_string
            trace = future.get_query_trace(max_wait=30)
            found.append((text, [event.description for event in trace.events]))
        return found


def _rows_read(descriptions: list[str]) -> int:
    total = 0
    for text in descriptions:
        if text.startswith("Read ") and " live rows" in text:
            total += int(text.split()[1])
    return total


@pytest.mark.slow
async def test_a_page_among_100k_runs_reads_only_its_own_rows(keyspace):
    store = CassandraRunStore(cassandra_config(keyspace))
    await store.open()
    try:
        start = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=random.randrange(175_000))
        big, small = f"scale-{uuid.uuid4().hex[:8]}", f"scale-{uuid.uuid4().hex[:8]}"
        # 100,000 runs over 10 hours, one run in ten of another algorithm.
        runs = [
            _run(small if i % 10 == 0 else big, start + timedelta(milliseconds=360 * i))
            for i in range(SCALE)
        ]
        began = time.monotonic()
        await _write_all(store, runs)
        # The server's speed is reported (pytest -rP), not asserted: a busy machine is slow.
        print(f"{SCALE} runs written in {time.monotonic() - began:.0f}s")
        for run in runs[-300::7]:  # a few recent runs change stage
            await store.transition(run.algorithm, run.id, S.CANCELLED)
        cancelled = {run.id for run in runs[-300::7]}
        newest = sorted(
            (run for run in runs if run.algorithm == big), key=lambda r: r.received_at, reverse=True
        )

        with Tracer(store) as tracer:
            page = await store.list_runs(RunQuery(algorithm=big, limit=100))
        assert [run.id for run in page.runs] == [run.id for run in newest[:100]]
        assert page.next is not None
        _assert_bounded(tracer.report(), page_size=100)

        # Deep in the listing: the 500th page of 100 of every algorithm, by cursor.
        middle = sorted(runs, key=lambda r: (r.received_at, r.algorithm, r.id), reverse=True)
        after = middle[49_999]
        query = RunQuery(
            since=start,
            until=start + timedelta(hours=11),
            limit=100,
            after=position_of(after),
        )
        with Tracer(store) as tracer:
            deep = await store.list_runs(query)
        assert [run.id for run in deep.runs] == [run.id for run in middle[50_000:50_100]]
        _assert_bounded(tracer.report(), page_size=100)

        # A stage filter among 100,000: short pages with a cursor, each read bounded.
        found, pages = [], 0
        query = RunQuery(algorithm=big, stages=frozenset({S.CANCELLED}), limit=10)
        while pages < 3:
            with Tracer(store) as tracer:
                part = await store.list_runs(query)
            _assert_bounded(tracer.report(), page_size=10)
            found += part.runs
            pages += 1
            if part.next is None:
                break
            query = RunQuery(algorithm=big, stages=query.stages, limit=10, after=part.next)
        wanted = {run.id for run in newest[:120]} & cancelled  # within the first pages' reach
        assert wanted <= {run.id for run in found} <= cancelled
    finally:
        await store.close()


def _assert_bounded(report: list[tuple[str, list[str]]], page_size: int) -> None:
    """Only the time index, the hour index and the runs themselves were read, each by
    partition key, and the rows read are a few times the page, not the table."""
    assert report, "the store sent no statement"
    tables = set()
    for text, events in report:
        assert "ALLOW FILTERING" not in text, text
        partitions = [e for e in events if e.startswith("Executing single-partition query on ")]
        assert partitions, (text, events)
        tables |= {e.rsplit(" ", 1)[1] for e in partitions}
        scans = [e for e in events if "range" in e.lower() or "seq scan" in e.lower()]
        assert not scans, (text, scans)
    # (Cassandra reads its own system_auth.roles now and then, to refresh the login.)
    assert tables - {"roles"} <= {"runs_by_time", "run_hours", "checkpoints"}, tables
    rows = sum(_rows_read(events) for _, events in report)
    assert 0 < rows <= 2 * (page_size + 1) * 4 + 100, (rows, report[:3])
