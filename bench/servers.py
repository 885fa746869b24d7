"""Server processes the benchmarks drive: nexus (as its CLI starts it) and the baselines.

Each server is a child process on 127.0.0.1 with its own port (and data folder for
nexus); :class:`Server` reads its RSS and CPU time from /proc so a benchmark can say
which side of the socket was busy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.procstat import CLOCK_TICKS, cpu_seconds

REPO = Path(__file__).resolve().parent.parent
TEST_TEMPLATES = REPO / "tests" / "e2e" / "templates"

# The algorithm the accept benchmarks post to: the e2e test template.
ALGORITHM = "behave"

# A launch rate so low that accepted runs stay queued: the accept benchmarks measure the
# accept path, not the local executor starting thousands of processes. The bucket starts
# with one token, so exactly one run is launched per server.
PARKED_RATE = "0.000001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def payload_body(size: int = 2048) -> bytes:
    """A run request whose body is ``size`` bytes of plausible algorithm parameters."""
    params: dict[str, object] = {
        "model": "forecast-v3",
        "horizonDays": 14,
        "seed": 42,
        "features": [f"feature_{i}" for i in range(12)],
    }
    body = {"algorithmParameters": params, "tag": "bench"}
    filler = size - len(json.dumps(body, separators=(",", ":"))) - len(',"notes":""')
    params["notes"] = "x" * max(0, filler)
    encoded = json.dumps(body, separators=(",", ":")).encode()
    assert len(encoded) == size or size < 300, len(encoded)
    return encoded


class Server:
    """A child process serving HTTP on 127.0.0.1:port; ready when ``ready_path`` is 200."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        ready_path: str = "/health/ready",
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.host = "127.0.0.1"
        self.env = env or {}
        self.ready_path = ready_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
        env.update(self.env)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def rss_bytes(self) -> int:
        """VmRSS of the process, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads), from /proc/<pid>/stat."""
        return cpu_seconds([self.pid])

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread group: the event loop (main thread) and the rest by name.

        Python threads all show as "python" in /proc, so they are "other python threads"
        (the SQLite store thread, executor threads); obstore's Rust threads are
        "tokio-rt-worker".
        """
        groups: dict[str, float] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                head, tail = (task / "stat").read_text().rsplit(")", 1)
            except OSError:  # the thread ended meanwhile
                continue
            fields = tail.split()
            name = "event loop" if int(task.name) == self.pid else head.split("(", 1)[1]
            if name == "python":
                name = "other python threads"
            groups[name] = groups.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return groups

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def baseline(mode: str = "sanic", log_dir: Path | None = None) -> Server:
    port = free_port()
    return Server(
        f"baseline-{mode}",
        [sys.executable, "-m", "bench.baseline_app", "--port", str(port), "--mode", mode],
        port,
        log_path=(log_dir / f"baseline-{mode}.log") if log_dir else None,
    )


def nexus_env(
    data_dir: Path,
    *,
    instance: str = "bench-host",
    rate: str = PARKED_RATE,
    capacity: int = 1_000_000,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Embedded defaults, except where data goes and the launch rate (see PARKED_RATE)."""
    return {
        "NEXUS__DATA_DIR": str(data_dir),
        "NEXUS__TEMPLATES_PATH": str(TEST_TEMPLATES),
        "NEXUS__INSTANCE_ID": instance,
        "NEXUS__LOG_LEVEL": "WARNING",
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_PER_SECOND": rate,
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__RATE_LIMIT_ELEMENTS_BURST": "1",
        "NEXUS__S3_BUFFER__BUFFER_CONFIG__QUEUE_CAPACITY": str(capacity),
        "BEHAVE_STATE": str(data_dir / "behave"),
        **(extra or {}),
    }


def nexus(
    data_dir: Path,
    *,
    port: int | None = None,
    launcher: str = "nexus.cli",
    extra_args: list[str] | None = None,
    name: str = "nexus",
    **env_kwargs,
) -> Server:
    """``nexus --role all`` as its CLI starts it (``launcher`` swaps in bench.serve)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        launcher,
        *(extra_args or []),
        "--role",
        "all",
        "--port",
        str(port),
    ]
    return Server(
        name,
        argv,
        port,
        env=nexus_env(data_dir, **env_kwargs),
        log_path=data_dir / f"{name}-{port}.log",
    )


def kube_unavailable() -> str:
    """Why the Kubernetes figures cannot be measured here, or "" when they can."""
    path = os.environ.get("NEXUS_TEST_KUBECONFIG", "")
    if not path:
        return "NEXUS_TEST_KUBECONFIG not set: run `scripts/testenv up kube` first"
    if not Path(path).is_file():
        return f"NEXUS_TEST_KUBECONFIG={path} does not exist: the kube test server is not up"
    try:
        import nexus.backends.k8s.shards  # noqa: F401  (the Kubernetes executor)
    except ImportError as exc:
        return f"the Kubernetes executor is not importable: {exc}"
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=path)
        client.VersionApi(api).get_code(_request_timeout=5)
        api.close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no control plane to measure
        return f"the control plane of {path} does not answer: {type(exc).__name__}: {exc}"[:300]
    return ""


def integration_helpers():
    """The integration suite's Kubernetes helpers: its API client (``control_plane``) and
    its resource helpers (``test_kubernetes``), as modules. They import the tests' root
    conftest under the name its conftest.py gives it (nexus_tests_conftest), loaded here
    when pytest did not (a bench run collects bench/, not tests/)."""
    import importlib
    import importlib.util

    for folder in (REPO / "tests", REPO / "tests" / "integration"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if "nexus_tests_conftest" not in sys.modules:
        root = REPO / "tests" / "conftest.py"
        spec = importlib.util.spec_from_file_location("nexus_tests_conftest", root)
        assert spec and spec.loader
        sys.modules["nexus_tests_conftest"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return importlib.import_module("control_plane"), importlib.import_module("test_kubernetes")
