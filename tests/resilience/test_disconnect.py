"""A streaming client that goes away mid-stream: Keel lets go of the upstream call within a
second and records the call as `client_disconnected` with the output seen so far."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

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

WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> Iterator[KeelProcess]:
    primary, _ = upstreams
    config = {
        "providers": {"primary": provider(primary)},
        "models": [{"name": "chat", "targets": [{"provider": "primary", "model": "gpt-4o-mini"}]}],
        "breaker_failure_threshold": 100000,
    }
    proc = start_keel(tmp_path_factory.mktemp("keel"), config)
    yield proc
    proc.stop()


def _read_then_leave(
    keel: KeelProcess, model: str, who: str, words: int, headers: dict[str, str] | None = None
) -> tuple[str, float]:
    """Stream a chat answer, hang up after `words` content chunks; the request id and when."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": WORDS}]}
    seen = 0
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{keel.url}/v1/chat/completions",
            json=body,
            headers={**ADMIN, "x-keel-customer": who, **(headers or {})},
        ) as resp,
    ):
        assert resp.status_code == 200
        request_id = resp.headers["x-keel-request-id"]
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                seen += 1
                if seen == words:
                    break
    # Leaving the block before the end of the body closes the connection.
    return request_id, time.monotonic()


def test_slow_drip_upstream_is_released_within_a_second(
    keel: KeelProcess, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> None:
    primary, _ = upstreams
    who = customer()
    primary.fail_next("slow_drip")  # a chunk a second: the whole answer would take ~12 s
    closed_before = len(primary.streams_closed)
    request_id, left_at = _read_then_leave(keel, "chat", who, words=2)

    deadline = left_at + 3
    while len(primary.streams_closed) == closed_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(primary.streams_closed) == closed_before + 1, "the upstream stream was not closed"
    assert primary.streams_closed[-1] - left_at < 1.0

    (record,) = settled_records(keel, who, 1)
    assert record["id"] == request_id
    assert record["status_code"] == 200 and record["error_type"] == "client_disconnected"
    # the two words the client saw, perhaps a third on its way: never the whole answer
    assert 2 <= record["output_tokens"] < len(WORDS.split())
    assert_responsive_and_idle(keel)


def test_mock_stream_records_the_partial_output(keel: KeelProcess) -> None:
    who = customer()
    request_id, _ = _read_then_leave(
        keel, "mock/echo", who, words=3, headers={"x-mock-chunk-delay-ms": "200"}
    )
    (record,) = settled_records(keel, who, 1)
    assert record["id"] == request_id
    assert record["status_code"] == 200 and record["error_type"] == "client_disconnected"
    assert 3 <= record["output_tokens"] < len(WORDS.split())
    assert_responsive_and_idle(keel)
