"""Every fault of the fake OpenAI upstream, plain and streamed, through a real `keel serve`.

The public model `chat` is served by the provider `primary` and falls back to the model `spare`
(provider `backup`). For each fault the test queues exactly as many faults as Keel should call
the primary, then checks the documented outcome (docs/routing.md):

- a retryable failure (429, 500, HTML 502, invalid JSON, an error with status 200, a reset, an
  error as the first SSE event) is tried `retry_max_attempts` (2) times, then the fallback
  answers 200;
- a rejected provider key (upstream 401, answered 502) and a hang cut by the target's
  `timeout_s` move on at once, without a retry;
- the client's own errors (400, 404) reach the client with that status: no retry, no fallback;
- a stream that breaks or sends an error after its first byte ends with an SSE error event, and
  the record says so; a slow drip is served in full.

And every time: the primary was called exactly that often, the request has exactly one record,
its fallback chain lists what was tried, and the process still answers `/healthz` at once
without burning CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FAULTS
from tests.resilience.conftest import (
    ADMIN,
    WatchedOpenAI,
    assert_responsive_and_idle,
    customer,
    provider,
    settled_records,
    sse_data,
    start_keel,
    streamed_text,
)
from tests.servers import KeelProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

TIMEOUT_S = 2.5  # the primary's timeout_s: cuts a hang, lets a 1 s slow drip through
PROMPT = "drip"  # one word: a slow drip of it takes about 3 s (a chunk a second)


@dataclass(frozen=True)
class Expect:
    calls: int  # calls the primary gets
    outcome: str  # "fallback", "client_error", "served" or "broken"
    status: int | None = None  # the primary's error status in the chain, or the client's status
    error_type: str | None = None  # the record's error_type for a broken stream


RETRIED_502 = Expect(2, "fallback", 502)
PLAIN: dict[str, Expect] = {
    "http_400": Expect(1, "client_error", 400),
    "http_401": Expect(1, "fallback", 502),
    "http_404": Expect(1, "client_error", 404),
    "http_429": Expect(2, "fallback", 429),
    "http_500": RETRIED_502,
    "html_502": RETRIED_502,
    "invalid_json": RETRIED_502,
    "error_200": RETRIED_502,
    "reset": RETRIED_502,
    "hang": Expect(1, "fallback", 504),
    # On a plain request the stream faults become a 1 s delay, a reset and error_200.
    "slow_drip": Expect(1, "served"),
    "stream_break": RETRIED_502,
    "stream_error_first": RETRIED_502,
    "stream_error_mid": RETRIED_502,
}
STREAMED: dict[str, Expect] = {
    **PLAIN,
    "stream_break": Expect(1, "broken", error_type="upstream_stream_error"),
    "stream_error_first": RETRIED_502,  # before the first byte: falls back
    "stream_error_mid": Expect(1, "broken", error_type="upstream_error"),
}
CASES = [(f, False) for f in sorted(PLAIN)] + [(f, True) for f in sorted(STREAMED)]


def test_the_matrix_covers_every_fault() -> None:
    assert set(PLAIN) == set(STREAMED) == FAULTS


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> Iterator[KeelProcess]:
    primary, backup = upstreams
    config = {
        "providers": {"primary": provider(primary), "backup": provider(backup)},
        "models": [
            {
                "name": "chat",
                "targets": [
                    {"provider": "primary", "model": "gpt-4o-mini", "timeout_s": TIMEOUT_S}
                ],
                "fallbacks": ["spare"],
            },
            {"name": "spare", "targets": [{"provider": "backup", "model": "gpt-4o-mini"}]},
        ],
        "retry_max_attempts": 2,
        "retry_backoff_base_ms": 10,
        "retry_backoff_max_ms": 50,
        # One fault after another into the same target: a breaker would hide what is checked
        # here (test_breaker.py covers it).
        "breaker_failure_threshold": 100000,
        "upstream_read_timeout_s": 5,
        "request_deadline_s": 20,
    }
    proc = start_keel(tmp_path_factory.mktemp("keel"), config)
    yield proc
    proc.stop()


def _chain(record: dict[str, Any]) -> list[tuple[str, str, int | None]] | None:
    if record["fallbacks"] is None:
        return None
    for attempt in record["fallbacks"]:
        assert attempt["latency_ms"] is not None and attempt["latency_ms"] >= 0
        assert (attempt["error"] is None) == (attempt["outcome"] == "ok"), attempt
    return [(a["provider"], a["outcome"], a["status"]) for a in record["fallbacks"]]


def _check_answer(resp: httpx.Response, expect: Expect, stream: bool) -> None:
    if expect.outcome == "client_error":
        assert resp.status_code == expect.status, resp.text
        assert "provider 'primary' answered HTTP" in resp.json()["error"]["message"]
        return
    assert resp.status_code == 200, resp.text
    served_by = "primary" if expect.outcome in ("served", "broken") else "backup"
    assert resp.headers["x-keel-provider"] == served_by
    if not stream:
        assert resp.json()["choices"][0]["message"]["content"] == PROMPT
        return
    events = sse_data(resp.text)
    if expect.outcome == "broken":
        # the first byte went out: the stream is the client's, and ends with an error event
        assert streamed_text(events[:-1]) == PROMPT
        assert json.loads(events[-1])["error"]["type"] == expect.error_type
        assert "[DONE]" not in events
    else:
        assert events[-1] == "[DONE]"
        assert streamed_text(events) == PROMPT


def _check_record(record: dict[str, Any], expect: Expect) -> None:
    calls = [("primary", "error", expect.status)] * expect.calls
    subset = {k: record[k] for k in ("status_code", "provider", "error_type", "final")}
    if expect.outcome == "fallback":
        assert subset == {
            "status_code": 200,
            "provider": "backup",
            "error_type": None,
            "final": True,
        }
        assert _chain(record) == [*calls, ("backup", "ok", None)]
    elif expect.outcome == "client_error":
        assert subset["status_code"] == expect.status and subset["provider"] == "primary"
        assert _chain(record) == calls
    elif expect.outcome == "served":
        assert subset == {
            "status_code": 200,
            "provider": "primary",
            "error_type": None,
            "final": True,
        }
        assert _chain(record) is None  # the first target answered: nothing worth a chain
    else:
        assert subset == {
            "status_code": 200,
            "provider": "primary",
            "error_type": expect.error_type,
            "final": True,
        }
        assert record["error"]
        assert _chain(record) is None


@pytest.mark.parametrize(
    ("fault", "stream"), CASES, ids=[f"{f}-{'stream' if s else 'plain'}" for f, s in CASES]
)
def test_fault(
    keel: KeelProcess,
    upstreams: tuple[WatchedOpenAI, WatchedOpenAI],
    fault: str,
    stream: bool,
) -> None:
    primary, backup = upstreams
    expect = (STREAMED if stream else PLAIN)[fault]
    who = customer()
    before = len(primary.requests), len(backup.requests)
    primary.fail_next(fault, expect.calls)
    try:
        body = {
            "model": "chat",
            "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        started = time.monotonic()
        resp = httpx.post(
            f"{keel.url}/v1/chat/completions",
            json=body,
            headers={**ADMIN, "x-keel-customer": who},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        _check_answer(resp, expect, stream)
        assert len(primary.requests) - before[0] == expect.calls
        assert len(backup.requests) - before[1] == int(expect.outcome == "fallback")
        if fault == "hang":
            assert elapsed >= TIMEOUT_S  # cut by the target's timeout, not by something else

        records = settled_records(keel, who, 1)
        assert len(records) == 1, [r["id"] for r in records]
        assert records[0]["id"] == resp.headers["x-keel-request-id"]
        _check_record(records[0], expect)
    finally:
        primary.clear_faults()
    assert_responsive_and_idle(keel)
