"""Health, readiness and Prometheus metrics on every role, and role selection itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import httpx
import pytest
from support import API, REPO, TEST_TEMPLATES, create, wait_terminal

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf|NaN))$"
)
KINDS = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_metrics(text: str) -> dict[str, float]:
    """Validate the Prometheus text format; return {'name{labels}': value}."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in KINDS, line
            assert name not in typed, f"{name} typed twice"
            typed[name] = kind
            continue
        assert not line.startswith("#"), line
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name = match["name"]
        family = re.sub(r"_(bucket|sum|count|total|info)$", "", name)
        assert name in typed or family in typed, f"{name} has no TYPE line before it"
        key = f"{name}{{{match['labels']}}}" if match["labels"] else name
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(match["value"].replace("Inf", "inf"))
    return samples


def test_live(api):
    response = api.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "ok"


def test_ready(api):
    response = api.get("/health/ready")
    assert response.status_code == 200
    assert response.text == "ready"


def test_metrics_are_prometheus_text(api):
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(response.text)
    assert "nexus_queue_depth" in samples
    assert samples["nexus_queue_depth"] >= 0


def test_metrics_count_runs_and_requests(api):
    before = parse_metrics(api.get("/metrics").text)
    accepted = 'nexus_runs_accepted_total{algorithm="behave"}'
    finished = 'nexus_runs_finished_total{stage="COMPLETED"}'
    run_id = create(api, {})
    assert wait_terminal(api, run_id)["status"] == "COMPLETED"
    api.get(f"{API}/results/behave/requests/{uuid.uuid4()}")  # a 404
    after = parse_metrics(api.get("/metrics").text)
    assert after[accepted] == before.get(accepted, 0) + 1
    assert after[finished] == before.get(finished, 0) + 1
    not_found = [
        key
        for key, value in after.items()
        if key.startswith("nexus_http_requests_total{")
        and 'route="/algorithm/v1/results/{algorithm}/requests/{request_id}"' in key
        and 'code="404"' in key
    ]
    assert not_found and all(after[key] >= 1 for key in not_found)
    created = [
        key
        for key in after
        if key.startswith("nexus_http_requests_total{")
        and 'method="POST"' in key
        and 'code="202"' in key
        and "/run/" in key
    ]
    assert created


def test_metrics_do_not_count_refused_runs_as_accepted(api):
    key = 'nexus_runs_accepted_total{algorithm="behave"}'
    before = parse_metrics(api.get("/metrics").text).get(key, 0)
    assert api.post(f"{API}/run/behave", content=b"{").status_code == 400
    assert parse_metrics(api.get("/metrics").text).get(key, 0) == before


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
    env.update(
        {"NEXUS__DATA_DIR": str(tmp_path / "data"), "NEXUS__TEMPLATES_PATH": str(TEST_TEMPLATES)}
    )
    return env


@pytest.mark.parametrize("role", ["scheduler", "supervisor"])
def test_local_executor_needs_role_all(tmp_path, role):
    completed = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "--role", role, "--port", "0"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "--role all" in completed.stderr and "executor" in completed.stderr


def test_bad_settings_stop_the_process_with_the_key_named(tmp_path):
    env = _env(tmp_path)
    env["NEXUS__S3_BUFFER__BUFFER_CONFIG__WORKERS"] = "lots"
    completed = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "--role", "all", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "s3-buffer.buffer-config.workers" in completed.stderr


def test_receiver_role_serves_only_the_receiver_api(nexus_factory, tmp_path):
    receiver = nexus_factory(role="receiver", data_dir=tmp_path / "receiver")
    with httpx.Client(base_url=receiver.url, timeout=30) as http:
        assert http.get("/health/live").status_code == 200
        assert http.get("/health/ready").status_code == 200
        parse_metrics(http.get("/metrics").text)
        response = http.get(f"{API}/check/behave/requests/{uuid.uuid4()}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/plain")
        response = http.post(f"{API}/run/behave", json={"algorithmParameters": {}})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/plain")


def test_counters_are_exact_past_ten_million():
    """A counter's value is written in full: 12,345,678 must not read back as 1.23457e+07
    (the old exposition's ``:g`` lost the last digits within minutes at the accept rate)."""
    from nexus.metrics import Metrics

    metrics = Metrics()
    metrics.accepted.inc("behave", amount=12_345_677)
    metrics.accepted.inc("behave")
    samples = parse_metrics(metrics.render().decode())
    assert samples['nexus_runs_accepted_total{algorithm="behave"}'] == 12_345_678


def test_metrics_carry_build_info_process_and_request_latency(api):
    api.get("/health/live")
    samples = parse_metrics(api.get("/metrics").text)
    assert any(key.startswith("nexus_build_info{") and value == 1 for key, value in samples.items())
    assert samples["process_resident_memory_bytes"] > 0
    assert (
        samples['nexus_http_request_duration_seconds_count{method="GET",route="/health/live"}'] >= 1
    )


def test_metrics_pass_promtool(api):
    """``promtool check metrics`` (scripts/testenv's promtool component) finds nothing to
    say about a scrape of a server that has served runs, errors and long polls."""
    from contract.servers import require

    promtool = require("promtool", ("NEXUS_TEST_PROMTOOL",))["NEXUS_TEST_PROMTOOL"]
    api.post("/algorithm/v1/run/behave", json={"algorithmParameters": {}})
    api.get("/algorithm/v1/results/behave/requests/unknown")
    scrape = api.get("/metrics").content
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr
    ).decode()
