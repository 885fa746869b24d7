"""The completion use case (the receiver): the first report wins, later ones change
nothing, and whoever waits on the run is woken."""

from __future__ import annotations

import asyncio

import pytest
from fakes import MemoryStore

from nexus.core.completion import Completion
from nexus.core.models import LifecycleStage as S
from nexus.core.signing import RunTokens
from nexus.core.watch import RunWatch
from nexus.errors import BadRequest, Forbidden, NotFound, Unauthenticated

RUN_ID = "0b9c6d1e-3f4a-4b5c-8d7e-9f0a1b2c3d4e"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.mark.parametrize("stage", [S.BUFFERED, S.RUNNING])
async def test_a_success_completes_the_run_and_wakes_its_waiters(store, stage):
    store.add(RUN_ID, stage)
    watch = RunWatch()
    completion = Completion(store, watch)
    waiter = asyncio.ensure_future(watch.wait("algo", RUN_ID, 30.0))
    await asyncio.sleep(0)  # the waiter is waiting
    run = await completion.complete("algo", RUN_ID, result_uri="s3://r/1")
    assert run.lifecycle_stage is S.COMPLETED and run.result_uri == "s3://r/1"
    await asyncio.wait_for(waiter, 5)  # woken, not timed out
    assert await completion.is_processed("algo", RUN_ID)


async def test_an_error_report_fails_the_run_with_its_cause(store):
    store.add(RUN_ID, S.RUNNING)
    completion = Completion(store, RunWatch())
    run = await completion.complete(
        "algo", RUN_ID, result_uri="", error_cause="ValueError", error_details="bad input"
    )
    assert run.lifecycle_stage is S.FAILED
    assert (run.algorithm_failure_cause, run.algorithm_failure_details) == (
        "ValueError",
        "bad input",
    )


async def test_the_first_report_wins(store):
    store.add(RUN_ID, S.RUNNING)
    completion = Completion(store, RunWatch())
    await completion.complete("algo", RUN_ID, result_uri="s3://first")
    writes = len(store.transitions)
    again = await completion.complete("algo", RUN_ID, result_uri="", error_cause="late")
    assert again.lifecycle_stage is S.COMPLETED and again.result_uri == "s3://first"
    assert len(store.transitions) == writes  # nothing written


async def test_a_report_for_a_new_run_changes_nothing(store):
    # NEW -> COMPLETED is not a transition the lifecycle allows: the run keeps its stage.
    store.add(RUN_ID, S.NEW)
    completion = Completion(store, RunWatch())
    run = await completion.complete("algo", RUN_ID, result_uri="s3://r")
    assert run.lifecycle_stage is S.NEW and store.transitions == []
    assert not await completion.is_processed("algo", RUN_ID)


async def test_unknown_and_malformed_runs_are_refused(store):
    completion = Completion(store, RunWatch())
    with pytest.raises(NotFound):
        await completion.complete("algo", RUN_ID, result_uri="s3://r")
    with pytest.raises(NotFound):  # an id nexus could not have given is unknown too
        await completion.complete("algo", "../etc", result_uri="s3://r")
    with pytest.raises(BadRequest):
        await completion.is_processed("Not An Algorithm!", RUN_ID)
    assert store.transitions == []


async def test_with_receiver_tokens_only_the_runs_own_token_reports(store):
    """Refused before the store is read: the run is not even looked up."""
    store.add(RUN_ID, S.RUNNING)
    tokens = RunTokens(b"unit-test-receiver-token-secret")
    completion = Completion(store, RunWatch(), tokens)
    other = tokens.issue("algo", "00000000-0000-4000-8000-000000000000", 60)
    for token, refusal in ((None, Unauthenticated), ("nxr1.x.y", Unauthenticated)):
        with pytest.raises(refusal):
            await completion.complete("algo", RUN_ID, result_uri="s3://x", token=token)
    with pytest.raises(Forbidden):
        await completion.complete("algo", RUN_ID, result_uri="s3://x", token=other)
    with pytest.raises(Forbidden):
        await completion.is_processed("algo", RUN_ID, other)
    # An unknown run is refused alike: a wrong token does not learn that it is missing.
    with pytest.raises(Forbidden):
        await completion.is_processed("algo", "11111111-1111-4111-8111-111111111111", other)
    assert (
        store.transitions == [] and (await store.get("algo", RUN_ID)).lifecycle_stage is S.RUNNING
    )
    own = tokens.issue("algo", RUN_ID, 60)
    run = await completion.complete("algo", RUN_ID, result_uri="s3://ok", token=own)
    assert run.lifecycle_stage is S.COMPLETED
    assert await completion.is_processed("algo", RUN_ID, own)
