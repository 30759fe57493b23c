"""A Keel subprocess with an admin key, seeded through the API, and Chromium driven by Playwright.

The browser is Debian's chromium (`/usr/bin/chromium`, installed by `.ci/run`); Playwright's own
browser downloads are never used. Without chromium the browser tests skip, except in CI where
they fail. Every page a test opens is watched: a console error, an uncaught exception or a
dialog (an `alert` from injected script) fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.servers import KeelProcess

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Playwright

ADMIN_KEY = "keel-admin-ui-test-key-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    proc = KeelProcess(tmp_path_factory.mktemp("keel-ui"), env={"KEEL_ADMIN_KEY": ADMIN_KEY})
    proc.start(timeout=60)  # a busy 2-core machine can take a while to import and migrate
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(keel: KeelProcess) -> Iterator[httpx.Client]:
    """The management API as the admin."""
    with httpx.Client(base_url=keel.url, headers=admin_headers(), timeout=10) as client:
        yield client


def push(api: httpx.Client, body: dict[str, Any]) -> int:
    """Push a version; its number."""
    resp = api.post("/api/v1/prompts", json=body)
    assert resp.status_code in (200, 201), resp.text
    return int(resp.json()["version"]["version"])


def move(api: httpx.Client, name: str, label: str, version: int) -> None:
    resp = api.put(f"/api/v1/prompts/{name}/labels/{label}", json={"version": version})
    assert resp.status_code == 200, resp.text


def _need_chromium() -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is missing: pip install -e '.[dev]'"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"the UI tests need Chromium in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    """A fresh Chromium profile; pages of one test module share its cookies."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(10_000)
    yield context
    context.close()


@dataclass
class Watched:
    """A page and what went wrong on it: console errors, uncaught exceptions, dialogs."""

    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def goto(self, url: str) -> None:
        """Open `url` and check the answer and its security headers."""
        response = self.page.goto(url)
        assert response is not None and response.ok, f"{url}: {response and response.status}"
        assert response.headers.get("content-security-policy") == CSP, url
        assert response.headers.get("x-content-type-options") == "nosniff", url
        assert response.headers.get("referrer-policy") == "same-origin", url

    def screenshot(self, name: str) -> None:
        """Keep a full-page screenshot as a test artefact, test-artifacts/ui/<name>.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def watched(browser: BrowserContext) -> Iterator[Watched]:
    page = browser.new_page()
    w = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            w.errors.append(f"console: {message.text}")

    def on_dialog(dialog: Any) -> None:
        w.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda exc: w.errors.append(f"page error: {exc}"))
    page.on("dialog", on_dialog)
    yield w
    page.close()
    assert w.dialogs == [], "a dialog opened: script ran that should not have"
    assert w.errors == []


def log_in(w: Watched, base_url: str) -> None:
    """Log in through the /login form with the admin key."""
    w.goto(f"{base_url}/login")
    w.screenshot("login")
    w.page.fill("input[name=key]", ADMIN_KEY)
    w.page.click("button[type=submit]")
    w.page.wait_for_url(f"{base_url}/")
