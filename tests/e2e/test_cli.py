"""The ``nexus`` client commands against a running nexus on embedded defaults: output,
--json, the live display, and every documented exit code."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, NexusProcess, free_port

ALG = "behave"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> NexusProcess:
    proc = NexusProcess(tmp_path_factory.mktemp("cli") / "data").start()
    yield proc
    proc.stop()
    proc.kill_algorithms()  # local processes outlive a stopped nexus


def _env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS")}
    if url:
        env["NEXUS_SCHEDULER_URL"] = url
    return env


def nexus(
    server: NexusProcess | None, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nexus.cli", *args],
        cwd=REPO,
        env=_env(server.url if server else None),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _read_until_closed(fd: int) -> bytes:
    """Everything a pty's other end wrote, until it closed (EIO on Linux)."""
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return output
        if not chunk:
            return output
        output += chunk


def start(server: NexusProcess, payload: dict, *extra: str) -> str:
    done = nexus(server, "run", ALG, "--payload", "-", *extra, stdin=json.dumps(payload))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_run_prints_the_request_id_and_get_shows_it(server) -> None:
    run_id = start(server, {"sleep": 0.1}, "--tag", "cli-basic")
    assert len(run_id) == 36
    waited = nexus(server, "wait", ALG, run_id, "--timeout", "30s")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith(f"{run_id}\tCOMPLETED\thttp")
    got = nexus(server, "get", ALG, run_id)
    assert got.returncode == 0 and got.stdout.split("\t")[:2] == [run_id, "COMPLETED"]
    as_json = json.loads(nexus(server, "get", ALG, run_id, "--json").stdout)
    assert as_json["requestId"] == run_id and as_json["status"] == "COMPLETED"


def test_run_from_file_with_wait_dry_run_and_idempotency(server, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"x": 1}')
    done = nexus(
        server,
        "run",
        ALG,
        "--payload",
        str(payload),
        "--wait",
        "--dry-run",
        "--idempotency-key",
        "k-1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    assert first["status"] == "COMPLETED"
    again = nexus(
        server,
        "run",
        ALG,
        "--payload",
        str(payload),
        "--dry-run",
        "--idempotency-key",
        "k-1",
        "--json",
    )
    assert json.loads(again.stdout) == {"requestId": first["requestId"]}


def test_custom_configuration_parent_and_validity(server, tmp_path: Path) -> None:
    custom = tmp_path / "custom.json"
    custom.write_text('{"runtimeEnvironment": {"deadlineSeconds": 9}}')
    parent = start(server, {"sleep": 30})
    child = start(
        server,
        {"sleep": 30},
        "--parent",
        f"{ALG}/{parent}",
        "--custom-configuration",
        str(custom),
        "--payload-valid-for",
        "2h",
    )
    assert nexus(server, "cancel", ALG, parent, "--reason", "done").returncode == 0
    waited = nexus(server, "wait", ALG, parent, child, "--timeout", "20", "--json")
    assert waited.returncode == 1
    assert [r["status"] for r in json.loads(waited.stdout)] == ["CANCELLED", "CANCELLED"]


def test_runs_by_tag_is_a_table_or_json(server) -> None:
    ids = [start(server, {}, "--tag", "cli-table", "--dry-run") for _ in range(2)]
    assert nexus(server, "wait", ALG, *ids, "--timeout", "30").returncode == 0
    table = nexus(server, "runs", "--tag", "cli-table")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["REQUEST", "ID", "ALGORITHM", "STATUS", "RESULT", "/", "ERROR"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(ids)
    rows = json.loads(nexus(server, "runs", "--tag", "cli-table", "--json").stdout)
    assert {r["algorithmName"] for r in rows} == {ALG} and len(rows) == 2
    empty = nexus(server, "runs", "--tag", "no-such-tag")
    assert empty.returncode == 0 and empty.stdout.splitlines()[1:] == []


def test_runs_by_a_tag_with_slashes_and_unicode(server) -> None:
    tag = "cli ünï/cødé?#%"
    run_id = start(server, {}, "--tag", tag, "--dry-run")
    rows = json.loads(nexus(server, "runs", "--tag", tag, "--json").stdout)
    assert [row["requestId"] for row in rows] == [run_id]


def test_wait_prints_plain_lines_when_not_a_terminal(server) -> None:
    ok = start(server, {"sleep": 0.2})
    bad = start(server, {"error": "exploded"})
    waited = nexus(server, "wait", ALG, ok, bad, "--timeout", "30")
    assert waited.returncode == 1
    assert "\x1b" not in waited.stdout
    lines = sorted(waited.stdout.splitlines())
    assert sorted([lines[0].split("\t")[0], lines[1].split("\t")[0]]) == sorted([ok, bad])
    assert f"{bad}\tFAILED\texploded" in waited.stdout


def test_wait_shows_a_live_display_on_a_terminal(server) -> None:
    ids = [start(server, {"sleep": s}) for s in (0.2, 0.5, 1.0)]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus.cli", "wait", ALG, *ids],
        cwd=REPO,
        env=_env(server.url),
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    output = _read_until_closed(leader)
    assert proc.wait(30) == 0
    os.close(leader)
    text = output.decode()
    assert "\x1b[2K" in text and "3/3 finished: 3 completed" in text
    for run_id in ids:
        assert f"{run_id}\tCOMPLETED" in text


# --- exit codes: 1 failed, 2 usage/bad request, 3 not found, 4 timeout, 5 unavailable,
# 6 conflict -----------------------------------------------------------------------


def test_exit_1_when_the_run_fails(server) -> None:
    done = nexus(server, "run", ALG, "--payload", "-", "--wait", stdin='{"error": "no luck"}')
    assert done.returncode == 1 and "\tFAILED\tno luck" in done.stdout
    run_id = done.stdout.split("\t")[0]
    assert nexus(server, "get", ALG, run_id).returncode == 1


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        ((), None, "choose a role"),
        (("run", ALG, "--payload", "-"), "not json", "not valid JSON"),
        (("run", ALG, "--payload", "-"), "[1]", "must hold a JSON object"),
        (("run", ALG, "--payload", "/no/such/file"), None, "cannot read payload"),
        (("run", ALG, "--payload", "-", "--parent", "just-an-id"), "{}", "ALGORITHM/REQUEST_ID"),
        (("run", "no-such-algorithm", "--payload", "-"), "{}", "400 No valid configuration"),
        (("run", ALG, "--payload", "-", "--payload-valid-for", "soon"), "{}", "payloadValidFor"),
        (("wait", ALG, UNKNOWN, "--timeout", "soon"), None, "invalid duration"),
        (("cancel", ALG, UNKNOWN, "--policy", "Sideways"), None, "invalid choice"),
        (("get", ALG), None, "required"),
        (("--role", "all", "get", ALG, UNKNOWN), None, "do not go with a client command"),
        (("--role", "chef"), None, "invalid choice"),
        (("launch",), None, "invalid choice"),
        (("get", ALG, UNKNOWN, "--scheduler", "not-a-url"), None, "expected http:// or https://"),
        (("get", ALG, UNKNOWN, "--scheduler", "ftp://host"), None, "is not a scheduler URL"),
    ],
)
def test_exit_2_for_usage_errors_and_bad_requests(server, args, stdin, message) -> None:
    done = nexus(server, *args, stdin=stdin)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("get", ALG, UNKNOWN),
        ("cancel", ALG, UNKNOWN),
        ("wait", ALG, UNKNOWN),
        ("get", ALG, "not-a-request-id"),
    ],
)
def test_exit_3_when_the_run_is_unknown(server, args) -> None:
    done = nexus(server, *args)
    assert done.returncode == 3, done.stderr
    assert "not found" in (done.stderr + done.stdout)


def test_exit_4_on_timeout(server) -> None:
    slow = start(server, {"sleep": 30})
    started = time.monotonic()
    waited = nexus(server, "wait", ALG, slow, "--timeout", "1")
    assert waited.returncode == 4 and time.monotonic() - started < 20
    assert "still unfinished" in waited.stderr
    done = nexus(
        server,
        "run",
        ALG,
        "--payload",
        "-",
        "--wait",
        "--timeout",
        "1",
        "--json",
        stdin='{"sleep": 30}',
    )
    assert done.returncode == 4
    assert json.loads(done.stdout)["status"] in {"NEW", "BUFFERED", "RUNNING"}
    assert nexus(server, "cancel", ALG, slow).returncode == 0


def test_exit_5_when_the_server_is_unreachable() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nexus.cli",
            "get",
            ALG,
            UNKNOWN,
            "--scheduler",
            f"http://127.0.0.1:{free_port()}",
        ],
        cwd=REPO,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5 and "Cannot reach" in done.stderr


def test_exit_6_when_cancelling_a_finished_run(server) -> None:
    run_id = start(server, {}, "--dry-run")
    assert nexus(server, "wait", ALG, run_id, "--timeout", "30").returncode == 0
    done = nexus(server, "cancel", ALG, run_id, "--json")
    assert done.returncode == 6 and "already finished" in done.stderr


def test_help_documents_the_exit_codes(server) -> None:
    for args in (("--help",), ("wait", "--help")):
        done = nexus(server, *args)
        assert done.returncode == 0
        for code in range(7):
            assert f"\n  {code}  " in done.stdout


def test_version() -> None:
    from nexus.version import nexus_version

    done = nexus(None, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"nexus {nexus_version()}"


def test_output_formats_and_flags_before_or_after_the_command(server) -> None:
    import yaml

    run_id = start(server, {}, "--tag", "cli-output")
    assert nexus(server, "wait", ALG, run_id, "--timeout", "30s").returncode == 0
    # flags before the command (the environment names no scheduler: the flag is used)
    before = nexus(None, "--scheduler", server.url, "-o", "yaml", "get", ALG, run_id)
    assert before.returncode == 0, before.stderr
    assert yaml.safe_load(before.stdout)["status"] == "COMPLETED"
    # ... and after it; a flag after the command wins over one before it
    after = nexus(
        None,
        "--scheduler",
        "http://127.0.0.1:9",
        "get",
        ALG,
        run_id,
        "--scheduler",
        server.url,
        "-o",
        "json",
    )
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["requestId"] == run_id
    wide = nexus(server, "runs", "--tag", "cli-output", "-o", "wide")
    header, row = wide.stdout.splitlines()
    assert header.split() == ["REQUEST", "ID", "ALGORITHM", "STATUS", "RESULT", "URI", "ERROR"]
    assert row.split()[:3] == [run_id, ALG, "COMPLETED"] and row.split()[-1] == "-"
    listed = yaml.safe_load(nexus(server, "runs", "--tag", "cli-output", "-o", "yaml").stdout)
    assert [r["requestId"] for r in listed] == [run_id]
    refused = nexus(server, "get", ALG, run_id, "-o", "xml")
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_and_completions(shell, tmp_path) -> None:
    script = nexus(None, "completion", shell)
    assert script.returncode == 0 and "nexus" in script.stdout and "_ARGCOMPLETE" in script.stdout
    # what the installed hook asks of nexus, and what nexus answers
    answer = tmp_path / "completions"
    env = {
        **_env(None),
        "_ARGCOMPLETE": "1",
        "COMP_LINE": "nexus ru",
        "COMP_POINT": "8",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    done = subprocess.run(
        [sys.executable, "-m", "nexus.cli"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(answer.read_text().split("\v")) == ["run", "runs"]


ORDER = ["NEW", "BUFFERED", "RUNNING", "COMPLETED"]


def test_run_wait_shows_each_stage_on_stderr_and_only_the_result_on_stdout(server) -> None:
    done = nexus(server, "run", ALG, "--payload", "-", "--wait", stdin='{"sleep": 2.5}')
    assert done.returncode == 0, done.stderr
    (result,) = done.stdout.splitlines()
    run_id, status = result.split("\t")[:2]
    assert status == "COMPLETED"
    lines = [line.split("\t") for line in done.stderr.splitlines()]
    assert all(line[0] == run_id for line in lines), done.stderr
    stages = [line[1] for line in lines]
    assert stages[-1] == "COMPLETED" and "RUNNING" in stages, stages
    assert stages == sorted(stages, key=ORDER.index), stages  # one line per change, in order


def test_run_wait_redraws_the_stage_in_place_on_a_terminal(server) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nexus.cli", "run", ALG, "--payload", "-", "--wait"],
            cwd=REPO,
            env=_env(server.url),
            input=b'{"sleep": 1}',
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = _read_until_closed(leader)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0
    assert b"\r\x1b[K" in shown and b"RUNNING" in shown and b"\n" not in shown.rstrip(b"\r\n")
