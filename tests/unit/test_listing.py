"""core.listing and core.history: cursors, query matching, the events of changes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from nexus.core.history import STAGE, created_event, transition_event, webhook_event
from nexus.core.listing import Position, RunQuery, decode_cursor, encode_cursor, page_of
from nexus.core.models import CallbackState, Run
from nexus.core.models import LifecycleStage as S
from nexus.errors import BadRequest

AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def run(minutes: int = 0, **fields) -> Run:
    values = {"algorithm": "algo", "id": f"id-{minutes:04d}", "lifecycle_stage": S.NEW}
    return Run(**{**values, "received_at": AT + timedelta(minutes=minutes), **fields})


def test_a_cursor_names_its_position_exactly_to_the_microsecond():
    query = RunQuery(algorithm="algo", stages=frozenset({S.FAILED}))
    position = Position(AT, "algo", "id-1")
    assert decode_cursor(encode_cursor(position, query), query) == position


def test_a_cursor_keeps_working_with_another_page_size_only():
    query = RunQuery(tag="t", limit=10)
    cursor = encode_cursor(Position(AT, "a", "b"), query)
    assert decode_cursor(cursor, RunQuery(tag="t", limit=500)) == Position(AT, "a", "b")
    with pytest.raises(BadRequest, match="other filters"):
        decode_cursor(cursor, RunQuery(tag="u"))


@pytest.mark.parametrize(
    "text",
    [
        "!!!",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b'[1e400,"a","b",0]').decode(),
        base64.urlsafe_b64encode(b'[99999999999999999999,"a","b",0]').decode(),
        base64.urlsafe_b64encode(b'[1,"a","b",0,"extra"]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "",
    ],
)
def test_a_garbled_cursor_is_a_bad_request(text):
    with pytest.raises(BadRequest, match="cursor"):
        decode_cursor(text, RunQuery())


def test_a_page_is_newest_first_and_names_its_last_run():
    runs = [run(i) for i in range(5)]
    page = page_of(runs, 3)
    assert [r.id for r in page.runs] == ["id-0004", "id-0003", "id-0002"]
    assert page.next == Position(runs[2].received_at, "algo", "id-0002")
    assert page_of(runs, 5).next is None


def test_a_query_matches_its_window_excluding_the_end_and_after_its_position():
    query = RunQuery(
        since=AT,
        until=AT + timedelta(minutes=3),
        after=Position(AT + timedelta(minutes=2), "algo", "id-0002"),
    )
    assert [query.matches(run(i)) for i in range(4)] == [True, True, False, False]
    assert not RunQuery().matches(run(0, received_at=None))


def test_events_of_changes_say_why():
    created = run(0)
    assert created_event(created).cause == "request accepted"
    launched = transition_event(created, S.BUFFERED, {"last_modified": AT})
    assert (launched.kind, launched.previous, launched.stage) == (STAGE, S.NEW, S.BUFFERED)
    failed = transition_event(
        run(0, lifecycle_stage=S.RUNNING),
        S.FAILED,
        {"last_modified": AT, "algorithm_failure_cause": "exit 3"},
    )
    assert failed.cause == "exit 3" and failed.at == AT
    running = transition_event(
        run(0, lifecycle_stage=S.BUFFERED, cluster="c1"), S.RUNNING, {"last_modified": AT}
    )
    assert running.cause == "Job launched on cluster c1"


def test_a_webhook_claim_is_no_event_and_an_outcome_is():
    claim = CallbackState(attempts=1, next_at=AT)
    assert webhook_event(None, claim, AT) is None
    failed = CallbackState(attempts=1, last_error="HTTP 500", last_status=500)
    assert webhook_event(claim, failed, AT).cause == "attempt 1: HTTP 500"
    given_up = CallbackState(attempts=1, last_error="refused", gave_up=True)
    assert webhook_event(claim, given_up, AT).cause == "attempt 1: refused; given up"
    delivered = CallbackState(attempts=1, last_status=204, delivered_at=AT)
    assert webhook_event(claim, delivered, AT).cause == "attempt 1: delivered (HTTP 204)"
