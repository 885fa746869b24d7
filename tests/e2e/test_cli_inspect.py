"""``nexus ls``, ``history``, ``logs``, ``result`` and ``resubmit`` against a running
nexus on embedded defaults (the behave algorithm as a local process), and the routes
under them: the listing, a run's events, its log tail and the resubmit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import NexusProcess
from support import API, assert_error, create, wait_terminal
from test_cli import ALG, UNKNOWN, nexus, start

LINES = [f"line {i} <b>of</b> the log" for i in range(30)]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> NexusProcess:
    proc = NexusProcess(tmp_path_factory.mktemp("inspect") / "data").start()
    yield proc
    proc.stop()
    proc.kill_algorithms()


@pytest.fixture(scope="module")
def api(server: NexusProcess):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def test_logs_prints_the_process_output_tail(server, api) -> None:
    run_id = create(api, {"say": LINES}, tag="inspect-logs")
    wait_terminal(api, run_id)
    whole = api.get(f"{API}/logs/{ALG}/requests/{run_id}")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/plain")
    assert "line 0 <b>of</b> the log" in whole.text and "err: line 29" in whole.text
    tail = nexus(server, "logs", ALG, run_id, "--tail", "2")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == [
        "line 29 <b>of</b> the log",
        "err: line 29 <b>of</b> the log",
    ]


@pytest.mark.parametrize("tail", ["0", "10001", "-1", "abc", "²", "1" * 5000, "1.5"])
def test_a_bad_tail_is_400(api, tail: str) -> None:
    run_id = create(api, {})
    assert_error(api.get(f"{API}/logs/{ALG}/requests/{run_id}", params={"tail": tail}), 400, "tail")


def test_logs_of_unknown_or_unlaunched_runs_are_404(server, api) -> None:
    assert_error(api.get(f"{API}/logs/{ALG}/requests/{UNKNOWN}"), 404)
    dry = create(api, {}, dry_run=True)
    assert_error(api.get(f"{API}/logs/{ALG}/requests/{dry}"), 404, "not been launched")
    missing = nexus(server, "logs", ALG, UNKNOWN)
    assert missing.returncode == 3 and "not found" in missing.stderr


def test_result_downloads_the_bytes_or_writes_a_file(server, api, tmp_path: Path) -> None:
    run_id = create(api, {"answer": 42})
    wait_terminal(api, run_id)
    printed = nexus(server, "result", ALG, run_id)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["echo"] == {"answer": 42}
    target = tmp_path / "result.json"
    assert nexus(server, "result", ALG, run_id, "-f", str(target)).returncode == 0
    assert json.loads(target.read_bytes())["echo"] == {"answer": 42}


def test_result_of_a_failed_run_is_exit_3_with_the_reason(server, api) -> None:
    failed = create(api, {"error": "no luck"})
    wait_terminal(api, failed)
    done = nexus(server, "result", ALG, failed)
    assert done.returncode == 3 and "finished without a result" in done.stderr


def test_ls_filters_pages_and_formats(server, api) -> None:
    tag = "inspect-ls"
    ids = [create(api, {}, tag=tag) for _ in range(3)]
    failed = create(api, {"error": "bad"}, tag=tag)
    for run_id in [*ids, failed]:
        wait_terminal(api, run_id)

    listed = nexus(server, "ls", "--tag", tag, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [r["requestId"] for r in json.loads(listed.stdout)["runs"]] == [failed, *ids[::-1]]

    only_failed = nexus(server, "ls", "--tag", tag, "--stage", "failed")
    lines = only_failed.stdout.splitlines()
    assert lines[0].split() == ["REQUEST", "ID", "ALGORITHM", "STAGE", "RECEIVED", "TAG"]
    assert len(lines) == 2 and lines[1].startswith(failed) and "FAILED" in lines[1]

    first = nexus(server, "ls", "--tag", tag, "--limit", "2")
    assert len(first.stdout.splitlines()) == 3 and "--cursor" in first.stderr
    cursor = first.stderr.rsplit("--cursor ", 1)[1].strip()
    second = nexus(server, "ls", "--tag", tag, "--limit", "2", "--cursor", cursor, "-o", "json")
    assert [r["requestId"] for r in json.loads(second.stdout)["runs"]] == ids[1::-1]
    everything = nexus(server, "ls", "--tag", tag, "--limit", "1", "--all", "-o", "yaml")
    assert everything.returncode == 0 and all(run_id in everything.stdout for run_id in ids)
    wide = nexus(server, "ls", "--tag", tag, "-o", "wide")
    assert "CLUSTER" in wide.stdout and "bad" in wide.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ls", "--stage", "DONE"), "invalid choice"),
        (("ls", "--limit", "0"), "page size"),
        (("ls", "--since", "yesterday"), "since"),
        (("ls", "--cursor", "garbage!!"), "cursor"),
        (("logs", ALG, "x", "--tail", "0"), "whole number"),
    ],
)
def test_ls_and_logs_refuse_bad_arguments_with_exit_2(server, args, message: str) -> None:
    done = nexus(server, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr.lower() or message in done.stderr


def test_history_and_resubmit(server, api, tmp_path: Path) -> None:
    original = create(api, {"error": "first try fails"}, tag="inspect-again")
    wait_terminal(api, original)
    history = nexus(server, "history", ALG, original)
    assert history.returncode == 0, history.stderr
    stages = [line.split()[2] for line in history.stdout.splitlines()[1:]]
    assert stages[0] == "NEW" and stages[-1] == "FAILED"
    as_json = json.loads(nexus(server, "history", ALG, original, "-o", "json").stdout)
    assert as_json["requestId"] == original and as_json["events"][-1]["cause"] == "first try fails"

    again = nexus(server, "resubmit", ALG, original, "--tag", "second-try")
    assert again.returncode == 0, again.stderr
    new_id = again.stdout.strip()
    assert new_id != original
    record = api.get(f"{API}/metadata/{ALG}/requests/{new_id}").json()
    assert record["resubmitted_from"] == original and record["tag"] == "second-try"

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = nexus(server, "resubmit", ALG, original, "--custom-configuration", str(bad))
    assert refused.returncode == 2 and "JSON object" in refused.stderr
    unknown = nexus(server, "resubmit", ALG, UNKNOWN)
    assert unknown.returncode == 3


def test_resubmit_of_a_running_run_is_exit_6(server) -> None:
    running = start(server, {"sleep": 60})
    done = nexus(server, "resubmit", ALG, running)
    assert done.returncode == 6, (done.stdout, done.stderr)
    nexus(server, "cancel", ALG, running)
