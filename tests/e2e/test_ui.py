"""The web UI in a real headless browser: Debian's chromium (testenv component
``browser``) driven by Playwright for Python, against a real nexus on embedded defaults
running the behave algorithm. Screenshots of the main pages go to docs/ui/ when
``NEXUS_UI_SCREENSHOTS`` names a folder (``scripts/ui-screenshots``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import API, create, metadata, wait_stage, wait_terminal

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

HOSTILE_TAG = '<img src=x onerror="window.pwned=1">'
TIMEOUT_MS = 30_000


def _chromium() -> str:
    from contract.servers import require

    return require("browser", ("NEXUS_TEST_CHROMIUM",))["NEXUS_TEST_CHROMIUM"]


@pytest.fixture(
    scope="module",
    params=[
        "embedded",
        pytest.param("cassandra-s3", marks=(pytest.mark.cassandra, pytest.mark.s3)),
    ],
)
def server(request, module_nexus_factory) -> Iterator[object]:
    """One nexus per backend set: embedded defaults (SQLite, local folder), and the
    production store and buffer (the test Cassandra and S3), the algorithm a local
    process in both."""
    if request.param == "embedded":
        yield module_nexus_factory()
        return
    from contract.servers import (
        cassandra_settings_env,
        delete_prefix,
        drop_keyspace,
        s3_settings_env,
        unique,
    )

    keyspace, prefix = unique("nexus_ui_"), unique("nexus-ui-")
    try:
        env = {**cassandra_settings_env(keyspace), **s3_settings_env(prefix)}
        yield module_nexus_factory(env=env)
    finally:
        drop_keyspace(keyspace)
        delete_prefix(prefix)


@pytest.fixture(scope="module")
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium()
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server) -> Iterator[object]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def screenshot(request):
    """Saves a page to $NEXUS_UI_SCREENSHOTS/<name>.png (the embedded server's only)."""
    folder = os.environ.get("NEXUS_UI_SCREENSHOTS")
    embedded = "embedded" in request.node.callspec.id

    def save(page, name: str) -> None:
        if folder and embedded:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    return save


def test_the_page_and_its_files_are_served_with_a_strict_policy(api: httpx.Client) -> None:
    for path, kind in (
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ):
        response = api.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    missing = api.get("/ui/../../etc/passwd")
    assert missing.status_code == 404
    assert api.get("/ui/secret.py").status_code == 404


def test_the_runs_list_filters_by_algorithm_stage_and_tag(
    page, api: httpx.Client, screenshot
) -> None:
    done = create(api, {}, tag="ui-filter")
    failed = create(api, {"error": "the model diverged"}, tag="ui-filter")
    wait_terminal(api, done)
    wait_terminal(api, failed)

    page.goto("/ui#/runs?tag=ui-filter")
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(2)
    page.locator("input[name=stage][value=FAILED]").check()
    page.locator("#filters button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"stage=FAILED"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", failed)
    expect(page.locator("#counts")).to_contain_text("behave")
    screenshot(page, "runs")

    page.locator("input[name=algorithm]").fill("no-such-algorithm")
    page.locator("#filters button[type=submit]").click()
    expect(page.locator("#no-runs")).to_be_visible()


def test_a_failed_run_shows_its_cause_and_can_be_resubmitted(
    page, api: httpx.Client, screenshot
) -> None:
    failed = create(api, {"error": "the model diverged"}, tag=HOSTILE_TAG)
    wait_terminal(api, failed)

    page.goto(f"/ui#/run/behave/{failed}")
    expect(page.locator("#failure")).to_contain_text("the model diverged")
    expect(page.locator("dl.meta")).to_contain_text(HOSTILE_TAG)  # shown as text
    assert page.evaluate("window.pwned") is None
    expect(page.locator("#timeline li").first).to_be_visible()
    expect(page.locator("#manifest")).to_contain_text('"kind": "Job"')
    screenshot(page, "failed-run")

    page.locator("#resubmit").click()
    expect(page).not_to_have_url(re.compile(failed))
    new_id = page.url.rsplit("/", 1)[1]
    again = metadata(api, new_id)
    assert again["resubmitted_from"] == failed
    expect(page.locator("dl.meta")).to_contain_text(failed)


def test_cancel_from_the_run_page(page, api: httpx.Client) -> None:
    slow = create(api, {"sleep": 120})
    wait_stage(api, slow, "RUNNING")

    page.goto(f"/ui#/run/behave/{slow}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#cancel").click()
    expect(page.locator("#notice")).to_contain_text("Cancelled")
    assert wait_terminal(api, slow)["status"] == "CANCELLED"
    expect(page.locator("#resubmit")).to_be_visible()


def test_shards_and_templates_pages(page, api: httpx.Client, screenshot) -> None:
    page.goto("/ui#/shards")
    expect(page.locator("#shards tbody tr").first).to_be_visible()
    screenshot(page, "shards")
    page.goto("/ui#/templates")
    expect(page.locator("#templates")).to_contain_text("behave")
    expect(page.locator("#workgroups tbody tr").first).to_be_visible()
    screenshot(page, "templates")


def test_the_overview_routes_answer_json(api: httpx.Client) -> None:
    catalog = api.get(f"{API}/templates").json()
    assert "behave" in [t["name"] for t in catalog["templates"]]
    lanes = api.get(f"{API}/shards").json()
    assert all(
        {"shard", "queued", "delayed", "capacity", "rate", "launched"} <= set(lane)
        for lane in lanes
    )
    assert lanes, "embedded defaults have one shard"
