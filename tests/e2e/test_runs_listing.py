"""The listing, stage counts, history and resubmit routes end to end on embedded
defaults (docs/runs-api.md): a real nexus process, the behave test algorithm, SQLite."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.support import API, assert_error, cancel, create, metadata, wait_stage, wait_terminal


def listing(client: httpx.Client, **params) -> dict:
    response = client.get(f"{API}/runs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def every_page(client: httpx.Client, **params) -> list[dict]:
    runs, cursor = [], None
    for _ in range(1000):
        body = listing(client, **params, **({"cursor": cursor} if cursor else {}))
        runs += body["runs"]
        cursor = body.get("nextCursor")
        if cursor is None:
            return runs
    raise AssertionError("no last page")


@pytest.fixture(scope="module")
def runs(api) -> dict[str, list[str]]:
    """Runs of the module's server: some completed, some failed, one tagged family."""
    tag = f"family-{uuid.uuid4().hex[:8]}"
    done = [create(api, {"n": i}, tag=tag) for i in range(7)]
    failed = [create(api, {"error": f"bad rows {i}"}, tag=tag) for i in range(3)]
    for run_id in done + failed:
        wait_terminal(api, run_id)
    return {"done": done, "failed": failed, "tag": [tag]}


def test_pages_list_every_run_newest_first(api, runs):
    tag = runs["tag"][0]
    found = every_page(api, tag=tag, limit=3)
    ids = [run["requestId"] for run in found]
    assert sorted(ids) == sorted(runs["done"] + runs["failed"])
    assert ids == [
        run["requestId"] for run in sorted(found, key=lambda r: r["receivedAt"], reverse=True)
    ]
    first = listing(api, tag=tag, limit=3)
    assert len(first["runs"]) == 3 and first["nextCursor"]
    run = next(r for r in found if r["requestId"] == runs["failed"][0])
    assert run["stage"] == "FAILED" and run["errorCause"] == "bad rows 0"
    assert run["algorithm"] == "behave" and run["tag"] == tag and run["receivedAt"].endswith("Z")
    last = listing(api, tag=tag, limit=1000)
    assert "nextCursor" not in last and len(last["runs"]) == 10


def test_stage_filters(api, runs):
    tag = runs["tag"][0]
    failed = every_page(api, tag=tag, stage="FAILED")
    assert {r["requestId"] for r in failed} == set(runs["failed"])
    both = every_page(api, tag=tag, stage=["FAILED", "COMPLETED"], limit=4)
    assert len(both) == 10
    comma = every_page(api, tag=tag, stage="failed,completed")
    assert {r["requestId"] for r in comma} == {r["requestId"] for r in both}
    assert every_page(api, tag=tag, stage="RUNNING") == []


def test_window_and_algorithm(api, runs):
    now = datetime.now(UTC)
    recent = every_page(
        api,
        algorithm="behave",
        since=(now - timedelta(hours=1)).isoformat(),
        until=(now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        limit=1000,
    )
    assert set(runs["done"] + runs["failed"]) <= {r["requestId"] for r in recent}
    future = listing(api, since=(now + timedelta(days=1)).isoformat())
    assert future == {"runs": []}
    assert listing(api, algorithm="behave-team-x")["runs"] == []


def test_parent_filter(api):
    parent = create(api, {"n": 0})
    children = {
        create(api, {"n": i}, parentRequest={"requestId": parent, "algorithmName": "behave"})
        for i in range(2)
    }
    found = every_page(api, parent=f"behave/{parent}")
    assert {r["requestId"] for r in found} == children
    assert all(r["parent"] == {"requestId": parent, "algorithmName": "behave"} for r in found)


def test_counts_per_stage(api, runs):
    response = api.get(f"{API}/runs/counts", params={"algorithm": "behave"})
    assert response.status_code == 200, response.text
    body = response.json()
    counts = {(c["algorithm"], c["stage"]): c["count"] for c in body["counts"]}
    assert counts[("behave", "COMPLETED")] >= 7 and counts[("behave", "FAILED")] >= 3
    assert body["since"] < body["until"]
    empty = api.get(
        f"{API}/runs/counts",
        params={"since": "2001-01-01T00:00:00Z", "until": "2001-01-02T00:00:00Z"},
    ).json()
    assert empty["counts"] == []


def test_history_of_a_finished_and_a_cancelled_run(api, runs):
    response = api.get(f"{API}/runs/behave/requests/{runs['failed'][0]}/events")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["algorithm"] == "behave" and body["requestId"] == runs["failed"][0]
    stages = [(e.get("previous"), e["stage"]) for e in body["events"]]
    assert stages == [
        (None, "NEW"),
        ("NEW", "BUFFERED"),
        ("BUFFERED", "RUNNING"),
        ("RUNNING", "FAILED"),
    ]
    assert body["events"][-1]["cause"] == "bad rows 0"
    assert all(e["kind"] == "stage" and e["at"].endswith("Z") for e in body["events"])

    slow = create(api, {"sleep": 30})
    wait_stage(api, slow, {"RUNNING"})
    assert cancel(api, slow, reason="enough").status_code == 200
    events = api.get(f"{API}/runs/behave/requests/{slow}/events").json()["events"]
    assert events[-1]["stage"] == "CANCELLED" and "pytest" in events[-1]["cause"]


def test_history_of_an_unknown_run_is_404(api):
    response = api.get(f"{API}/runs/behave/requests/{uuid.uuid4()}/events")
    assert_error(response, 404, "not found")


def test_resubmit_runs_the_same_payload_again_linked_to_the_original(api, server, runs):
    original = runs["failed"][1]
    response = api.post(f"{API}/resubmit/behave/requests/{original}")
    assert response.status_code == 202, response.text
    again = response.json()["requestId"]
    assert again != original
    assert wait_terminal(api, again)["runErrorMessage"] == "bad rows 1"  # the same payload
    body = metadata(api, again)
    assert body["resubmitted_from"] == original and body["tag"] == runs["tag"][0]
    listed = next(r for r in every_page(api, tag=runs["tag"][0]) if r["requestId"] == again)
    assert listed["resubmittedFrom"] == original

    retagged = api.post(f"{API}/resubmit/behave/requests/{original}", json={"tag": "second-try"})
    assert retagged.status_code == 202, retagged.text
    assert metadata(api, retagged.json()["requestId"])["tag"] == "second-try"


def test_resubmit_with_new_overrides(api, runs):
    original = runs["done"][0]
    body = {"customConfiguration": {"container": {"versionTag": "2"}}}
    response = api.post(f"{API}/resubmit/behave/requests/{original}", json=body)
    assert response.status_code == 202, response.text
    again = metadata(api, response.json()["requestId"])
    assert again["configuration_overrides"] == {"container": {"versionTag": "2"}}
    assert again["applied_configuration"]["container"]["versionTag"] == "2"


def settle(api: httpx.Client) -> None:
    """Wait until no run of the module's server changes any more (earlier tests' runs)."""
    for run in every_page(api, stage="NEW,BUFFERED,RUNNING", limit=1000):
        wait_terminal(api, run["requestId"])


def test_resubmit_unknown_is_404_and_unfinished_is_409(api, server):
    settle(api)
    rows = server.written()
    assert_error(api.post(f"{API}/resubmit/behave/requests/{uuid.uuid4()}"), 404, "not found")
    assert server.written() == rows
    slow = create(api, {"sleep": 30})
    wait_stage(api, slow, {"RUNNING"})  # then nothing changes for 30 seconds
    rows = server.written()
    assert_error(api.post(f"{API}/resubmit/behave/requests/{slow}"), 409, "only a finished run")
    assert server.written() == rows
    cancel(api, slow)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"tag": 7}',
        b'{"unknown": 1}',
        b'{"tag": "a\\u0000b"}',
        b'{"customConfiguration": {"nope": 1}}',
        b'{"tag": "' + b"t" * 300 + b'"}',
    ],
)
def test_resubmit_with_a_bad_body_is_400_and_writes_nothing(api, server, runs, body):
    settle(api)
    rows = server.written()
    response = api.post(
        f"{API}/resubmit/behave/requests/{runs['done'][1]}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert server.written() == rows


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"stage": "DONE"}, "Invalid stage"),
        ({"stage": ""}, "empty"),
        ({"since": "yesterday"}, "RFC 3339"),
        ({"since": "2026-01-01"}, "RFC 3339"),
        ({"until": "2026-01-01T00:00:00"}, "RFC 3339"),
        ({"since": "2026-13-01T00:00:00Z"}, "RFC 3339"),
        ({"since": "0001-01-01T00:00:00Z"}, "from 1970"),
        ({"until": "9999-12-31T23:59:59Z"}, "from 1970"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "before until"),
        ({"limit": "0"}, "Invalid limit"),
        ({"limit": "1001"}, "Invalid limit"),
        ({"limit": "abc"}, "whole number"),
        ({"limit": "-1"}, "whole number"),
        ({"limit": "9" * 40}, "Invalid limit"),
        ({"limit": ["5", "6"]}, "at most once"),
        ({"cursor": "garbled!!"}, "Invalid cursor"),
        ({"cursor": "W10"}, "Invalid cursor"),  # base64 of []
        ({"cursor": "x" * 600}, "Invalid cursor"),
        ({"algorithm": "Not_A_Name"}, "Invalid algorithm name"),
        ({"algorithm": "a" * 2000}, "at most"),
        ({"tag": "t" * 300}, "Invalid tag"),
        ({"tag": "a\x01b"}, "control character"),
        ({"parent": "no-slash"}, "Invalid parent"),
        ({"parent": "behave/../../etc"}, "Invalid parent"),
        ({"colour": "red"}, "Unknown query parameter"),
    ],
)
def test_bad_listing_queries_are_400(api, params, fragment):
    assert_error(api.get(f"{API}/runs", params=params), 400, fragment)


def test_a_cursor_of_another_query_or_forged_is_400(api, runs):
    tag = runs["tag"][0]
    cursor = listing(api, tag=tag, limit=2)["nextCursor"]
    assert listing(api, tag=tag, limit=5, cursor=cursor)["runs"]  # another limit is fine
    assert_error(
        api.get(f"{API}/runs", params={"cursor": cursor, "tag": "other"}), 400, "other filters"
    )
    forged = (
        base64.urlsafe_b64encode(json.dumps([1, "behave", "x", 0]).encode()).decode().rstrip("=")
    )
    assert_error(api.get(f"{API}/runs", params={"cursor": forged, "tag": tag}), 400, "cursor")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "31 days"),
        ({"since": "soon"}, "RFC 3339"),
        ({"until": "0001-01-01T00:00:00Z"}, "from 1970"),
        ({"algorithm": "BAD"}, "Invalid algorithm name"),
        ({"stage": "NEW"}, "Unknown query parameter"),
    ],
)
def test_bad_count_queries_are_400(api, params, fragment):
    assert_error(api.get(f"{API}/runs/counts", params=params), 400, fragment)
