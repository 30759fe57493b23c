"""The observability pages in headless Chromium, against a real `keel serve` (with an admin key)
on a database seeded through Keel's writers (tests/ui/observability_seed.py).

Every page is watched for console errors, uncaught exceptions and dialogs (an injected
`alert` would open one), checked for its security headers, and leaves a full-page screenshot
in test-artifacts/ui/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import KeelProcess
from tests.ui.conftest import ADMIN_KEY, Watched
from tests.ui.observability_seed import (
    GATEWAY,
    LLM,
    ROOT,
    SESSION,
    TRACE,
    WEBHOOK_SECRET,
    XSS,
    XSS_IMG,
    Seeded,
    seed,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def seeded_keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeelProcess, Seeded]]:
    data = tmp_path_factory.mktemp("keel-obs")
    url = f"sqlite:///{data / 'seeded.db'}"
    # a thread of its own: Playwright's sync API keeps an event loop running on this one
    with ThreadPoolExecutor(1) as pool:
        seeded = pool.submit(lambda: asyncio.run(seed(url))).result(timeout=60)
    proc = KeelProcess(data, env={"KEEL_ADMIN_KEY": ADMIN_KEY, "KEEL_DATABASE_URL": url})
    proc.start(timeout=60)
    yield proc, seeded
    proc.stop()


@pytest.fixture(scope="module")
def base(seeded_keel: tuple[KeelProcess, Seeded], browser: BrowserContext) -> str:
    """The base URL, with the browser logged in through the form."""
    url = seeded_keel[0].url
    page = browser.new_page()
    page.goto(f"{url}/login?next=/requests")
    page.fill("input[name=key]", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/requests")
    page.close()
    return url


def inert(page: Page) -> None:
    """Stored markup stayed text: no element was made from it."""
    assert page.locator("img").count() == 0
    assert page.locator("script:not([src])").count() == 0
    assert page.locator("[onerror]").count() == 0


def test_overview(watched: Watched, base: str) -> None:
    page = watched.page
    watched.goto(f"{base}/")
    assert page.inner_text("h1") == "Overview"
    cards = dict(
        zip(
            page.locator(".stat-label").all_inner_texts(),
            page.locator(".stat-value").all_inner_texts(),
            strict=True,
        )
    )
    assert cards["Requests"] == "4" and cards["Error rate"] == "25%"
    assert cards["Cost"] == "$0.0052" and cards["Tokens"] == "225"
    assert page.locator("#charts figure.chart svg").count() == 4
    assert page.locator("#charts .legend li").all_inner_texts()[:2] == ["requests", "errors"]
    customers = page.locator("#top-customer + table tbody tr").all_inner_texts()
    assert customers[0].startswith("acme\t2\t$0.0052")
    assert any(row.startswith(XSS) for row in customers)
    assert "helpfulness" in page.inner_text("#scores") and XSS in page.inner_text("#scores")
    inert(page)
    watched.screenshot("overview")

    page.select_option("select[name=range]", "1h")
    page.fill("input[name=customer]", "acme")
    with page.expect_navigation():
        page.click("#filters button[type=submit]")
    assert "range=1h" in page.url and "customer=acme" in page.url
    assert page.locator(".stat-value").first.inner_text() == "2"  # the request and the span
    watched.screenshot("overview-filtered")


def test_requests_list_and_detail(
    watched: Watched, base: str, seeded_keel: tuple[KeelProcess, Seeded]
) -> None:
    page = watched.page
    seeded = seeded_keel[1]
    watched.goto(f"{base}/requests")
    rows = page.locator("#request-list tbody tr")
    assert rows.count() == 3
    assert XSS in rows.nth(1).inner_text() and "502" in rows.nth(1).inner_text()
    inert(page)
    watched.screenshot("requests")
    page.select_option("select[name=status]", "error")
    with page.expect_navigation():
        page.click("#filters button[type=submit]")
    assert page.locator("#request-list tbody tr").count() == 1

    watched.goto(f"{base}/requests")
    with page.expect_navigation():
        page.locator("#request-list tbody tr").first.locator("a").click()
    assert page.url == f"{base}/requests/{seeded.gateway_request_id}"
    attempts = page.locator("#fallbacks tbody tr").all_inner_texts()
    assert len(attempts) == 2 and f"upstream said {XSS}" in attempts[0]
    assert XSS in page.inner_text("#request-body")
    assert f"Sure: {XSS_IMG}" in page.inner_text("#response-body")
    assert page.get_attribute("#prompt-link a", "href") == "/prompts/summarize?version=2"
    inert(page)
    watched.screenshot("request")
    with page.expect_navigation():
        page.click("#trace-link")
    assert page.url == f"{base}/traces/{TRACE}?span={GATEWAY}"
    assert "sel" in (page.get_attribute(f"#row-{GATEWAY}", "class") or "")


def test_trace_waterfall_and_span_panel(watched: Watched, base: str) -> None:
    page = watched.page
    watched.goto(f"{base}/traces")
    assert page.locator("#trace-list tbody tr").count() == 4
    watched.screenshot("traces")
    with page.expect_navigation():
        page.click("#trace-list a:text('agent run')")
    assert page.url == f"{base}/traces/{TRACE}"
    rows = page.locator("#waterfall tbody tr")
    assert rows.count() == 5
    names = [n.split("\t")[0].strip().lower() for n in rows.all_inner_texts()]
    assert names[2] == f"chat {XSS} llm".lower()
    assert names[3].startswith("gateway chat.completions mock/echo")
    assert names[4].startswith("error lookup_account")
    # bars: the root spans the whole trace, the children sit inside it
    assert page.get_attribute(f"#row-{ROOT} rect", "width") == "1000.0"
    llm_x = float(page.get_attribute(f"#row-{LLM} rect", "x") or "0")
    gateway_x = float(page.get_attribute(f"#row-{GATEWAY} rect", "x") or "0")
    assert 0 < llm_x < gateway_x < 1000
    assert "agent run" in page.inner_text("#span-panel h2")  # the root, selected by default

    with page.expect_navigation():
        page.click(f"#row-{LLM} a")
    assert page.url.endswith(f"?span={LLM}#row-{LLM}")
    panel = page.locator("#span-panel")
    assert panel.locator("h2").inner_text() == f"chat {XSS}"
    assert page.inner_text("#span-input") == f"Say {XSS}"
    assert page.inner_text("#span-output") == f"Sure: {XSS_IMG}"
    assert XSS_IMG in page.inner_text("#span-attributes")
    assert f"retry {XSS}" in page.inner_text("#span-events")
    assert f"fine {XSS}" in page.inner_text("#span-scores")
    assert XSS in page.inner_text("#trace-scores")  # the categorical score on the trace
    assert "120 in · 48 out" in page.inner_text("#span-facts")
    inert(page)
    watched.screenshot("trace")

    with page.expect_navigation():
        page.click(f"#row-{GATEWAY} a")
    with page.expect_navigation():
        page.click("#span-request")
    assert re.search(r"/requests/[0-9a-z]{26}$", page.url)


def test_sessions(watched: Watched, base: str) -> None:
    page = watched.page
    watched.goto(f"{base}/sessions")
    row = page.locator("#session-list tbody tr")
    assert row.count() == 1 and row.inner_text().startswith(f"{SESSION}\t")
    watched.screenshot("sessions")
    with page.expect_navigation():
        row.locator("a").click()
    traces = page.locator("#session-traces tbody tr").all_inner_texts()
    assert [t.split("\t")[2].split(" error")[0] for t in traces] == ["agent run", "follow-up"]
    watched.screenshot("session")


def test_costs_and_csv_download(watched: Watched, base: str, tmp_path: Path) -> None:
    page = watched.page
    watched.goto(f"{base}/costs")
    customers = page.locator("#costs-customer tbody tr").all_inner_texts()
    assert customers[0].startswith("acme\t2\t150\t60\t$0.0052\t100%")
    assert page.locator("#costs-model tbody tr").first.inner_text().startswith("mock/echo\t3")
    assert page.locator("#cost-chart svg").count() == 1
    inert(page)
    watched.screenshot("costs")
    # the API takes the page's token, not the cookie: the script fetches with it and saves
    with page.expect_download() as info:
        page.click("#costs-customer a.download-csv")
    download = info.value
    assert download.suggested_filename == "keel-costs-by-customer.csv"
    saved = tmp_path / "costs.csv"
    download.save_as(saved)
    text = saved.read_text()
    assert text.splitlines()[0].startswith("customer,") and "acme" in text


def test_alerts(watched: Watched, base: str) -> None:
    page = watched.page
    watched.goto(f"{base}/alerts")
    rule = page.locator("#rules tbody tr").first.inner_text()
    assert rule.startswith("error-rate-high\tok")
    assert "error_rate > 10%" in rule and "https://hooks.slack.example/…" in rule
    assert WEBHOOK_SECRET not in page.content()
    events = page.locator("#alert-events tbody tr").all_inner_texts()
    assert len(events) == 2
    assert "budget_threshold" in events[0] and f"customer {XSS} used 80%" in events[0]
    assert "error-rate-high\tfiring" in events[1] and "slack: failed (3 attempts)" in events[1]
    inert(page)
    watched.screenshot("alerts")
