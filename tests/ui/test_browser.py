"""The UI's flows in headless Chromium: browse, diff, playground run, save, promote, rollback.

Each page visited keeps a full-page screenshot in test-artifacts/ui/.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.servers import KeelProcess
from tests.ui.conftest import ADMIN_KEY, Watched, log_in, move, push

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "</script><script>alert(2)</script>"

SYSTEM = "You write summaries for {{ audience }}."
V1 = {
    "name": "summarize",
    "description": "Summaries for the support inbox",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Summarize: {{ text }}"},
    ],
    "variables": ["audience", "text"],
    "config": {"model": "mock/echo", "temperature": 0.2},
    "message": "first draft",
}
V2 = {
    **V1,
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Summarize in one line: {{ text }}"},
    ],
    "config": {"model": "mock/echo", "temperature": 0.5, "max_tokens": 100},
    "message": "one line",
}


def run_status(page: Page, text: str) -> None:
    """Wait for the playground's run to reach `text` (the CSP forbids wait_for_function's eval)."""
    page.wait_for_selector(f"#run-status:text-is('{text}')")


@pytest.fixture(scope="module")
def seeded(api: httpx.Client) -> None:
    assert push(api, V1) == 1
    assert push(api, V2) == 2
    move(api, "summarize", "production", 1)
    move(api, "summarize", "production", 2)
    move(api, "summarize", "staging", 2)
    xss = {
        "name": "xss",
        "description": f"{XSS_IMG} {XSS_SCRIPT}",
        "template": f"Say {XSS_IMG} and {XSS_SCRIPT}",
        "config": {"model": "mock/echo"},
        "message": XSS_SCRIPT,
    }
    assert push(api, xss) == 1
    move(api, "xss", "production", 1)


@pytest.fixture(scope="module")
def logged_in(keel: KeelProcess, seeded: None, browser: BrowserContext) -> str:
    """The base URL, with the browser logged in."""
    page = browser.new_page()
    page.goto(f"{keel.url}/login")
    page.fill("input[name=key]", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{keel.url}/")
    page.close()
    return keel.url


def test_login_and_home(watched: Watched, keel: KeelProcess, seeded: None) -> None:
    watched.page.context.clear_cookies()
    watched.goto(f"{keel.url}/prompts")
    assert watched.page.url.startswith(f"{keel.url}/login?next=")
    log_in(watched, keel.url)
    watched.goto(f"{keel.url}/")
    assert watched.page.inner_text("h1") == "Overview"
    token = watched.page.get_attribute('meta[name="keel-token"]', "content")
    assert token is not None and token.startswith("keel-ui.")
    watched.screenshot("home")


def test_browse_list_to_prompt(watched: Watched, logged_in: str) -> None:
    watched.goto(f"{logged_in}/prompts")
    row = watched.page.locator("#prompt-list tr", has_text="summarize")
    assert "Summaries for the support inbox" in row.inner_text()
    assert "v2" in row.inner_text()
    assert row.locator(".badge").all_inner_texts() == ["production: v2", "staging: v2"]
    watched.screenshot("prompts")
    row.locator("a", has_text="summarize").click()
    watched.page.wait_for_url(f"{logged_in}/prompts/summarize")
    versions = watched.page.locator("#versions tbody tr")
    assert versions.count() == 2
    assert versions.nth(0).inner_text().startswith("v2\tone line\tadmin")
    assert "Summarize in one line: {{ text }}" in watched.page.inner_text("#version-content")
    history = watched.page.locator("#history tbody tr").all_inner_texts()
    assert len(history) == 3
    assert re.search(r"admin\tproduction\tv1\tv2\tpromote", "\n".join(history))
    watched.screenshot("prompt")


def test_diff_shows_changed_line(watched: Watched, logged_in: str) -> None:
    watched.goto(f"{logged_in}/prompts/summarize")
    watched.page.click("a:text('Diff')")
    watched.page.wait_for_url(re.compile(r".*/prompts/summarize/diff$"))
    changed = watched.page.locator("#diff tr.replace")
    assert changed.count() == 1
    assert changed.locator("td.left").inner_text() == "user: Summarize: {{ text }}"
    assert changed.locator("td.right").inner_text() == "user: Summarize in one line: {{ text }}"
    config = watched.page.locator("#config-changes tbody tr").all_inner_texts()
    assert any(r.startswith("max_tokens") for r in config)
    assert any(r.startswith("temperature\t0.2\t0.5") for r in config)
    watched.screenshot("diff")


def test_playground_run_save_promote_rollback(watched: Watched, logged_in: str) -> None:
    page = watched.page
    watched.goto(f"{logged_in}/prompts/summarize/playground?version=2")
    page.wait_for_selector("#model option[value='mock/fail']", state="attached")
    assert page.input_value("#model") == "mock/echo"
    page.fill("textarea[name=variables]", '{"audience": "support", "text": "the cat sat"}')
    page.click("#run")
    run_status(page, "done")
    assert page.inner_text("#output") == "Summarize in one line: the cat sat"
    watched.screenshot("playground")

    page.locator(".message-row textarea").nth(1).fill("Summarize in three words: {{ text }}")
    page.fill("input[name=message]", "three words")
    page.click("#save")
    page.wait_for_selector("#save-result:has-text('Saved as version 3.')")
    page.fill("input[name=label]", "production")
    page.click("#promote")
    page.wait_for_selector("#promote-result:has-text('production now points at version 3')")
    watched.screenshot("playground-saved")

    watched.goto(f"{logged_in}/prompts/summarize")
    labels = page.locator("#labels tbody tr")
    assert labels.filter(has_text="production").inner_text().split("\t")[1] == "v3"
    assert page.locator("#versions tbody tr").nth(0).inner_text().startswith("v3\tthree words")
    with page.expect_navigation():
        labels.filter(has_text="production").locator("button.rollback").click()
    labels = page.locator("#labels tbody tr")
    assert labels.filter(has_text="production").inner_text().split("\t")[1] == "v2"
    assert "rollback" in page.locator("#history tbody tr").nth(0).inner_text()


def test_promote_from_prompt_page(watched: Watched, logged_in: str) -> None:
    page = watched.page
    watched.goto(f"{logged_in}/prompts/summarize?version=1")
    page.fill("#promote input[name=label]", "canary")
    assert page.input_value("#promote select[name=version]") == "1"
    with page.expect_navigation():
        page.click("#promote button[type=submit]")
    canary = page.locator("#labels tbody tr", has_text="canary")
    assert canary.inner_text().split("\t")[1] == "v1"


def test_new_prompt_in_playground(watched: Watched, logged_in: str) -> None:
    page = watched.page
    watched.goto(f"{logged_in}/playground")
    page.fill("input[name=name]", "fresh")
    page.select_option("select[name=kind]", "text")
    page.fill("textarea[name=template]", "Hello {{ who }}")
    page.fill("textarea[name=variables]", '{"who": "world"}')
    page.click("#run")
    run_status(page, "done")
    assert page.inner_text("#output") == "Hello world"
    page.click("#save")
    page.wait_for_selector("#save-result:has-text('Saved as version 1.')")
    watched.screenshot("playground-new")


def test_api_errors_are_shown(watched: Watched, logged_in: str) -> None:
    page = watched.page
    watched.goto(f"{logged_in}/playground")
    page.fill("textarea[name=variables]", "{not json")
    page.click("#run")
    page.wait_for_selector("#messages p.error")
    assert "not valid JSON" in page.inner_text("#messages")
    # a gateway error before the stream starts (HTTP 502 from mock/fail)
    page.fill("textarea[name=variables]", "{}")
    page.locator(".message-row textarea").nth(1).fill("hi")
    page.wait_for_selector("#model option[value='mock/fail']", state="attached")
    page.select_option("#model", "mock/fail")
    page.click("#run")
    run_status(page, "failed")
    assert page.inner_text("#messages") != ""
    watched.errors[:] = [e for e in watched.errors if "502" not in e]  # the failed fetch, logged


def test_stored_and_generated_markup_is_text(watched: Watched, logged_in: str) -> None:
    page = watched.page
    watched.goto(f"{logged_in}/prompts")
    assert XSS_IMG in page.locator("#prompt-list tr", has_text="xss").inner_text()
    watched.goto(f"{logged_in}/prompts/xss")
    assert XSS_IMG in page.inner_text(".description")
    assert XSS_SCRIPT in page.inner_text("#version-content")
    assert XSS_SCRIPT in page.inner_text("#versions")
    assert page.locator("img").count() == 0
    watched.screenshot("xss-prompt")
    watched.goto(f"{logged_in}/prompts/xss/playground")
    page.click("#run")
    run_status(page, "done")
    assert page.inner_text("#output") == f"Say {XSS_IMG} and {XSS_SCRIPT}"
    assert page.locator("#output *").count() == 0
    assert page.locator("img").count() == 0
    watched.screenshot("xss-playground")
