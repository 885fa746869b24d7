"""The Containerfile's build without the engine: the image's build stage runs
scripts/build-wheel; this runs that same script, installs its two wheels (server and
client) into a fresh virtualenv the way the image does, and uses them. (tests/packaging/
test_image.py builds the image itself with podman.)"""

from __future__ import annotations

import email.message
import email.parser
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(text):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_containerfile_builds_with_the_script_and_runs_unprivileged() -> None:
    build, runtime = _stages(CONTAINERFILE.read_text())
    assert build[0][1].endswith("AS build") and runtime[0][1].endswith("AS runtime")
    runs = [args for word, args in build if word == "RUN"]
    calls = [args for args in runs if "scripts/build-wheel" in args]
    assert len(calls) == 1, "the build stage must build the wheel with scripts/build-wheel"
    assert any("scripts/build-wheel" in args for word, args in build if word == "COPY")
    runtime_words = [word for word, _ in runtime]
    assert "RUN" not in runtime_words[runtime_words.index("COPY") :], (
        "the runtime stage only copies the virtualenv"
    )
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies == ["--from=build /opt/nexus /opt/nexus"]
    user = [args for word, args in runtime if word == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    entrypoint = [args for word, args in runtime if word == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoint] == [["nexus"]]


def test_containerignore_keeps_what_the_build_copies() -> None:
    ignore = (REPO / ".containerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    build = _stages(CONTAINERFILE.read_text())[0]
    for word, args in build:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _target = shlex.split(args)
            for source in sources:
                assert source.rstrip("/") in kept, f"{source} is excluded by .containerignore"
                assert (REPO / source).exists()
    assert "*" in ignore  # everything else (target/, .venv/, data) stays out of the context


@pytest.mark.slow
def test_wheel_from_the_build_script_installs_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    env = {**os.environ, "PYTHON": sys.executable}
    built = subprocess.run(
        [str(REPO / "scripts" / "build-wheel"), str(dist)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("nexus-*.whl")
    (client_wheel,) = dist.glob("nexus_run_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    metadata = wheel_metadata(wheel)
    assert any(re.match(r"nexus/_rust_queue\..*\.so$", name) for name in names)
    assert "nexus/_rust_queue.pyi" in names
    assert not any(name.startswith("nexus/client/") for name in names)  # the client's own
    assert "nexus/api/static/redoc/redoc.standalone.js" in names  # the /docs page

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    requirements = requires(metadata)
    # The client exactly at the server's version, and only from the build output.
    assert f"nexus-run-client=={metadata['Version']}" in requirements
    assert client_wheel.name.startswith(f"nexus_run_client-{metadata['Version']}-")
    index_requirements = [req for req in requirements if not req.startswith("nexus-run-client")]
    index_requirements += requires(wheel_metadata(client_wheel))
    deps = subprocess.run([*pip, *index_requirements], capture_output=True, text=True, timeout=1800)
    assert deps.returncode == 0, deps.stderr[-3000:]
    # The wheels themselves only from the build output, never from an index.
    own = subprocess.run(
        [*pip, "--no-index", "--find-links", str(dist), "nexus"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert own.returncode == 0, own.stderr[-3000:]

    outside = {
        k: v for k, v in os.environ.items() if not k.startswith(("NEXUS", "PYTHON", "VIRTUAL_ENV"))
    }
    help_text = subprocess.run(
        [str(venv / "bin" / "nexus"), "--help"],
        cwd=tmp_path,
        env=outside,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_text.returncode == 0 and "--role" in help_text.stdout
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import nexus, nexus._rust_queue as q; print(nexus.__file__, q.Queue(4).remaining())",
        ],
        cwd=tmp_path,
        env=outside,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    location, remaining = imported.stdout.split()
    assert location.startswith(str(venv)) and remaining == "4"

    # The installed package serves: `nexus --role all` on embedded defaults.
    port = _free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "nexus"), "--role", "all", "--port", str(port)],
        cwd=tmp_path,
        env={
            **outside,
            "NEXUS__DATA_DIR": str(tmp_path / "data"),
            "NEXUS__TEMPLATES_PATH": str(REPO / "examples" / "templates"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "installed nexus did not become ready"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as r:
            assert json.load(r)["openapi"].startswith("3.")
    finally:
        server.terminate()
        server.wait(30)


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def requires(metadata: email.message.Message) -> list[str]:
    """The wheel's requirements, without those of its extras."""
    return [req for req in metadata.get_all("Requires-Dist") or [] if "extra ==" not in req]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
