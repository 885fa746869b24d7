"""The lean client distribution (./client, nexus-run-client) on its own: built into a
wheel, installed into an empty virtualenv, it brings no server dependency, ships its
types, and its ``nexus`` command runs a run to the end against a real scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, NexusProcess
from test_containerfile import requires, wheel_metadata

pytestmark = pytest.mark.slow

# What only the server needs; none of it may come with the client.
SERVER_ONLY = {
    "nexus",
    "sanic",
    "kubernetes",
    "scylla-driver",
    "obstore",
    "prometheus-client",
    "maturin",
    "uvloop",
    "websockets",
}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, virtualenv with only that wheel and its dependencies installed)."""
    root = tmp_path_factory.mktemp("client-dist")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(root / "dist"),
            str(REPO / "client"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("nexus_run_client-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return wheel, venv


def _outside() -> dict[str, str]:
    """The environment of a user's shell: nothing of this checkout or its venv."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("NEXUS", "PYTHON", "VIRTUAL_ENV"))
    }


def _run(
    venv: Path, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        input=stdin,
        cwd=cwd,
        env=_outside(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_wheel_holds_the_client_and_its_types_only(client_venv) -> None:
    wheel, _venv = client_venv
    with zipfile.ZipFile(wheel) as archive:
        packages = {
            name.split("/")[0]
            for name in archive.namelist()
            if not name.split("/")[0].endswith(".dist-info")
        }
        names = archive.namelist()
    assert packages == {"nexus_run_client"}
    assert "nexus_run_client/py.typed" in names
    declared = {
        req.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for req in requires(wheel_metadata(wheel))
    }
    assert declared == {"httpx", "msgspec", "pyyaml", "argcomplete"}


def test_installing_it_brings_no_server_dependency(client_venv) -> None:
    _wheel, venv = client_venv
    listed = _run(
        venv, "python", "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"
    )
    assert listed.returncode == 0, listed.stderr
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert "nexus-run-client" in names
    assert not names & SERVER_ONLY, names & SERVER_ONLY
    # Nothing from this checkout leaks in: the server package is not importable there.
    imported = _run(venv, "python", "-c", "import nexus", cwd=venv)
    assert imported.returncode != 0 and "No module named 'nexus'" in imported.stderr


def test_its_nexus_command_is_the_client_alone(client_venv) -> None:
    _wheel, venv = client_venv
    version = _run(venv, "nexus", "--version")
    assert version.returncode == 0 and version.stdout.strip() == "nexus-run-client 0.1.0"
    helped = _run(venv, "nexus", "--help")
    assert helped.returncode == 0 and "run" in helped.stdout and "--role ROLE" not in helped.stdout
    served = _run(venv, "nexus", "--role", "all")
    assert served.returncode == 2
    assert "--role needs the nexus server, which is not installed" in served.stderr
    bad_url = _run(venv, "nexus", "--scheduler", "localhost:1", "get", "a", "b")
    assert bad_url.returncode == 2 and "is not a scheduler URL" in bad_url.stderr


def test_nexus_run_wait_completes_against_a_running_scheduler(client_venv, tmp_path) -> None:
    _wheel, venv = client_venv
    server = NexusProcess(tmp_path / "data").start()
    try:
        done = _run(
            venv,
            "nexus",
            "--scheduler",
            server.url,
            "run",
            "behave",
            "--payload",
            "-",
            "--wait",
            "--timeout",
            "60s",
            "-o",
            "json",
            stdin='{"sleep": 0.1}',
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "COMPLETED" and result["resultUri"].startswith("http")
    finally:
        server.stop()
        server.kill_algorithms()


def test_its_types_reach_a_type_checker(client_venv, tmp_path) -> None:
    """py.typed works: mypy, pointed at the client's venv, reads the real signatures
    (without the marker it reports the module as untyped and checks nothing)."""
    pytest.importorskip("mypy")
    _wheel, venv = client_venv
    user_code = tmp_path / "user_code.py"
    user_code.write_text(
        "from nexus_run_client import NexusClient\n"
        "client = NexusClient('http://127.0.0.1:1')\n"
        "run_id: int = client.create_run('a', {})\n"
    )
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--python-executable",
            str(venv / "bin" / "python"),
            str(user_code),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert 'Incompatible types in assignment (expression has type "str"' in checked.stdout
