"""Shared test fixtures: a real nexus process on loopback, started from the CLI."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
# Under a name of its own too: a folder's conftest.py becomes the module "conftest" of
# that folder's tests (pytest_collectstart below) and re-exports helpers from here.
sys.modules.setdefault("nexus_tests_conftest", sys.modules[__name__])
TEST_TEMPLATES = REPO / "tests" / "e2e" / "templates"
# tests/integration's helper module (control_plane) is imported by its bare name, as its
# own folder's tests see it; suites elsewhere that reuse those tests' helpers
# (tests/e2e/test_go_settings.py) need the folder on the path too.
sys.path.insert(1, str(REPO / "tests" / "integration"))


def pytest_collectstart(collector: pytest.Collector) -> None:
    """Make ``from conftest import ...`` in a test module mean its nearest conftest.py.

    Every conftest.py of a folder without ``__init__.py`` is imported as the module
    ``conftest``, each replacing the previous one in ``sys.modules``: without this, a test
    under tests/e2e would import whichever conftest pytest happened to load last (such as
    tests/contract/conftest.py).
    """
    if not isinstance(collector, pytest.Module):
        return
    for folder in collector.path.parents:
        candidate = folder / "conftest.py"
        if candidate.exists():
            for plugin in collector.config.pluginmanager.get_plugins():
                if getattr(plugin, "__file__", None) == str(candidate):
                    sys.modules["conftest"] = plugin
                    return
            return
        if folder == REPO:
            return


def process_state(pid: int) -> tuple[str, int] | None:
    """A process's state letter and process group, from /proc; None once it is reaped.
    (The command name may hold spaces or parentheses: the fields follow its last ")".)"""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: reaped after the open
        return None
    return fields[0], int(fields[2])


def live_members(group: int) -> list[int]:
    """The processes of ``group`` that have not exited (a zombie has: its descriptors,
    the run lock among them, are closed)."""
    members = []
    for folder in Path("/proc").glob("[0-9]*"):
        state = process_state(int(folder.name))
        if state is not None and state[1] == group and state[0] not in ("Z", "X"):
            members.append(int(folder.name))
    return members


def kill_group(group: int, timeout: float = 30.0) -> None:
    """SIGKILL a process group and wait until none of it lives.

    The signal is only sent: the leader may be gone while a child is still on its way out,
    still holding the run's lock, and a nexus started then would adopt it as live."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while members := live_members(group):
        assert time.monotonic() < deadline, f"group {group} still has {members}"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NexusProcess:
    """One ``nexus --role ...`` child process with its own data folder and port."""

    def __init__(
        self,
        data_dir: Path,
        role: str = "all",
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: tuple[str, ...] = (),
        config: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config  # a settings file (--config), for what env vars cannot say
        self.role = role
        self.args = args  # more command-line arguments, such as ("--config", path)
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

    def start(self, timeout: float = 120.0) -> NexusProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
        env.update(self.env)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nexus.cli",
                    "--role",
                    self.role,
                    "--port",
                    str(self.port),
                    *(["--config", str(self.config)] if self.config else []),
                    *self.args,
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
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

    # --- what the process left on disk (to check that a refused request wrote nothing) ---

    @property
    def db_path(self) -> Path:
        return self.data_dir / "nexus.db"

    def row_counts(self) -> dict[str, int]:
        """Rows per table of the embedded store, read through a separate connection.

        For the history it counts the runs that have one, not its rows: runs accepted
        earlier (by another test of a module-scoped server) keep adding events while they
        run or deliver their webhook, and a refused request must add no *run*. A test
        about one existing run compares that run's history itself."""
        with closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            counts = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("checkpoints", "submission_buffer", "idempotency_keys")
            }
            counts["runs_with_history"] = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT algorithm, id FROM run_events)"
            ).fetchone()[0]
            return counts

    def payload_files(self) -> list[str]:
        """Stored payloads (results that algorithms upload, under results/, are left out)."""
        root = self.data_dir / "payloads"
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "results"
        )

    def written(self) -> tuple[dict[str, int], list[str]]:
        """Everything an accepted run writes: store rows and payload files."""
        return self.row_counts(), self.payload_files()

    def behave_starts(self, run_id: str) -> int:
        """How many times the behave algorithm was started for ``run_id``."""
        path = self.data_dir / "behave" / f"{run_id}.starts"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def behave_start_times(self, run_id: str) -> list[float]:
        """When (unix time) each attempt of the behave algorithm for ``run_id`` started."""
        path = self.data_dir / "behave" / f"{run_id}.starts"
        lines = path.read_text().splitlines() if path.exists() else []
        return [float(line.split()[1]) for line in lines]

    def kill_algorithms(self) -> None:
        """SIGKILL algorithm processes that outlived their server (a kill -9 or a graceful
        stop: local processes, like Pods, outlive the nexus that started them)."""
        for group_file in (self.data_dir / "jobs").glob("*.pid"):
            try:
                group = int(group_file.read_text())
                # only a run wrapper's group: a pid may have been reused since
                if b"nexus-job" in Path(f"/proc/{group}/cmdline").read_bytes():
                    kill_group(group)
            except (ValueError, OSError):
                pass
        for pid_file in (self.data_dir / "behave").glob("*.pid"):
            run_id = pid_file.name.removesuffix(".pid")
            try:
                pid = int(pid_file.read_text())
                # only that run's own process: a pid may have been reused since
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"behave.py" in cmdline and run_id.encode() in cmdline:
                    os.kill(pid, signal.SIGKILL)
            except (ValueError, OSError):
                pass


def _factory(make_dir) -> Iterator:
    started: list[NexusProcess] = []

    def start(
        role: str = "all",
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        args: tuple[str, ...] = (),
    ) -> NexusProcess:
        proc = NexusProcess(data_dir or make_dir(), role, env, port, args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        proc.kill_algorithms()


@pytest.fixture
def nexus_factory(tmp_path: Path) -> Iterator:
    yield from _factory(lambda: tmp_path / "data")


@pytest.fixture(scope="module")
def module_nexus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Like ``nexus_factory``, for a server shared by every test of a module."""
    yield from _factory(lambda: tmp_path_factory.mktemp("nexus") / "data")


@pytest.fixture
def nexus(nexus_factory) -> NexusProcess:
    return nexus_factory()


@pytest.fixture
def client(nexus: NexusProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nexus.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def server(module_nexus_factory):
    """One nexus on default test settings, shared by a module (override it for others)."""
    return module_nexus_factory()


@pytest.fixture(scope="module")
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def walk_routes(base_url: str, enforced: bool, receiver_tokens: bool = False) -> dict[str, int]:
    """Call every operation of the live ``/openapi.json`` without credentials.

    Those that declare bearer security (the run API) must answer 401 with a
    ``WWW-Authenticate`` Bearer challenge when ``enforced`` (auth.mode kubernetes or
    oidc), and those that declare the run token (the receiver's) when
    ``receiver_tokens`` (auth.receiver-tokens); no other answer may be a 401, in any
    mode. Returns the status of each ``METHOD path``."""
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    seen: dict[str, int] = {}
    for path, item in document["paths"].items():
        url = base_url + (
            path.replace("{algorithm}", "behave")
            .replace("{request_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{tag}", "t")
        )
        for method, operation in item.items():
            security = operation.get("security") or []
            checked = (security == [{"bearer": []}] and enforced) or (
                {"runToken": []} in security and receiver_tokens
            )
            response = httpx.request(
                method.upper(),
                url,
                json={} if method in ("post", "put") else None,
                timeout=30,
            )
            seen[f"{method.upper()} {path}"] = response.status_code
            where = f"{method.upper()} {path} -> {response.status_code}: {response.text[:200]}"
            if checked:
                assert response.status_code == 401, where
                assert response.headers["www-authenticate"] == 'Bearer realm="nexus"', where
                assert response.text.startswith("Authentication required"), where
                assert "401" in operation["responses"], where
            else:
                assert response.status_code != 401, where
                assert "www-authenticate" not in response.headers, where

    def operations(prefixes: tuple[str, ...] = ("",), secured: bool = False) -> set[str]:
        return {
            f"{method.upper()} {path}"
            for path, item in document["paths"].items()
            for method, operation in item.items()
            if operation["operationId"].startswith(prefixes)
            and (not secured or operation.get("security"))
        }

    # The run API (listing included) and the UI's overview ask for a token, and the
    # receiver when receiver tokens are on; health, docs, the UI's files and the signed
    # URLs are open.
    run_api = ("runs_", "overview_")
    asking = (*run_api, "completions_") if receiver_tokens else run_api
    assert operations(("runs_",)) and operations(secured=True) == operations(asking), sorted(
        operations(secured=True) ^ operations(asking)
    )
    if receiver_tokens:
        assert operations(("completions_",)), "the receiver's routes are in the document"
    return seen
