"""The observability pages over plain HTTP, on SQLite and PostgreSQL: a real `keel serve` on a
fresh database (every page answers, with its empty state), then the same database seeded
through Keel's writers (the data shows, stored markup is escaped, secrets stay out)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import KeelProcess
from tests.ui.conftest import CSP
from tests.ui.observability_seed import (
    GATEWAY,
    LLM,
    SESSION,
    TOOL,
    TRACE,
    WEBHOOK_SECRET,
    XSS_IMG,
    seed,
    seed_pages,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LISTS = ["/", "/requests", "/traces", "/sessions", "/costs", "/alerts"]
RANGES = ["/?range=1h", "/?range=7d", "/?range=30d", "/costs?range=1h", "/requests?range=24h"]
ESCAPED_SCRIPT = "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;"


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[KeelProcess]:
    proc = KeelProcess(tmp_path / "keel", env={"KEEL_DATABASE_URL": database_url})
    proc.start(timeout=60)  # a busy 2-core machine can take a while to migrate and start
    yield proc
    proc.stop()


def _page(client: httpx.Client, path: str, status: int = 200) -> str:
    resp = client.get(path)
    assert resp.status_code == status, f"{path}: {resp.status_code} {resp.text[:500]}"
    assert resp.headers["content-security-policy"] == CSP, path
    assert resp.headers["x-content-type-options"] == "nosniff", path
    assert resp.headers["content-type"].startswith("text/html"), path
    html = resp.text
    # no stored markup survives as markup, whatever the page
    assert "<script>alert" not in html, path
    assert XSS_IMG not in html, path
    assert WEBHOOK_SECRET not in html, path
    # our own pages carry no inline script or style (the CSP would block them anyway)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
    assert " style=" not in html and "<style" not in html, path
    assert not re.search(r"<[^>]*\son[a-z]+=", html), path
    return html


def test_pages_on_an_empty_then_a_seeded_database(served: KeelProcess, database_url: str) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        for path in LISTS + RANGES:
            html = _page(client, path)
            if path == "/requests?range=24h":
                assert "No request matches these filters" in html
            elif path != "/alerts":
                assert "keel demo" in html, path
        assert "No alert rules yet" in _page(client, "/alerts")
        seeded = asyncio.run(seed(database_url))

        overview = _page(client, "/?range=1h")
        assert "<title>Overview · Keel</title>" in overview
        assert "keel demo" not in overview
        cards = dict(
            re.findall(r'stat-label">([^<]+)</div><div class="stat-value">([^<]+)', overview)
        )
        # counted calls: the three gateway requests and the second trace's LLM span; the nested
        # trace's LLM span went through the gateway and counts once, as its request
        assert cards["Requests"] == "4"
        assert cards["Error rate"] == "25%"
        assert cards["Tokens"] == f"{120 + 48 + 10 + 5 + 30 + 12}"
        assert "support-bot" in overview and "helpfulness" in overview
        assert overview.count('<figure class="chart">') == 4
        assert ESCAPED_SCRIPT in overview  # the customer named with markup, in the top list

        requests = _page(client, "/requests")
        assert requests.count('href="/requests/') == 3
        assert ESCAPED_SCRIPT in requests
        assert _page(client, "/requests?status=error").count('href="/requests/') == 1
        assert _page(client, "/requests?customer=acme").count('href="/requests/') == 1

        detail = _page(client, f"/requests/{seeded.gateway_request_id}")
        assert f'href="/traces/{TRACE}?span={GATEWAY}"' in detail
        assert 'href="/prompts/summarize?version=2"' in detail
        assert "gpt-4o-mini" in detail and "upstream said " + ESCAPED_SCRIPT in detail
        assert "Sure: &lt;img src=x onerror=alert(1)&gt;" in detail  # the stored response
        failed = _page(client, f"/requests/{seeded.failed_request_id}")
        assert "upstream failed: " + ESCAPED_SCRIPT in failed

        traces = _page(client, "/traces")
        assert f'href="/traces/{TRACE}"' in traces and "agent run" in traces
        trace = _page(client, f"/traces/{TRACE}")
        rows = re.findall(r'<tr id="row-([0-9a-f]+)" class="([^"]*)"', trace)
        # tree order: the root, its children by start, the gateway span under the LLM span
        assert [r[0] for r in rows] == ["b7ad6b7169203331", "c1d2e3f405060708", LLM, GATEWAY, TOOL]
        assert dict(rows)[TOOL].split() == ["k-tool", "err"]
        assert "chat " + ESCAPED_SCRIPT in trace
        assert 'class="wf-name i2"' in trace  # the gateway span, two levels down
        llm = _page(client, f"/traces/{TRACE}?span={LLM}")
        assert f'id="row-{LLM}" class="k-llm sel"' in llm
        assert "Say " + ESCAPED_SCRIPT in llm  # input
        assert "helpfulness" in llm and "fine " + ESCAPED_SCRIPT in llm  # its score
        assert "retry " + ESCAPED_SCRIPT in llm  # its event
        gateway = _page(client, f"/traces/{TRACE}?span={GATEWAY}")
        assert f'href="/requests/{seeded.gateway_request_id}"' in gateway

        sessions = _page(client, "/sessions")
        assert f'href="/sessions/{SESSION}"' in sessions
        session = _page(client, f"/sessions/{SESSION}")
        assert session.index("agent run") < session.index("follow-up")  # oldest first

        costs = _page(client, "/costs")
        for group in ("customer", "pipeline", "model"):
            assert f"/api/v1/costs?format=csv&amp;group_by={group}" in costs
        assert "acme" in costs and "support-bot" in costs and "mock/echo" in costs

        alerts = _page(client, "/alerts")
        assert "error-rate-high" in alerts and "https://hooks.slack.example/…" in alerts
        assert "budget acme" in alerts and ESCAPED_SCRIPT in alerts

        for path in LISTS + RANGES:
            _page(client, path)


def test_lists_page_by_cursor(served: KeelProcess, database_url: str) -> None:
    asyncio.run(seed_pages(database_url, "pager", 57))
    with httpx.Client(base_url=served.url, timeout=10) as client:
        for base, row in (("/requests", 'href="/requests/'), ("/traces", 'href="/traces/')):
            first = _page(client, f"{base}?customer=pager")
            assert first.count(row) == 50 and "Newest" not in first
            older = re.search(r'href="([^"]+)" id="next-page"', first)
            assert older is not None
            second = _page(client, older.group(1).replace("&amp;", "&"))
            assert second.count(row) == 7 and 'id="next-page"' not in second
            assert f'href="{base}?customer=pager">Newest' in second


def test_missing_things_and_bad_parameters(served: KeelProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        for path in ("/requests/nope", f"/traces/{'f' * 32}", "/sessions/nope"):
            assert "Error 404" in _page(client, path, 404)
        for path in (
            "/?range=forever",
            "/?range=custom",
            "/?range=custom&since=2025-01-02T00:00&until=2025-01-01T00:00",
            "/costs?range=custom&since=yesterday",
            "/requests?status=weird",
            "/requests?cursor=not-a-cursor",
            "/traces?status=maybe",
            "/sessions?range=nope",
        ):
            assert "Error 400" in _page(client, path, 400), path
        custom = _page(client, "/?range=custom&since=2025-01-01T00:00&until=2025-01-02T00:00")
        assert "2025-01-01 00:00 UTC" in custom and "2025-01-02 00:00 UTC" in custom
