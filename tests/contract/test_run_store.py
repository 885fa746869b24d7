"""The RunStore contract (nexus.core.ports.RunStore), run against every implementation:
the embedded SQLite store and the Cassandra store (marker ``cassandra``)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nexus.backends.store.cassandra import CassandraRunStore
from nexus.backends.store.sqlite import SqliteRunStore
from nexus.core import lifecycle
from nexus.core.models import (
    TERMINAL_STAGES,
    AlgorithmSpec,
    CallbackState,
    ContainerOverride,
    ContainerSpec,
    ParentRef,
    Run,
    SpecOverride,
    SubmissionEntry,
)
from nexus.core.models import LifecycleStage as S
from nexus.errors import BackendUnavailable, InvalidTransition, NotFound
from nexus.settings import ScyllaCqlStore

ALGORITHM = "contract-algorithm"
# The shortest way from NEW to every stage.
PATHS = {
    S.NEW: [],
    S.BUFFERED: [S.BUFFERED],
    S.RUNNING: [S.BUFFERED, S.RUNNING],
    S.COMPLETED: [S.BUFFERED, S.RUNNING, S.COMPLETED],
    S.FAILED: [S.BUFFERED, S.RUNNING, S.FAILED],
    S.SCHEDULING_FAILED: [S.SCHEDULING_FAILED],
    S.DEADLINE_EXCEEDED: [S.BUFFERED, S.RUNNING, S.DEADLINE_EXCEEDED],
    S.CANCELLED: [S.CANCELLED],
}


def now_ms() -> datetime:
    """Stores keep milliseconds (CQL timestamps); test times are exact at that precision."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def make_run(**fields) -> Run:
    now = now_ms()
    values = dict(
        algorithm=ALGORITHM,
        id=str(uuid.uuid4()),
        lifecycle_stage=S.NEW,
        payload_uri="https://payloads.example/p?sig=abc",
        received_by_host="contract-host",
        received_at=now,
        last_modified=now,
        applied_configuration=AlgorithmSpec(
            container=ContainerSpec(image="img", registry="reg.example", version_tag="1.0"),
            command="python -m algorithm",
            args=["--sas-uri=%s"],
        ),
        configuration_overrides=SpecOverride(container=ContainerOverride(version_tag="1.0")),
        content_hash="0123abcd",
        api_version="1.2",
        cluster="shard-a",
        payload_valid_for="24h",
    )
    values.update(fields)
    return Run(**values)


def submission_for(run: Run, cluster: str = "shard-a") -> SubmissionEntry:
    return SubmissionEntry(
        algorithm=run.algorithm,
        id=run.id,
        cluster=cluster,
        template={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": run.id}},
    )


async def created(store, **fields) -> Run:
    run = make_run(**fields)
    assert await store.create(run, submission_for(run)) == run.id
    return run


async def reach(store, run: Run, stage: S) -> Run:
    for step in PATHS[stage]:
        run = await store.transition(run.algorithm, run.id, step)
    return run


def ids(runs: list[Run]) -> list[str]:
    return [run.id for run in runs]


# --- create / get ----------------------------------------------------------------------


async def test_create_then_get_returns_every_field(run_store):
    parent = ParentRef(request_id=str(uuid.uuid4()), algorithm_name="parent-algorithm")
    run = make_run(
        tag="contract-tag",
        parent=parent,
        sent_at=now_ms(),
        job_uid="",
        created_by="system:serviceaccount:team-a:pipeline",
    )
    assert await run_store.create(run, submission_for(run)) == run.id
    assert await run_store.get(run.algorithm, run.id) == run


async def test_get_unknown_run_is_none(run_store):
    assert await run_store.get(ALGORITHM, str(uuid.uuid4())) is None
    assert await run_store.get_submission(ALGORITHM, str(uuid.uuid4())) is None


async def test_submission_entry_keeps_its_cluster(run_store):
    run = make_run()
    entry = submission_for(run, cluster="far-away-shard")
    await run_store.create(run, entry)
    assert await run_store.get_submission(run.algorithm, run.id) == entry


async def test_create_without_submission_entry(run_store):
    run = make_run()
    await run_store.create(run, None)
    assert await run_store.get(run.algorithm, run.id) == run
    assert await run_store.get_submission(run.algorithm, run.id) is None


async def test_buffer_stores_the_job_and_moves_the_run_to_buffered(run_store):
    """The BUFFERED step's write, for a run created without a Job."""
    run = make_run()
    await run_store.create(run, None)
    entry = submission_for(run, cluster="far-away-shard")
    buffered = await run_store.buffer(entry)
    assert buffered.lifecycle_stage is S.BUFFERED
    assert await run_store.get(run.algorithm, run.id) == buffered
    assert await run_store.get_submission(run.algorithm, run.id) == entry
    assert ids(await run_store.by_host_stage(run.received_by_host, S.BUFFERED)) == [run.id]


async def test_buffer_re_queues_a_running_run_as_a_disruption(run_store):
    """A run whose process was lost with a crashed nexus goes back to BUFFERED with its
    Job rewritten (its disruption count) in the same write; only once: the second
    writer finds it BUFFERED already."""
    host = f"disrupted-{uuid.uuid4()}"  # its own: the Cassandra keyspace is shared
    run = await reach(run_store, await created(run_store, received_by_host=host), S.RUNNING)
    entry = submission_for(run)
    entry.template["metadata"]["annotations"] = {"science.sneaksanddata.com/disruptions": "1"}
    # A launch that read the run as NEW (the default) must not move it back.
    with pytest.raises(InvalidTransition):
        await run_store.buffer(entry)
    assert (await run_store.get(run.algorithm, run.id)).lifecycle_stage is S.RUNNING
    requeued = await run_store.buffer(entry, S.RUNNING)
    assert requeued.lifecycle_stage is S.BUFFERED
    assert await run_store.get(run.algorithm, run.id) == requeued
    assert await run_store.get_submission(run.algorithm, run.id) == entry
    assert ids(await run_store.by_host_stage(run.received_by_host, S.BUFFERED)) == [run.id]
    assert ids(await run_store.by_host_stage(run.received_by_host, S.RUNNING)) == []
    with pytest.raises(InvalidTransition):
        await run_store.buffer(entry, S.RUNNING)


async def test_buffer_of_a_run_no_longer_new_changes_nothing(run_store):
    cancelled = await reach(run_store, await created(run_store), S.CANCELLED)
    with pytest.raises(InvalidTransition):
        await run_store.buffer(submission_for(cancelled))
    assert await run_store.get(cancelled.algorithm, cancelled.id) == cancelled
    with pytest.raises(NotFound):
        await run_store.buffer(submission_for(make_run()))


async def test_same_run_id_under_two_algorithms_are_two_runs(run_store):
    first = await created(run_store)
    second = await created(run_store, algorithm="other-algorithm", id=first.id)
    await run_store.transition(first.algorithm, first.id, S.CANCELLED)
    assert (await run_store.get(second.algorithm, second.id)).lifecycle_stage is S.NEW


# --- idempotency -----------------------------------------------------------------------


async def test_idempotency_key_returns_the_first_run_and_writes_nothing(run_store):
    key = f"key-{uuid.uuid4()}"
    first, second = make_run(), make_run()
    assert await run_store.create(first, submission_for(first), key) == first.id
    assert await run_store.create(second, submission_for(second), key) == first.id
    assert await run_store.get(second.algorithm, second.id) is None
    assert await run_store.get_submission(second.algorithm, second.id) is None
    assert await run_store.find_idempotent(ALGORITHM, key) == first.id
    assert await run_store.find_idempotent(ALGORITHM, f"key-{uuid.uuid4()}") is None


async def test_idempotency_key_is_per_algorithm(run_store):
    key = f"key-{uuid.uuid4()}"
    first, other = make_run(), make_run(algorithm="other-algorithm")
    assert await run_store.create(first, None, key) == first.id
    assert await run_store.create(other, None, key) == other.id
    assert await run_store.find_idempotent("other-algorithm", key) == other.id


async def test_concurrent_creates_with_one_key_store_one_run(run_store):
    key = f"key-{uuid.uuid4()}"
    runs = [make_run() for _ in range(5)]
    answers = await asyncio.gather(
        *(run_store.create(run, submission_for(run), key) for run in runs)
    )
    assert len(set(answers)) == 1
    stored = [run.id for run in runs if await run_store.get(run.algorithm, run.id)]
    assert stored == [answers[0]]


# --- transitions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "current,target", [(c, t) for c in S for t in S], ids=lambda stage: stage.value
)
async def test_transition_follows_the_lifecycle(run_store, current, target):
    run = await reach(run_store, await created(run_store), current)
    if lifecycle.can_transition(current, target):
        updated = await run_store.transition(
            run.algorithm, run.id, target, algorithm_failure_details="because"
        )
        assert updated.lifecycle_stage is target
        assert updated.algorithm_failure_details == "because"
        assert await run_store.get(run.algorithm, run.id) == updated
    else:
        before = await run_store.get(run.algorithm, run.id)
        with pytest.raises(InvalidTransition):
            await run_store.transition(
                run.algorithm, run.id, target, algorithm_failure_details="late writer"
            )
        assert await run_store.get(run.algorithm, run.id) == before


async def test_terminal_stage_is_final_for_every_writer(run_store):
    for terminal in TERMINAL_STAGES:
        run = await reach(run_store, await created(run_store), terminal)
        for target in S:
            with pytest.raises(InvalidTransition):
                await run_store.transition(run.algorithm, run.id, target, result_uri="late")
        stored = await run_store.get(run.algorithm, run.id)
        assert stored.lifecycle_stage is terminal and stored.result_uri == ""


async def test_transition_writes_fields_and_keeps_the_others(run_store):
    run = await reach(run_store, await created(run_store, tag="keep-me"), S.BUFFERED)
    sent = now_ms()
    running = await run_store.transition(
        run.algorithm, run.id, S.RUNNING, job_uid="uid-1", sent_at=sent
    )
    assert (running.job_uid, running.sent_at, running.tag) == ("uid-1", sent, "keep-me")
    assert running.last_modified >= run.last_modified
    done = await run_store.transition(
        run.algorithm, run.id, S.COMPLETED, result_uri="https://results.example/r"
    )
    stored = await run_store.get(run.algorithm, run.id)
    assert stored == done
    assert (stored.job_uid, stored.sent_at, stored.result_uri) == (
        "uid-1",
        sent,
        "https://results.example/r",
    )
    assert stored.applied_configuration == run.applied_configuration


async def test_a_stale_known_copy_costs_a_retry_never_a_wrong_write(run_store):
    """``known`` spares a store its read before the compare-and-set; a copy older than
    the row must still lead to the change the row allows, from the row's stage."""
    host = f"host-{uuid.uuid4()}"
    run = await reach(run_store, await created(run_store, received_by_host=host), S.BUFFERED)
    await run_store.transition(run.algorithm, run.id, S.RUNNING, job_uid="uid-1")
    # The copy says BUFFERED, the row RUNNING: the change is made from RUNNING.
    done = await run_store.transition(
        run.algorithm, run.id, S.COMPLETED, known=run, result_uri="s3://r/1"
    )
    stored = await run_store.get(run.algorithm, run.id)
    assert stored.lifecycle_stage is S.COMPLETED and stored.job_uid == "uid-1"
    assert (stored.result_uri, done.lifecycle_stage) == ("s3://r/1", S.COMPLETED)
    events = await run_store.history(run.algorithm, run.id)
    assert [(e.previous, e.stage) for e in events if e.stage][-1] == (S.RUNNING, S.COMPLETED)
    assert await run_store.by_host_stage(host, S.RUNNING) == []
    # A copy whose stage would refuse the change (NEW -> RUNNING) is not the judge.
    fresh = await created(run_store, received_by_host=host)
    await run_store.transition(fresh.algorithm, fresh.id, S.BUFFERED)
    running = await run_store.transition(fresh.algorithm, fresh.id, S.RUNNING, known=fresh)
    assert running.lifecycle_stage is S.RUNNING
    assert ids(await run_store.by_host_stage(host, S.RUNNING)) == [fresh.id]
    assert await run_store.by_host_stage(host, S.BUFFERED) == []
    # A finished row keeps its first result, whatever the copy says.
    with pytest.raises(InvalidTransition):
        await run_store.transition(
            run.algorithm, run.id, S.FAILED, known=run, algorithm_failure_cause="late"
        )
    assert (await run_store.get(run.algorithm, run.id)).result_uri == "s3://r/1"
    # A copy of another run is not used.
    other = await created(run_store)
    with pytest.raises(InvalidTransition):
        await run_store.transition(other.algorithm, other.id, S.RUNNING, known=running)


async def test_transition_of_unknown_run_is_not_found(run_store):
    with pytest.raises(NotFound):
        await run_store.transition(ALGORITHM, str(uuid.uuid4()), S.BUFFERED)


@pytest.mark.parametrize(
    "stage,targets",
    [
        (S.NEW, [S.BUFFERED, S.BUFFERED]),
        (S.NEW, [S.CANCELLED, S.SCHEDULING_FAILED, S.CANCELLED]),
        (S.RUNNING, [S.COMPLETED, S.FAILED, S.DEADLINE_EXCEEDED, S.CANCELLED]),
    ],
    ids=["NEW-same-target", "NEW", "RUNNING"],
)
async def test_concurrent_transitions_from_one_stage_exactly_one_wins(run_store, stage, targets):
    """Targets that cannot follow one another: whoever writes second must be refused."""
    for _ in range(3):
        run = await reach(run_store, await created(run_store), stage)
        results = await asyncio.gather(
            *(
                run_store.transition(
                    run.algorithm, run.id, target, algorithm_failure_cause=f"writer {n}"
                )
                for n, target in enumerate(targets)
            ),
            return_exceptions=True,
        )
        winners = [result for result in results if isinstance(result, Run)]
        assert len(winners) == 1, results
        assert all(isinstance(result, (Run, InvalidTransition)) for result in results), results
        assert await run_store.get(run.algorithm, run.id) == winners[0]


# --- tags, hosts, parents ----------------------------------------------------------------


async def test_update_tag_moves_the_run_between_tags(run_store):
    old, new = f"tag-{uuid.uuid4()}", f"tag-{uuid.uuid4()}"
    run = await created(run_store, tag=old)
    assert ids(await run_store.by_tag(old)) == [run.id]
    updated = await run_store.update_tag(run.algorithm, run.id, new)
    assert updated.tag == new and updated.lifecycle_stage is S.NEW
    assert await run_store.get(run.algorithm, run.id) == updated
    assert await run_store.by_tag(old) == []
    assert ids(await run_store.by_tag(new)) == [run.id]


async def test_update_tag_of_unknown_run_is_not_found(run_store):
    with pytest.raises(NotFound):
        await run_store.update_tag(ALGORITHM, str(uuid.uuid4()), "tag")


async def test_by_tag_finds_runs_of_every_algorithm_oldest_first(run_store):
    tag, start = f"tag-{uuid.uuid4()}", now_ms()
    second = await created(run_store, tag=tag, received_at=start + timedelta(seconds=1))
    first = await created(run_store, tag=tag, algorithm="other-algorithm", received_at=start)
    await created(run_store, tag=f"tag-{uuid.uuid4()}")
    await run_store.transition(second.algorithm, second.id, S.CANCELLED)
    found = await run_store.by_tag(tag)
    assert ids(found) == [first.id, second.id]
    assert found[1].lifecycle_stage is S.CANCELLED
    assert await run_store.by_tag("") == []
    assert await run_store.by_tag(f"tag-{uuid.uuid4()}") == []


# Tags as the API lets them through: any printable Unicode, up to 256 characters
# (nexus.core.scheduling.check_tag), including what a URL path must percent-encode.
UNICODE_TAGS = [
    "ünïcødé-✓",
    "🚀 emoji 👩‍💻",
    "日本語のタグ",
    "a b/c?d#e%f+g",
    "Ω" * 256,
    "😀" * 256,
]


@pytest.mark.parametrize(
    "text", UNICODE_TAGS, ids=["latin", "emoji", "cjk", "url-chars", "greek-256", "emoji-256"]
)
async def test_a_unicode_tag_is_stored_and_found_exactly(run_store, text):
    tag = f"{text[:200]}-{uuid.uuid4().hex[:8]}" if len(text) < 256 else text
    run = await created(run_store, tag=tag)
    assert (await run_store.get(run.algorithm, run.id)).tag == tag
    assert run.id in ids(await run_store.by_tag(tag))
    # Exact matches only: no normalisation, case folding or prefix match.
    for other in (tag.upper(), tag[:-1], tag + " ", tag.encode("unicode_escape").decode()):
        if other != tag:
            assert run.id not in ids(await run_store.by_tag(other)), other


async def test_update_tag_to_a_unicode_tag(run_store):
    old, new = f"tag-{uuid.uuid4()}", f"ünïcødé ✓/{uuid.uuid4()}"
    run = await created(run_store, tag=old)
    await run_store.update_tag(run.algorithm, run.id, new)
    assert ids(await run_store.by_tag(new)) == [run.id]
    assert await run_store.by_tag(old) == []
    assert (await run_store.get(run.algorithm, run.id)).tag == new


async def test_by_host_stage_follows_stage_changes(run_store):
    host, start = f"host-{uuid.uuid4()}", now_ms()
    runs = [
        await created(run_store, received_by_host=host, received_at=start + timedelta(seconds=n))
        for n in range(5)
    ]
    await reach(run_store, runs[1], S.BUFFERED)
    await reach(run_store, runs[2], S.RUNNING)
    await reach(run_store, runs[3], S.COMPLETED)
    await reach(run_store, runs[4], S.CANCELLED)
    expected = {S.NEW: [runs[0].id], S.BUFFERED: [runs[1].id], S.RUNNING: [runs[2].id]}
    for stage, want in expected.items():
        assert ids(await run_store.by_host_stage(host, stage)) == want, stage
    assert await run_store.by_host_stage(f"host-{uuid.uuid4()}", S.NEW) == []
    # Finished runs are not looked up by host (no reader needs them, so no store keeps
    # a row for them): asking is a mistake, not an empty answer.
    for stage in (S.COMPLETED, S.CANCELLED, S.FAILED):
        with pytest.raises(ValueError, match="unfinished"):
            await run_store.by_host_stage(host, stage)


async def test_by_host_stage_lists_oldest_first(run_store):
    host, start = f"host-{uuid.uuid4()}", now_ms()
    late = await created(run_store, received_by_host=host, received_at=start)
    early = await created(
        run_store, received_by_host=host, received_at=start - timedelta(minutes=1)
    )
    assert ids(await run_store.by_host_stage(host, S.NEW)) == [early.id, late.id]


async def test_by_host_stage_with_hundreds_of_runs_of_several_algorithms(run_store):
    """More runs than one read page (the Cassandra store reads 100 ids per query), spread
    over algorithms, each found once and whole."""
    host, start = f"host-{uuid.uuid4()}", now_ms()
    runs = [
        make_run(
            received_by_host=host,
            algorithm=f"algo-{n % 3}",
            received_at=start + timedelta(milliseconds=n),
        )
        for n in range(250)
    ]
    await asyncio.gather(*(run_store.create(run, None) for run in runs))
    found = await run_store.by_host_stage(host, S.NEW)
    assert found == runs  # every field, oldest first


async def test_children_of_a_parent(run_store):
    parent = await created(run_store)
    ref = ParentRef(request_id=parent.id, algorithm_name=parent.algorithm)
    start = now_ms()
    kids = [
        await created(
            run_store, parent=ref, algorithm=name, received_at=start + timedelta(seconds=n)
        )
        for n, name in enumerate(["child-a", "child-b"])
    ]
    await created(
        run_store, parent=ParentRef(request_id=str(uuid.uuid4()), algorithm_name=parent.algorithm)
    )
    await run_store.transition(kids[0].algorithm, kids[0].id, S.CANCELLED)
    assert ids(await run_store.children(ref)) == ids(kids)
    unknown = ParentRef(request_id=str(uuid.uuid4()), algorithm_name=ALGORITHM)
    assert await run_store.children(unknown) == []


# --- leases ------------------------------------------------------------------------------


async def test_heartbeat_keeps_a_lease_until_it_expires(run_store):
    alive, dying = f"host-{uuid.uuid4()}", f"host-{uuid.uuid4()}"
    await run_store.heartbeat(alive, 60)
    await run_store.heartbeat(dying, 0.2)
    await asyncio.sleep(0.5)
    expired = await run_store.expired_hosts()
    assert dying in expired and alive not in expired
    await run_store.heartbeat(dying, 60)  # it came back
    assert dying not in await run_store.expired_hosts()


async def test_drop_lease_removes_only_an_expired_lease(run_store):
    """No sleep decides the outcome: ``gone`` is dropped once it is seen expired, and
    ``back`` is dropped right after a heartbeat that keeps it for 5 s (a loaded machine
    stalling that long would fail it), then seen to expire, then dropped for good."""
    gone, back = f"host-{uuid.uuid4()}", f"host-{uuid.uuid4()}"
    await run_store.heartbeat(gone, 0.2)
    await until_expired(run_store, gone)
    await run_store.heartbeat(back, 5.0)
    await run_store.drop_lease(gone)
    await run_store.drop_lease(back)  # not expired yet: must stay
    assert gone not in await run_store.expired_hosts()
    await until_expired(run_store, back)  # still there: it expires in its own time
    await run_store.drop_lease(back)
    assert back not in await run_store.expired_hosts()


async def until_expired(run_store, host: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while host not in await run_store.expired_hosts():
        assert time.monotonic() < deadline, f"the lease of {host} never expired"
        await asyncio.sleep(0.1)


async def test_ping_answers(run_store):
    await run_store.ping()


# --- a server that does not answer ------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["sqlite", "cassandra"])
async def test_unreachable_store_is_backend_unavailable(kind, tmp_path):
    """Needs no server: nothing listens where the store is pointed."""
    if kind == "sqlite":
        store = SqliteRunStore(tmp_path)  # a folder where the database file should be
    else:
        store = CassandraRunStore(
            ScyllaCqlStore(hosts=["127.0.0.1"], port=closed_port(), connect_timeout=1.0)
        )
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(store.open(), 30)


# --- completion webhooks ---------------------------------------------------------------


async def pending_ids(store) -> set[str]:
    # The Cassandra keyspace is shared by every test: look for ours among all.
    return set(ids(await store.pending_callbacks(100_000)))


async def test_a_webhook_is_pending_from_the_end_of_its_run_until_it_is_done(run_store):
    run = await created(run_store, callback_url="https://hooks.example/done")
    plain = await reach(run_store, await created(run_store), S.COMPLETED)
    running = await reach(run_store, run, S.RUNNING)
    assert run.id not in await pending_ids(run_store)  # not finished yet
    finished = await run_store.transition(run.algorithm, run.id, S.COMPLETED, result_uri="r")
    pending = await pending_ids(run_store)
    assert run.id in pending and plain.id not in pending
    assert running.callback_state is None and finished.callback_url == run.callback_url

    claim = CallbackState(attempts=1, next_at=now_ms() + timedelta(seconds=40))
    claimed = await run_store.update_callback(run.algorithm, run.id, None, claim)
    assert claimed is not None and claimed.callback_state == claim
    read = await run_store.get(run.algorithm, run.id)
    assert read.callback_state == claim and read.callback_done_at is None
    # A rival that read the state before the claim loses, and writes nothing.
    assert await run_store.update_callback(run.algorithm, run.id, None, CallbackState()) is None
    assert (await run_store.get(run.algorithm, run.id)).callback_state == claim
    assert run.id in await pending_ids(run_store)

    # The state as read back is what the next compare-and-set compares with.
    delivered = CallbackState(attempts=1, last_status=204, delivered_at=now_ms())
    done = await run_store.update_callback(
        run.algorithm, run.id, read.callback_state, delivered, done=True
    )
    assert done is not None and done.callback_done_at is not None
    assert run.id not in await pending_ids(run_store)
    after = await run_store.get(run.algorithm, run.id)
    assert after.callback_state == delivered and after.callback_done_at is not None
    assert after.lifecycle_stage is S.COMPLETED and after.result_uri == "r"
    # Done is final: no state moves it back.
    assert await run_store.update_callback(run.algorithm, run.id, delivered, claim) is None
    with pytest.raises(NotFound):
        await run_store.update_callback(ALGORITHM, str(uuid.uuid4()), None, claim)


async def test_every_final_stage_makes_a_webhook_pending(run_store):
    runs = {
        stage: await reach(
            run_store, await created(run_store, callback_url="http://hooks.example/x"), stage
        )
        for stage in TERMINAL_STAGES
    }
    pending = await pending_ids(run_store)
    assert {run.id for run in runs.values()} <= pending
