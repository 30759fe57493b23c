"""A target's circuit breaker, end to end: once it opens, requests go straight to the fallback
and take about the fallback's own latency; the failing upstream gets no more calls; /metrics
says the circuit is open."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.resilience.conftest import (
    ADMIN,
    WatchedOpenAI,
    assert_responsive_and_idle,
    customer,
    provider,
    settled_records,
    start_keel,
)
from tests.servers import KeelProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

THRESHOLD = 4  # failures that open the breaker: two requests of two tries each
BACKUP_LATENCY_S = 0.1  # the fallback provider's own latency
SAMPLES = 5


@pytest.fixture
def keel(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> Iterator[KeelProcess]:
    primary, backup = upstreams
    config = {
        "providers": {"primary": provider(primary), "backup": provider(backup)},
        "models": [
            {
                "name": "duo",
                "strategy": "priority",
                "targets": [
                    {"provider": "primary", "model": "gpt-4o-mini"},
                    {"provider": "backup", "model": "gpt-4o-mini"},
                ],
            },
            {"name": "spare", "targets": [{"provider": "backup", "model": "gpt-4o-mini"}]},
        ],
        "retry_max_attempts": 2,
        "retry_backoff_base_ms": 200,
        "breaker_failure_threshold": THRESHOLD,
        "breaker_window_s": 60,
        "breaker_cooldown_s": 300,  # stays open for the whole test
    }
    backup.delay_s = BACKUP_LATENCY_S
    proc = start_keel(tmp_path_factory.mktemp("keel"), config)
    yield proc
    proc.stop()
    backup.delay_s = 0.0
    primary.clear_faults()


def _call(keel: KeelProcess, model: str, who: str) -> tuple[httpx.Response, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "are you there"}]}
    started = time.perf_counter()
    resp = httpx.post(
        f"{keel.url}/v1/chat/completions",
        json=body,
        headers={**ADMIN, "x-keel-customer": who},
        timeout=30,
    )
    return resp, time.perf_counter() - started


def circuit_state(keel: KeelProcess, provider_name: str, model: str) -> float | None:
    text = httpx.get(f"{keel.url}/metrics", headers=ADMIN, timeout=5).text
    for line in text.splitlines():
        if not line.startswith("keel_circuit_state{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("provider") == provider_name and labels.get("model") == model:
            return float(line.rsplit(" ", 1)[1])
    return None


def _chain(record: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(a["provider"], a["outcome"], a["status"]) for a in record["fallbacks"] or []]


def test_open_breaker_sends_requests_straight_to_the_fallback(
    keel: KeelProcess, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> None:
    primary, _ = upstreams
    who = customer()

    # The fallback alone, measured in this test on this machine.
    alone = []
    for _ in range(SAMPLES):
        resp, seconds = _call(keel, "spare", who)
        assert resp.status_code == 200
        alone.append(seconds)
    baseline = statistics.median(alone)

    # The primary fails: each request tries it twice, then the fallback answers.
    primary.fail_next("http_500", THRESHOLD)
    assert circuit_state(keel, "primary", "gpt-4o-mini") == 0
    for _ in range(THRESHOLD // 2):
        resp, _ = _call(keel, "duo", who)
        assert resp.status_code == 200 and resp.headers["x-keel-provider"] == "backup"
    assert circuit_state(keel, "primary", "gpt-4o-mini") == 2  # open
    assert circuit_state(keel, "backup", "gpt-4o-mini") == 0
    primary_calls = len(primary.requests)

    # Open: the primary is skipped without a call.
    ids, latencies = [], []
    for _ in range(SAMPLES):
        resp, seconds = _call(keel, "duo", who)
        assert resp.status_code == 200 and resp.headers["x-keel-provider"] == "backup"
        ids.append(resp.headers["x-keel-request-id"])
        latencies.append(seconds)
    assert len(primary.requests) == primary_calls
    opened = statistics.median(latencies)
    assert opened < 3 * baseline + 0.05, f"open: {opened:.3f} s, fallback alone {baseline:.3f} s"

    expected = SAMPLES + THRESHOLD // 2 + SAMPLES
    records = {r["id"]: r for r in settled_records(keel, who, expected)}
    assert len(records) == expected
    failing = [("primary", "error", 502), ("primary", "error", 502), ("backup", "ok", None)]
    assert sorted(
        _chain(r) for r in records.values() if r["model"] == "duo" and r["id"] not in ids
    ) == [failing] * (THRESHOLD // 2)
    for request_id in ids:
        assert _chain(records[request_id]) == [
            ("primary", "skipped_open", None),
            ("backup", "ok", None),
        ]
    assert_responsive_and_idle(keel)
