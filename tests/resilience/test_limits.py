"""Rate limits, budgets and revocations of `keel serve` replicas sharing PostgreSQL and Redis
(docs/limits.md, docs/keys.md): they behave as one.

- 40 concurrent requests on a key with `rpm: 10`, spread over two replicas: exactly 10 are
  admitted, and every 429 says when to come back (`Retry-After`).
- Budget race: 20 requests released together against a key whose budget fits 2 worst cases:
  at most 2 are admitted and the spend ends within the budget — on one process, and on two
  sharing Redis.
- A key revoked on one replica is refused by the other within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.costs.pricing import Pricer
from keel.costs.tokens import count_messages
from keel.providers.base import Usage
from tests.resilience.conftest import (
    ADMIN,
    WatchedOpenAI,
    bearer,
    create_key,
    customer,
    provider,
    settled_records,
    start_keel,
)
from tests.servers import KeelProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

MESSAGES = [{"role": "user", "content": "how much will this cost"}]
MAX_TOKENS = 1000  # the output cap: with gpt-4o-mini's prices, most of the worst case


def config(fake: WatchedOpenAI) -> dict[str, Any]:
    return {
        "providers": {"primary": provider(fake)},
        "models": [{"name": "chat", "targets": [{"provider": "primary", "model": "gpt-4o-mini"}]}],
    }


@contextmanager
def replicas(
    tmp_path: Path, fake: WatchedOpenAI, count: int, env: dict[str, str]
) -> Iterator[list[KeelProcess]]:
    with ExitStack() as stack:
        procs = []
        for i in range(count):
            proc = start_keel(tmp_path / f"keel{i}", config(fake), env)
            stack.callback(proc.stop)
            procs.append(proc)
        yield procs


def together(n: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """Run `call(0..n-1)` on n threads released at once by a barrier."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response | BaseException | None] = [None] * n

    def run(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = call(i)
        except BaseException as exc:  # reported below, with the others
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    out = []
    for r in results:
        assert isinstance(r, httpx.Response), r
        out.append(r)
    return out


def post_chat(
    keel: KeelProcess, key: dict[str, Any], who: str, body: dict[str, Any]
) -> httpx.Response:
    return httpx.post(
        f"{keel.url}/v1/chat/completions",
        json=body,
        headers={**bearer(key), "x-keel-customer": who},
        timeout=30,
    )


def test_rpm_10_admits_exactly_10_of_40_across_two_replicas(
    tmp_path: Path,
    upstreams: tuple[WatchedOpenAI, WatchedOpenAI],
    redis_db: str,
    shared_database: str,
) -> None:
    env = {"KEEL_REDIS_URL": redis_db, "KEEL_DATABASE_URL": shared_database}
    with replicas(tmp_path, upstreams[0], 2, env) as (one, two):
        key = create_key(one, rpm=10)
        who = customer()
        body = {"model": "mock/echo", "messages": MESSAGES}
        answers = together(40, lambda i: post_chat((one, two)[i % 2], key, who, body))

        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] * 10 + [429] * 30
        for r in answers:
            assert r.headers["x-ratelimit-limit-requests"] == "10"
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
        # both replicas admitted and refused: the limit is global, not per replica
        served = {r.url.port for r in answers if r.status_code == 200}
        refused = {r.url.port for r in answers if r.status_code == 429}
        assert refused == {one.port, two.port}, served

        # one record per request, on whichever replica served it
        records = settled_records(one, who, 40)
        assert len(records) == 40
        assert sorted(r["status_code"] for r in records) == statuses


def worst_case_usd() -> float:
    """What Keel reserves for one request: the prompt at the input price plus the output cap
    at the output price (docs/limits.md)."""
    usage = Usage(input_tokens=count_messages(MESSAGES), output_tokens=MAX_TOKENS)
    usd = Pricer().cost(usage, model="gpt-4o-mini", provider_id="openai").usd
    assert usd is not None and usd > 0
    return usd


@pytest.mark.parametrize(
    ("replica_count", "shared"),
    [(1, "memory"), (1, "redis"), (2, "redis")],
    ids=["one-process", "one-process-redis", "two-processes-redis"],
)
def test_budget_race_admits_at_most_two(
    tmp_path: Path,
    upstreams: tuple[WatchedOpenAI, WatchedOpenAI],
    request: pytest.FixtureRequest,
    replica_count: int,
    shared: str,
) -> None:
    fake = upstreams[0]
    env: dict[str, str] = {}
    if shared == "redis":
        env["KEEL_REDIS_URL"] = request.getfixturevalue("redis_db")
    if replica_count > 1:
        env["KEEL_DATABASE_URL"] = request.getfixturevalue("shared_database")
    # 2.5 worst cases: two fit, a third does not.
    budget = round(2.5 * worst_case_usd(), 9)
    fake.delay_s = 0.5  # the admitted calls still hold their reservations when the rest arrive
    try:
        with replicas(tmp_path, fake, replica_count, env) as procs:
            key = create_key(procs[0], budget_usd=budget, budget_period="total")
            who = customer()
            body = {"model": "chat", "max_tokens": MAX_TOKENS, "messages": MESSAGES}
            calls = len(fake.requests)
            answers = together(20, lambda i: post_chat(procs[i % len(procs)], key, who, body))
            admitted = [r for r in answers if r.status_code == 200]
            refused = [r for r in answers if r.status_code != 200]

            assert len(admitted) <= 2
            assert len(admitted) == 2  # docs/limits.md: exactly 2 while they are in flight
            assert len(fake.requests) - calls == len(admitted)
            for r in refused:
                assert r.status_code == 429, r.text
                error = r.json()["error"]
                assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
                assert "retry-after" not in r.headers  # a `total` budget never resets

            records = settled_records(procs[0], who, 20)
            assert len(records) == 20
            spent_by_records = sum(r["cost_usd"] or 0 for r in records)
            spend = httpx.get(
                f"{procs[-1].url}/api/v1/limits/key/{key['id']}/spend", headers=ADMIN, timeout=5
            )
            assert spend.status_code == 200, spend.text
            figures = spend.json()
            assert figures["reserved_usd"] == pytest.approx(0, abs=1e-12)
            # the ledger keeps whole micro-USD, each charge rounded up
            assert 0 <= figures["spent_usd"] - spent_by_records <= 1e-6 * len(admitted) + 1e-12
            assert 0 < figures["spent_usd"] <= budget
    finally:
        fake.delay_s = 0.0


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    tmp_path: Path,
    upstreams: tuple[WatchedOpenAI, WatchedOpenAI],
    redis_db: str,
    shared_database: str,
) -> None:
    env = {"KEEL_REDIS_URL": redis_db, "KEEL_DATABASE_URL": shared_database}
    with replicas(tmp_path, upstreams[0], 2, env) as (one, two):
        key = create_key(one)
        who = customer()
        body = {"model": "mock/echo", "messages": MESSAGES}
        assert post_chat(two, key, who, body).status_code == 200  # two knows the key now

        revoked = httpx.post(f"{one.url}/api/v1/keys/{key['id']}/revoke", headers=ADMIN, timeout=5)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        revoked_at = time.monotonic()
        status = 200
        while status == 200 and time.monotonic() - revoked_at < 1.0:
            status = post_chat(two, key, who, body).status_code
        assert status == 401, "replica two still admits the key a second after its revocation"
        resp = post_chat(two, key, who, body)
        assert resp.status_code == 401
        assert resp.json()["error"]["message"] == "this API key was revoked"
