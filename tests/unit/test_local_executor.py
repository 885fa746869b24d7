"""The local executor: a Job's container command run as a child process (embedded mode)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nexus.backends.k8s.local_executor import LocalExecutor
from nexus.core.ports import Outcome
from nexus.errors import LaunchError
from tests.conftest import kill_group, process_state

TERMINAL_OUTCOMES = {o for o in Outcome if o is not Outcome.RUNNING}


def manifest(
    run_id: str,
    code: str,
    *,
    backoff_limit: int | None = 0,
    deadline: int | None = None,
    fatal: list[int] = (),
    transient: list[int] = (),
    env: dict[str, str] | None = None,
    ttl: int | None = 300,
    command: list[str] | None = None,
) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    if fatal:
        rules.append({"action": "FailJob", "onExitCodes": {"operator": "In", "values": fatal}})
    if transient:
        rules.append({"action": "Ignore", "onExitCodes": {"operator": "In", "values": transient}})
    spec: dict[str, Any] = {
        "podFailurePolicy": {"rules": rules},
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": run_id,
                        "command": command if command is not None else ["python", "-c"],
                        "args": [code] if command is None else [],
                        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                    }
                ],
            }
        },
    }
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    if backoff_limit is not None:
        spec["backoffLimit"] = backoff_limit
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run_id,
            "labels": {"science.sneaksanddata.com/algorithm-template-name": "algo"},
        },
        "spec": spec,
    }


def counting(path: Path, then: str) -> str:
    """Python code that appends one line to ``path`` per attempt, then runs ``then``."""
    return (
        f"import sys, os, time\n"
        f"p = {str(path)!r}\n"
        f"open(p, 'a').write('x\\n')\n"
        f"attempt = len(open(p).read().splitlines())\n"
        f"{then}\n"
    )


def assert_dies(pid: int, timeout: float = 10.0) -> None:
    """The process ends: gone, or a zombie (killed; reaping it is its parent's business,
    the wrapper shell's or, once that is killed too, init's)."""
    deadline = time.monotonic() + timeout
    while (state := process_state(pid)) is not None and state[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} still {state[0]}"
        time.sleep(0.02)


def attempts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
async def executor(tmp_path):
    ex = LocalExecutor(
        tmp_path, tmp_path / "logs", tmp_path / "jobs", retry_base=0.01, retry_max=0.05
    )
    await ex.open()
    yield ex
    await stop_all(ex)


async def stop_all(ex: LocalExecutor) -> None:
    """Kill every process (close() leaves them to the next nexus), then close."""
    for obs in (await ex.snapshot()).observations:
        await ex.delete_job(obs.cluster, obs.run_id)
    await ex.close()


async def final(ex: LocalExecutor, run_id: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for obs in (await ex.snapshot()).observations:
            if obs.run_id == run_id and obs.outcome in TERMINAL_OUTCOMES:
                return obs
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {run_id} did not finish in {timeout}s")


async def test_success(executor, tmp_path):
    uid = await executor.launch("local", manifest("ok", "print('hello')"))
    assert uid == "ok"
    obs = await final(executor, "ok")
    assert obs.outcome is Outcome.SUCCEEDED
    assert obs.algorithm == "algo" and obs.cluster == "local"
    assert "hello" in (tmp_path / "logs" / "ok.log").read_text()


async def test_observations_stream_running_then_the_outcome(executor):
    await executor.launch("local", manifest("stream", "pass"))
    seen = []
    async for obs in executor.observations():
        seen.append(obs.outcome)
        if obs.outcome is not Outcome.RUNNING:
            break
    assert seen[0] is Outcome.RUNNING and seen[-1] is Outcome.SUCCEEDED


async def test_python_is_the_running_interpreter_and_env_is_the_jobs(
    executor, tmp_path, monkeypatch
):
    monkeypatch.setenv("NEXUS__SECRET_SETTING", "must-not-leak")
    out = tmp_path / "env.txt"
    code = (
        f"import os, sys; open({str(out)!r}, 'w').write(sys.executable + '\\n' + "
        "os.environ.get('MODE', '') + '\\n' + os.environ.get('NEXUS__SECRET_SETTING', "
        "'absent') + '\\n' + os.getcwd())"
    )
    await executor.launch("local", manifest("env", code, env={"MODE": "fast"}))
    assert (await final(executor, "env")).outcome is Outcome.SUCCEEDED
    executable, mode, secret, cwd = out.read_text().splitlines()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert mode == "fast"
    assert secret == "absent"
    assert Path(cwd).resolve() == tmp_path.resolve()


async def test_fatal_exit_code_fails_the_job_at_once(executor, tmp_path):
    count = tmp_path / "fatal.count"
    await executor.launch(
        "local", manifest("fatal", counting(count, "sys.exit(42)"), backoff_limit=5, fatal=[42])
    )
    obs = await final(executor, "fatal")
    assert obs.outcome is Outcome.FATAL_EXIT
    assert "42" in obs.message
    assert attempts(count) == 1


async def test_transient_exit_code_is_retried_without_counting(executor, tmp_path):
    count = tmp_path / "transient.count"
    code = counting(count, "sys.exit(75 if attempt <= 3 else 0)")
    await executor.launch("local", manifest("transient", code, backoff_limit=0, transient=[75]))
    obs = await final(executor, "transient")
    assert obs.outcome is Outcome.SUCCEEDED
    assert attempts(count) == 4


async def test_other_failures_are_retried_up_to_the_backoff_limit(executor, tmp_path):
    count = tmp_path / "flaky.count"
    code = counting(count, "sys.exit(1 if attempt <= 2 else 0)")
    await executor.launch("local", manifest("flaky", code, backoff_limit=2))
    assert (await final(executor, "flaky")).outcome is Outcome.SUCCEEDED
    assert attempts(count) == 3


async def test_backoff_limit_reached(executor, tmp_path):
    count = tmp_path / "failing.count"
    await executor.launch(
        "local", manifest("failing", counting(count, "sys.exit(3)"), backoff_limit=2)
    )
    obs = await final(executor, "failing")
    assert obs.outcome is Outcome.BACKOFF_LIMIT
    assert "backoff limit (2)" in obs.message and "exit code 3" in obs.message
    assert attempts(count) == 3  # the first try plus backoffLimit retries


async def test_default_backoff_limit_is_six(executor, tmp_path):
    count = tmp_path / "default.count"
    await executor.launch(
        "local", manifest("default", counting(count, "sys.exit(1)"), backoff_limit=None)
    )
    assert (await final(executor, "default", timeout=30)).outcome is Outcome.BACKOFF_LIMIT
    assert attempts(count) == 7


async def test_deadline_kills_the_process(executor, tmp_path):
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    started = time.monotonic()
    await executor.launch("local", manifest("slow", code, deadline=1))
    obs = await final(executor, "slow")
    assert obs.outcome is Outcome.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 30
    assert "deadline" in obs.message
    assert_dies(int(pid_file.read_text()))


async def test_command_not_found(executor):
    await executor.launch("local", manifest("missing", "", command=["/nonexistent/binary-x"]))
    obs = await final(executor, "missing")
    assert obs.outcome is Outcome.FAILED_TO_START
    assert "/nonexistent/binary-x" in obs.message


async def test_empty_command_is_a_non_retryable_launch_error(executor):
    with pytest.raises(LaunchError) as caught:
        await executor.launch("local", manifest("empty", "", command=[]))
    assert caught.value.retryable is False


async def test_launching_the_same_job_twice_starts_one_process(executor, tmp_path):
    count = tmp_path / "twice.count"
    job = manifest("twice", counting(count, "time.sleep(0.3)"))
    assert await executor.launch("local", job) == await executor.launch("local", job)
    assert (await final(executor, "twice")).outcome is Outcome.SUCCEEDED
    assert attempts(count) == 1


async def test_cancel_kills_the_process(executor, tmp_path):
    pid_file = tmp_path / "cancel.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    await executor.launch("local", manifest("cancel", code))
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    assert await executor.cancel("local", "cancel", "Background") is True
    assert_dies(pid)
    assert all(obs.run_id != "cancel" for obs in (await executor.snapshot()).observations)
    assert await executor.cancel("local", "cancel", "Background") is False


async def test_delete_job_stops_it(executor, tmp_path):
    await executor.launch("local", manifest("deleted", "import time; time.sleep(60)"))
    await executor.delete_job("local", "deleted")
    assert all(obs.run_id != "deleted" for obs in (await executor.snapshot()).observations)
    await executor.delete_job("local", "deleted")  # absent: no error


async def test_finished_jobs_expire_after_their_ttl(executor):
    await executor.launch("local", manifest("ttl", "pass", ttl=0))
    deadline = time.monotonic() + 15
    while True:
        snapshot = {obs.run_id: obs for obs in (await executor.snapshot()).observations}
        if "ttl" not in snapshot:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_every_shard_name_is_served(executor):
    shards = executor.shards()
    assert "local" in shards and "any-shard" in shards
    assert list(shards) == ["local"] and len(shards) == 1


def test_children_do_not_inherit_the_servers_descriptors(tmp_path):
    """Under uvloop (Sanic's loop, which ignores close_fds) an algorithm must not inherit
    an inheritable socket such as Sanic's listening one: an orphan would hold the port."""
    uvloop = pytest.importorskip("uvloop")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.set_inheritable(True)
    inode = f"socket:[{os.fstat(listener.fileno()).st_ino}]"
    out = tmp_path / "fds.txt"
    code = (
        "import os\n"
        "targets = []\n"
        "for name in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        targets.append(os.readlink('/proc/self/fd/' + name))\n"
        "    except OSError:\n"
        "        pass\n"
        f"open({str(out)!r}, 'w').write('\\n'.join(targets))\n"
    )

    async def main() -> Outcome:
        ex = LocalExecutor(tmp_path, tmp_path / "logs", tmp_path / "jobs", retry_base=0.01)
        await ex.open()
        try:
            await ex.launch("local", manifest("fds", code))
            return (await final(ex, "fds")).outcome
        finally:
            await stop_all(ex)

    try:
        loop = uvloop.new_event_loop()
        try:
            assert loop.run_until_complete(main()) is Outcome.SUCCEEDED
        finally:
            loop.close()
    finally:
        listener.close()
    assert inode not in out.read_text().splitlines()


# --- a restarted nexus: the launch records (nexus/backends/k8s/local_records.py) --------

_CRASHING_NEXUS = """
import asyncio, os, sys, json
from nexus.backends.k8s.local_executor import LocalExecutor
root, manifest, started = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
async def main():
    ex = LocalExecutor(root, root + "/logs", root + "/jobs")
    await ex.open()
    await ex.launch("local", manifest)
    while not os.path.exists(started):
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), 9)  # a crash: no clean-up at all
asyncio.run(main())
"""


def crash_after_start(tmp_path: Path, job: dict[str, Any], started: Path) -> None:
    """Launch ``job`` in another process that is SIGKILLed once ``started`` exists."""
    import json
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _CRASHING_NEXUS, str(tmp_path), json.dumps(job), str(started)],
        timeout=60,
    )
    assert result.returncode == -9


async def restarted(tmp_path: Path) -> LocalExecutor:
    ex = LocalExecutor(
        tmp_path, tmp_path / "logs", tmp_path / "jobs", retry_base=0.01, retry_max=0.05
    )
    await ex.open()
    return ex


async def test_a_restart_adopts_the_live_process_instead_of_starting_another(tmp_path):
    count, started = tmp_path / "adopt.count", tmp_path / "adopt.started"
    body = counting(count, f"open({str(started)!r}, 'w').close(); time.sleep(1.5)")
    crash_after_start(tmp_path, manifest("adopt", body, backoff_limit=3), started)
    ex = await restarted(tmp_path)
    try:
        observed = {o.run_id: o for o in (await ex.snapshot()).observations}
        assert observed["adopt"].outcome is Outcome.RUNNING  # so the run is not lost
        ex.start()
        # launching it again (the re-queued BUFFERED run) starts nothing either
        assert await ex.launch("local", manifest("adopt", body, backoff_limit=3)) == "adopt"
        obs = await final(ex, "adopt")
        assert obs.outcome is Outcome.SUCCEEDED
        assert attempts(count) == 1
    finally:
        await stop_all(ex)


async def test_a_failure_of_an_adopted_attempt_is_retried_and_counted(tmp_path):
    count, started = tmp_path / "retried.count", tmp_path / "retried.started"
    body = counting(
        count,
        f"open({str(started)!r}, 'w').close(); time.sleep(0.5); sys.exit(0 if attempt == 2 else 3)",
    )
    crash_after_start(tmp_path, manifest("retried", body, backoff_limit=1), started)
    ex = await restarted(tmp_path)
    try:
        ex.start()
        assert (await final(ex, "retried")).outcome is Outcome.SUCCEEDED
        assert attempts(count) == 2
    finally:
        await stop_all(ex)


async def test_an_attempt_that_ended_while_nexus_was_down_keeps_its_outcome(tmp_path):
    count, started = tmp_path / "ended.count", tmp_path / "ended.started"
    body = counting(count, f"open({str(started)!r}, 'w').close(); sys.exit(42)")
    crash_after_start(tmp_path, manifest("ended", body, fatal=[42]), started)
    deadline = time.monotonic() + 10
    while not (tmp_path / "jobs" / "ended.exit").exists():  # the orphan ends on its own
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    ex = await restarted(tmp_path)
    try:
        obs = await final(ex, "ended")
        assert obs.outcome is Outcome.FATAL_EXIT and "42" in obs.message
        assert attempts(count) == 1
    finally:
        await stop_all(ex)


async def test_a_retry_owed_by_a_previous_nexus_waits_until_payloads_are_served(tmp_path):
    from nexus.backends.k8s.local_records import LaunchRecord, LaunchRecords

    count = tmp_path / "owed.count"
    records = LaunchRecords(tmp_path / "jobs")
    records.open()
    records.save(
        LaunchRecord(
            run_id="owed",
            cluster="local",
            started_at=time.time(),
            manifest=manifest("owed", counting(count, "pass"), backoff_limit=2),
        )
    )
    records.exit_path("owed").write_text("1\n")  # its first attempt failed while nobody watched
    ex = await restarted(tmp_path)
    try:
        await asyncio.sleep(0.3)
        assert attempts(count) == 0  # not before start(): its payload URL is not served yet
        ex.start()
        assert (await final(ex, "owed")).outcome is Outcome.SUCCEEDED
        assert attempts(count) == 1
    finally:
        await stop_all(ex)


async def test_a_recorded_job_that_never_ran_is_disrupted_and_a_finished_one_kept(tmp_path):
    from nexus.backends.k8s.local_records import LaunchRecord, LaunchRecords

    records = LaunchRecords(tmp_path / "jobs")
    records.open()
    now = time.time()
    records.save(
        LaunchRecord(
            run_id="never", cluster="local", started_at=now, manifest=manifest("never", "pass")
        )
    )
    records.save(
        LaunchRecord(
            run_id="done",
            cluster="local",
            started_at=now,
            manifest=manifest("done", "pass"),
            outcome="SUCCEEDED",
            message="Job completed (exit code 0)",
            finished_at=now,
        )
    )
    ex = await restarted(tmp_path)
    try:
        observed = {o.run_id: o for o in (await ex.snapshot()).observations}
        # no process, no exit code: the supervisor decides (a BUFFERED run is launched
        # again by the sweep, a RUNNING one re-queued as a disruption)
        assert observed["never"].outcome is Outcome.DISRUPTED
        assert (tmp_path / "jobs" / "never.json").exists()  # a second crash finds it again
        assert observed["done"].outcome is Outcome.SUCCEEDED
    finally:
        await stop_all(ex)


async def test_a_process_killed_with_nexus_is_disrupted_and_its_relaunch_continues_the_job(
    tmp_path,
):
    """A kill -9 of nexus's cgroup takes the processes along: no exit code is written.
    The restart reports the Job DISRUPTED (announced on the watch too); launching it again
    starts exactly one new process, and the Job's deadline and failures carry over."""
    count, started = tmp_path / "lost.count", tmp_path / "lost.started"
    body = counting(count, f"open({str(started)!r}, 'w').close(); time.sleep(30)")
    job = manifest("lost", body, backoff_limit=1, deadline=600)
    crash_after_start(tmp_path, job, started)
    group = int((tmp_path / "jobs" / "lost.pid").read_text())
    kill_group(group)  # the processes go with their nexus, all of them gone before it restarts
    ex = await restarted(tmp_path)
    try:
        first = await asyncio.wait_for(anext(aiter(ex.observations())), timeout=5)
        assert (first.run_id, first.outcome) == ("lost", Outcome.DISRUPTED)
        assert attempts(count) == 1  # nothing started by itself
        before = ex._jobs["lost"].record.started_at
        ex.start()
        quick = manifest("lost", counting(count, "pass"), backoff_limit=1, deadline=600)
        assert await ex.launch("local", quick) == "lost"
        assert await ex.launch("local", quick) == "lost"  # and once only
        assert (await final(ex, "lost")).outcome is Outcome.SUCCEEDED
        assert attempts(count) == 2
        assert ex._jobs["lost"].record.started_at == before  # the deadline counts on
    finally:
        await stop_all(ex)


async def test_a_graceful_close_leaves_the_process_to_the_next_nexus(tmp_path):
    count, started = tmp_path / "kept.count", tmp_path / "kept.started"
    body = counting(count, f"open({str(started)!r}, 'w').close(); time.sleep(1)")
    first = await restarted(tmp_path)
    await first.launch("local", manifest("kept", body))
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await first.close()
    second = await restarted(tmp_path)
    try:
        second.start()
        assert (await final(second, "kept")).outcome is Outcome.SUCCEEDED
        assert attempts(count) == 1
    finally:
        await stop_all(second)
