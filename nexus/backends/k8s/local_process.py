"""Start one attempt of a local Job off the event loop, and wait for it on the loop.

uvloop's subprocess spawn blocks the loop until the child has exec'd (about 50 ms a
launch, measured): at 20 launches/s the loop did nothing else. ``subprocess.Popen`` on a
worker thread takes about 2 ms of that thread, and the loop waits for the exit through a
pidfd, so a thousand running attempts cost no thread at all.

Each attempt runs under a small wrapper shell, in a session of its own (so a killed
nexus does not take it along, as a scheduler's death does not kill a Pod): the shell
writes its pid (the group's id) and, when the command ends, its exit code, into the
files :mod:`nexus.backends.k8s.local_records` names, so a restarted nexus can adopt it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

# $1: pid file, $2: exit-code file, then the command. The exit code is written by rename
# so a reader never sees half of it. A signal that kills the command shows as 128+N, as
# a container runtime reports it.
_WRAPPER = (
    'echo $$ > "$1"; exit_file=$2; shift 2; "$@"; code=$?; '
    'echo "$code" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"; '
    'exit "$code"'
)
_POLL = 0.05  # seconds between exit checks where pidfds are missing (not Linux)


def spawn(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    pid_path: Path,
    exit_path: Path,
    keep_fd: int,
) -> subprocess.Popen[bytes]:
    """Start ``command`` under the wrapper; blocking, for a worker thread.

    ``keep_fd`` (the run's lock) is the one descriptor the attempt inherits: Popen closes
    every other, such as Sanic's listening socket, which an algorithm outliving a killed
    nexus would otherwise hold so that nexus could not bind its port again.
    Raises OSError when the command cannot be found or run.
    """
    if shutil.which(command[0], path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(2, "No such file or directory (or not executable)", command[0])
    with open(log_path, "ab") as output:
        return subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, "nexus-job", str(pid_path), str(exit_path), *command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            pass_fds=(keep_fd,),
        )


async def wait_exit(process: subprocess.Popen[bytes]) -> int:
    """The attempt's exit code, awaited without a thread."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        while process.poll() is None:
            await asyncio.sleep(_POLL)
        return process.returncode
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    try:
        loop.add_reader(pidfd, on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return process.wait()


TAIL_BYTES = 1 << 20  # a log tail reads at most this much of the file's end


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of an attempt's log (at most its last MiB), as text."""
    with open(path, "rb") as log:
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - TAIL_BYTES))
        data = log.read()
    if size > TAIL_BYTES:
        data = data.split(b"\n", 1)[-1]  # the first line was cut
    kept = data.splitlines(keepends=True)[-lines:] if lines else []
    return b"".join(kept).decode("utf-8", errors="replace")
