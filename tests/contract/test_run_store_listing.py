"""The RunStore contract, part two: listing, stage counts and history, against every
store (marker ``cassandra`` for the real one). The Cassandra keyspace is shared by the
whole session, so each test lists its own algorithm and its own window of time."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from test_run_store import ALGORITHM, created, ids, make_run, reach, submission_for

from nexus.core.history import STAGE, WEBHOOK
from nexus.core.listing import RunQuery
from nexus.core.models import CallbackState, ParentRef
from nexus.core.models import LifecycleStage as S


def window() -> datetime:
    """A start time no other test uses: an hour-aligned moment in a random past year."""
    hours = random.randrange(20 * 365 * 24)
    return datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=hours)


def algorithm() -> str:
    return f"list-{uuid.uuid4().hex[:12]}"


async def spread(store, start: datetime, count: int, step: timedelta, **fields) -> list:
    """``count`` runs received ``step`` apart from ``start`` (over several hours)."""
    return [
        await created(store, received_at=start + i * step, last_modified=start, **fields)
        for i in range(count)
    ]


async def every_page(store, query: RunQuery) -> tuple[list, int]:
    found, pages = [], 0
    while True:
        page = await store.list_runs(query)
        assert len(page.runs) <= query.limit
        found += page.runs
        pages += 1
        if page.next is None:
            return found, pages
        query = RunQuery(**{**_fields(query), "after": page.next})


def _fields(query: RunQuery) -> dict:
    return {name: getattr(query, name) for name in query.__struct_fields__}


def newest_first(runs: list) -> list[str]:
    return ids(sorted(runs, key=lambda run: (run.received_at, run.algorithm, run.id), reverse=True))


async def test_pages_list_every_run_of_an_algorithm_newest_first_once(run_store):
    start, name = window(), algorithm()
    runs = await spread(run_store, start, 23, timedelta(minutes=17), algorithm=name)
    await spread(run_store, start, 3, timedelta(minutes=17), algorithm=algorithm())  # others
    found, pages = await every_page(run_store, RunQuery(algorithm=name, limit=5))
    assert ids(found) == newest_first(runs)
    assert pages >= 5
    first = await run_store.list_runs(RunQuery(algorithm=name, limit=5))
    assert ids(first.runs) == newest_first(runs)[:5]
    assert first.runs[0] == await run_store.get(name, first.runs[0].id)  # whole runs


async def test_the_window_holds_every_algorithm_and_excludes_its_end(run_store):
    start = window()
    a = await spread(run_store, start, 6, timedelta(minutes=25), algorithm=algorithm())
    b = await spread(run_store, start, 6, timedelta(minutes=25), algorithm=algorithm())
    until = start + 5 * timedelta(minutes=25)  # the sixth run of each is received then
    query = RunQuery(since=start + timedelta(minutes=25), until=until, limit=3)
    found, _ = await every_page(run_store, query)
    assert ids(found) == newest_first(a[1:5] + b[1:5])


async def test_a_stage_filter_follows_stage_changes(run_store):
    start, name = window(), algorithm()
    runs = await spread(run_store, start, 8, timedelta(minutes=10), algorithm=name)
    for run in runs[:3]:
        await reach(run_store, run, S.RUNNING)
    await reach(run_store, runs[3], S.FAILED)
    running, _ = await every_page(run_store, RunQuery(algorithm=name, stages={S.RUNNING}, limit=2))
    assert ids(running) == newest_first(runs[:3])
    either, _ = await every_page(
        run_store, RunQuery(algorithm=name, stages={S.NEW, S.FAILED}, limit=50)
    )
    assert ids(either) == newest_first(runs[3:])
    await reach(run_store, runs[0], S.COMPLETED)
    running, _ = await every_page(run_store, RunQuery(algorithm=name, stages={S.RUNNING}))
    assert ids(running) == newest_first(runs[1:3])


async def test_a_rare_stage_among_many_runs_is_found_over_pages(run_store):
    start, name = window(), algorithm()
    runs = await spread(run_store, start, 60, timedelta(seconds=30), algorithm=name)
    await reach(run_store, runs[7], S.CANCELLED)
    found, _ = await every_page(run_store, RunQuery(algorithm=name, stages={S.CANCELLED}, limit=2))
    assert ids(found) == [runs[7].id]


async def test_tag_and_parent_filters(run_store):
    start, name = window(), algorithm()
    tag = f"tag-{uuid.uuid4().hex}"
    parent = await created(run_store, algorithm=name, received_at=start)
    ref = ParentRef(request_id=parent.id, algorithm_name=name)
    children = await spread(run_store, start, 4, timedelta(minutes=1), algorithm=name, parent=ref)
    tagged = await spread(run_store, start, 5, timedelta(minutes=1), algorithm=name, tag=tag)
    found, _ = await every_page(run_store, RunQuery(tag=tag, limit=2))
    assert ids(found) == newest_first(tagged)
    found, _ = await every_page(run_store, RunQuery(parent=ref, limit=3))
    assert ids(found) == newest_first(children)
    found, _ = await every_page(run_store, RunQuery(tag=tag, algorithm=algorithm()))
    assert found == []


async def test_counts_per_stage_per_algorithm_in_a_window(run_store):
    start, first, second = window(), algorithm(), algorithm()
    a = await spread(run_store, start, 5, timedelta(minutes=40), algorithm=first)
    b = await spread(run_store, start, 2, timedelta(minutes=40), algorithm=second)
    await reach(run_store, a[0], S.COMPLETED)
    await reach(run_store, a[1], S.COMPLETED)
    await reach(run_store, b[0], S.CANCELLED)
    await created(run_store, algorithm=first, received_at=start + timedelta(days=1))  # outside
    counts = await run_store.count_runs(start, start + timedelta(hours=12))
    assert {(c.algorithm, c.stage, c.count) for c in counts} == {
        (first, S.COMPLETED, 2),
        (first, S.NEW, 3),
        (second, S.CANCELLED, 1),
        (second, S.NEW, 1),
    }
    only = await run_store.count_runs(start, start + timedelta(hours=12), first)
    assert {(c.stage, c.count) for c in only} == {(S.COMPLETED, 2), (S.NEW, 3)}


async def test_history_records_each_stage_change_with_its_time_and_cause(run_store):
    run = await created(run_store)
    await run_store.buffer(submission_for(run))
    await run_store.transition(run.algorithm, run.id, S.RUNNING)
    await run_store.transition(
        run.algorithm, run.id, S.FAILED, algorithm_failure_cause="exit code 3"
    )
    events = await run_store.history(run.algorithm, run.id)
    assert [(e.kind, e.previous, e.stage) for e in events] == [
        (STAGE, None, S.NEW),
        (STAGE, S.NEW, S.BUFFERED),
        (STAGE, S.BUFFERED, S.RUNNING),
        (STAGE, S.RUNNING, S.FAILED),
    ]
    assert events[0].at == run.received_at
    assert events[-1].cause == "exit code 3" and "launched" in events[2].cause
    assert [e.at for e in events] == sorted(e.at for e in events)
    final = await run_store.get(run.algorithm, run.id)
    assert events[-1].at == final.last_modified


async def test_a_refused_change_leaves_no_event(run_store):
    run = await reach(run_store, await created(run_store), S.COMPLETED)
    with pytest.raises(Exception, match="already finished"):
        await run_store.transition(run.algorithm, run.id, S.FAILED)
    events = await run_store.history(run.algorithm, run.id)
    assert [e.stage for e in events] == [S.NEW, S.BUFFERED, S.RUNNING, S.COMPLETED]


async def test_history_of_an_unknown_run_is_none(run_store):
    assert await run_store.history(ALGORITHM, str(uuid.uuid4())) is None


async def test_webhook_attempts_appear_in_the_history_but_claims_do_not(run_store):
    run = await reach(
        run_store, await created(run_store, callback_url="https://hooks.example/x"), S.COMPLETED
    )
    claim = CallbackState(attempts=1, next_at=datetime.now(UTC) + timedelta(seconds=40))
    await run_store.update_callback(run.algorithm, run.id, None, claim)
    failed = CallbackState(attempts=1, last_status=503, last_error="HTTP 503")
    await run_store.update_callback(run.algorithm, run.id, claim, failed)
    again = CallbackState(attempts=2, next_at=datetime.now(UTC) + timedelta(seconds=40))
    await run_store.update_callback(run.algorithm, run.id, failed, again)
    done = CallbackState(attempts=2, last_status=204, delivered_at=datetime.now(UTC))
    await run_store.update_callback(run.algorithm, run.id, again, done, done=True)
    events = await run_store.history(run.algorithm, run.id)
    hooks = [e.cause for e in events if e.kind == WEBHOOK]
    assert hooks == ["attempt 1: HTTP 503", "attempt 2: delivered (HTTP 204)"]
    assert events[-3].stage is S.COMPLETED


async def test_a_run_without_receive_time_is_not_listed(run_store):
    name = algorithm()
    run = make_run(algorithm=name, received_at=None)
    await run_store.create(run, None)
    assert (await run_store.list_runs(RunQuery(algorithm=name))).runs == []
