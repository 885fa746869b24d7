"""The Containerfile, built by a real engine (podman) and run.

scripts/testenv's ``image`` component provides podman and a local base image (no
registry is reachable: a debootstrap of Debian trixie laid out like the official python
image, passed as the PYTHON_IMAGE build argument; the Containerfile's default stays the
public image). The image must run as non-root, answer ``--help`` and ``--version``, and
serve a run of the example algorithm to COMPLETED with ``--role all`` on its embedded
defaults, entirely inside the container.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port
from contract.servers import require

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/nexus:test"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def podman() -> list[str]:
    require("image", ("NEXUS_TEST_PODMAN", "NEXUS_TEST_IMAGE_BASE", "NEXUS_TEST_PODMAN_RUN_FLAGS"))
    return shlex.split(os.environ["NEXUS_TEST_PODMAN"])


@pytest.fixture(scope="module")
def image(podman: list[str]) -> str:
    flags = shlex.split(os.environ["NEXUS_TEST_PODMAN_RUN_FLAGS"])
    built = subprocess.run(
        [
            *podman,
            "build",
            *flags,
            "--build-arg",
            f"PYTHON_IMAGE={os.environ['NEXUS_TEST_IMAGE_BASE']}",
            "-t",
            TAG,
            "-f",
            "Containerfile",
            ".",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    # earlier builds' layers of this tag, left dangling by this one
    subprocess.run([*podman, "image", "prune", "-f"], capture_output=True, timeout=300)
    return TAG


def run(podman: list[str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    flags = shlex.split(os.environ["NEXUS_TEST_PODMAN_RUN_FLAGS"])
    return subprocess.run(
        [*podman, "run", "--rm", *flags, *args], capture_output=True, text=True, timeout=timeout
    )


def test_the_image_runs_as_non_root_and_answers_help_and_version(podman, image):
    user = run(podman, "--entrypoint", "id", image, "-u")
    assert user.returncode == 0 and user.stdout.strip() not in ("", "0"), user.stderr
    shown = run(podman, image, "--help")
    assert shown.returncode == 0 and "--role" in shown.stdout, shown.stderr
    version = run(podman, image, "--version")
    assert version.returncode == 0 and version.stdout.startswith("nexus "), version.stderr
    size = subprocess.run(
        [*podman, "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(f"\nimage {image}: {int(size.stdout.strip()) / 2**20:.0f} MiB")


def _call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def test_role_all_serves_a_run_of_the_example_to_completed(podman, image):
    port = free_port()
    started = run(podman, "-d", "-e", f"NEXUS__BIND_PORT={port}", image, "--role", "all")
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, _logs(podman, container)
            time.sleep(0.5)
        created = _call(
            f"{base}/algorithm/v1/run/word-stats",
            {"algorithmParameters": {"text": "to be or not to be"}},
        )
        result = _call(
            f"{base}/algorithm/v1/results/word-stats/requests/{created['requestId']}?wait=50"
        )
        assert result["status"] == "COMPLETED", (result, _logs(podman, container))
        # the URLs the container signs name its host, not 0.0.0.0
        assert "0.0.0.0" not in result["resultUri"]
    finally:
        subprocess.run([*podman, "rm", "-f", container], capture_output=True, timeout=120)


def _logs(podman: list[str], container: str) -> str:
    done = subprocess.run([*podman, "logs", container], capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr)[-4000:]
