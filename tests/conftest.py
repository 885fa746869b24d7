"""Shared test fixtures: a real nexus process on loopback, started from the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_TEMPLATES = REPO / "tests" / "e2e" / "templates"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NexusProcess:
    """One ``nexus --role ...`` child process with its own data folder and port."""

    def __init__(self, data_dir: Path, role: str = "all", env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.data_dir = data_dir
        self.role = role
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "NEXUS__DATA_DIR": str(data_dir),
            "NEXUS__TEMPLATES_PATH": str(TEST_TEMPLATES),
            "NEXUS__INSTANCE_ID": "test-host",
            "NEXUS__SUPERVISOR__JOB_SUCCESS_GRACE": "1s",
            "NEXUS__SUPERVISOR__RECONCILE_INTERVAL": "500ms",
            "NEXUS__SUPERVISOR__BACKOFF_GRACE": "2s",
            "BEHAVE_STATE": str(data_dir / "behave"),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"nexus-{self.port}.log"

    def start(self, timeout: float = 30.0) -> "NexusProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
        env.update(self.env)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nexus.cli", "--role", self.role, "--port", str(self.port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nexus exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nexus did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def nexus_factory(tmp_path: Path) -> Iterator:
    started: list[NexusProcess] = []

    def start(role: str = "all", env: dict[str, str] | None = None, data_dir: Path | None = None,
              port: int | None = None) -> NexusProcess:
        proc = NexusProcess(data_dir or tmp_path / "data", role, env, port).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def nexus(nexus_factory) -> NexusProcess:
    return nexus_factory()


@pytest.fixture
def client(nexus: NexusProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nexus.url, timeout=30) as http:
        yield http
