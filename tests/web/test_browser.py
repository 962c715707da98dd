"""The pages in a real browser (Debian's chromium through Playwright): no CSP violation
and no console error anywhere, no serious or critical accessibility finding, the
plain-words box working without a reload. Screenshots of each page are saved under the
test's temporary directory for a reviewer."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.peers import UpProcess

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
PUBLIC_PAGES = ["/", "/pricing", "/legal/refunds", "/legal/privacy", "/legal/terms"]
ACCOUNT_PAGES = ["/signup", "/login", "/forgot"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    up = UpProcess(tmp_path_factory.mktemp("browser") / "levqor-data")
    up.wait_ready()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("BROWSER_TESTS") == "required":  # CI: never skip silently
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    yield opened
    context.close()


def watch_console(page: Page) -> list[str]:
    """Every console error and CSP violation the page reports."""
    problems: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", seen)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


def sign_up(page: Page, url: str, email: str) -> None:
    page.goto(url + "/signup", wait_until="networkidle")
    page.fill("#email", email)
    page.fill("#password", "correct horse battery staple")
    page.click("button[type=submit]")
    page.wait_for_url(url + "/app")


def shot(page: Page, folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("path", [*PUBLIC_PAGES, *ACCOUNT_PAGES, "/docs"])
def test_no_console_error_or_csp_violation(
    server: UpProcess, page: Page, path: str, tmp_path: Path
) -> None:
    problems = watch_console(page)
    response = page.goto(server.url + path, wait_until="networkidle")
    assert response is not None
    assert response.status == 200
    if path == "/docs":  # Swagger UI rendered the API from /openapi.json
        page.wait_for_selector(".opblock", timeout=10_000)
    shot(page, tmp_path / "screenshots", path.strip("/").replace("/", "-") or "landing")
    assert problems == []


@pytest.mark.parametrize("path", [*PUBLIC_PAGES, *ACCOUNT_PAGES])
def test_no_serious_accessibility_finding(server: UpProcess, page: Page, path: str) -> None:
    page.goto(server.url + path, wait_until="networkidle")
    assert serious_findings(page) == []


def test_the_landing_box_drafts_in_place(server: UpProcess, page: Page, tmp_path: Path) -> None:
    problems = watch_console(page)
    page.goto(server.url + "/", wait_until="networkidle")
    page.evaluate("window.notReloaded = true")
    page.fill("#prompt", "Every weekday at 9am post to Slack #team")
    page.click("button[type=submit]")
    page.wait_for_selector("#draft ol.steps li")
    text = page.inner_text("#draft")
    assert "Slack" in text
    assert "#team" in text
    assert "cron 0 9 * * 1-5" in text
    assert page.evaluate("window.notReloaded") is True  # htmx swapped it in, no reload
    shot(page, tmp_path / "screenshots", "landing-draft")
    assert problems == []


def serious_findings(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{violation['id']}: {violation['help']}"
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def test_sign_up_then_log_out_and_in_as_the_printed_admin(
    server: UpProcess, page: Page, tmp_path: Path
) -> None:
    problems = watch_console(page)
    page.goto(server.url + "/signup", wait_until="networkidle")
    assert serious_findings(page) == []
    page.fill("#email", "browser@example.com")
    page.fill("#password", "correct horse battery staple")
    page.check("input[name=marketing_consent]")
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/app")
    assert "browser@example.com" in page.inner_text("main")
    assert serious_findings(page) == []
    shot(page, tmp_path / "screenshots", "app")
    for path, name in (
        ("/app/credentials/new?connector=email", "credentials"),
        ("/app/keys", "keys"),
        ("/app/runs", "runs"),
        ("/app/workflows/new", "workflow-new"),
        ("/app/privacy", "privacy"),
        ("/app/usage", "usage"),
        ("/app/billing", "billing"),
        ("/app/dead-letters", "dead-letters"),
        ("/app/partner", "partner"),
    ):
        page.goto(server.url + path, wait_until="networkidle")
        assert serious_findings(page) == [], path
        shot(page, tmp_path / "screenshots", name)
    page.click("text=Log out")
    page.wait_for_url(server.url + "/")
    match = re.search(r"e-mail\s+(\S+)\s+password\s+(\S+)", server.read_log())
    assert match, "levqor up printed no admin login"
    email, password = match.groups()
    page.goto(server.url + "/login", wait_until="networkidle")
    assert serious_findings(page) == []
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/app")
    assert "admin" in page.inner_text("main")
    assert problems == []


def test_words_to_a_workflow_run_watched_live(
    browser: Browser, tmp_path: Path, http_peer: Any
) -> None:
    """Sign up, describe an automation in words, save it, run it, and watch the run
    succeed on the page without reloading it, its step's output shown."""
    http_peer.default = (200, {"report": "all good"}, {})
    # The step calls a loopback peer, which the SSRF guard allows only when told to.
    up = UpProcess(tmp_path / "levqor-data", allow_private_urls="127.0.0.1")
    up.wait_ready()
    context = browser.new_context()
    page = context.new_page()
    try:
        problems = watch_console(page)
        sign_up(page, up.url, "maker@example.com")
        page.click("text=New workflow from words")
        page.fill("#prompt", f"Fetch {http_peer.url}/report.json")
        page.click("text=Draft it")
        page.wait_for_selector("#definition")
        assert "Http request" in page.inner_text("main")
        assert serious_findings(page) == []
        shot(page, tmp_path / "screenshots", "workflow-review")
        page.click("text=Save the workflow")
        page.wait_for_url(re.compile(r".*/app/workflows/wf_\w+$"))
        page.click("text=Run now")
        page.wait_for_url(re.compile(r".*/app/runs/job_\w+$"))
        page.evaluate("window.notReloaded = true")
        page.wait_for_selector('[data-status="succeeded"]', timeout=20_000)
        assert page.evaluate("window.notReloaded") is True  # htmx polled; no reload
        assert "all good" in page.inner_text("#run-status")
        assert serious_findings(page) == []
        shot(page, tmp_path / "screenshots", "run")
        assert problems == []
    finally:
        context.close()
        up.stop()


def test_a_missing_detail_is_answered_in_place_and_the_webhook_url_copied(
    server: UpProcess, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    try:
        problems = watch_console(page)
        sign_up(page, server.url, "asked@example.com")
        page.goto(server.url + "/app/workflows/new")
        page.fill("#prompt", "When a webhook arrives, send a Telegram message")
        page.click("text=Draft it")
        field = page.get_by_label("Which Telegram chat should get the message?")
        assert page.locator("#definition").count() == 0  # nothing to save yet
        assert serious_findings(page) == []
        shot(page, tmp_path / "screenshots", "draft-asks")
        field.fill("@news_room")
        page.click("text=Fill in the draft")
        page.wait_for_selector("#definition")
        assert "@news_room" in page.input_value("#definition")
        page.click("text=Save the workflow")
        page.wait_for_url(re.compile(r".*/app/workflows/wf_\w+$"))
        url = page.input_value("#webhook-url")
        assert "/hooks/" in url
        page.click("button[data-copy]")
        page.wait_for_selector("#copy-status:has-text('Copied.')")
        assert page.evaluate("navigator.clipboard.readText()") == url
        assert serious_findings(page) == []
        shot(page, tmp_path / "screenshots", "workflow")
        assert problems == []
    finally:
        context.close()


def test_the_admin_sees_the_charts_and_the_queue(
    server: UpProcess, page: Page, tmp_path: Path
) -> None:
    problems = watch_console(page)
    match = re.search(r"e-mail\s+(\S+)\s+password\s+(\S+)", server.read_log())
    assert match, "levqor up printed no admin login"
    page.goto(server.url + "/login?next=/admin", wait_until="networkidle")
    page.fill("#email", match.group(1))
    page.fill("#password", match.group(2))
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/admin")
    for chart in ("revenue", "costs", "runs"):
        assert page.locator(f"svg[aria-labelledby={chart}-chart-title]").count() == 1
    assert page.locator("[data-queue=queued]").count() == 1
    assert serious_findings(page) == []
    shot(page, tmp_path / "screenshots", "admin")
    assert problems == []
