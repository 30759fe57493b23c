"""Budget notices from the gateway's request path: a key's budget crossing 80% and refusing a
request reaches the budget webhook of a real `keel serve`, and the history records it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.alerts.receiver import Receiver
from tests.servers import KeelProcess

pytestmark = pytest.mark.timeout(120)

ADMIN = "keel-admin-budget-notices-0123"
# 50 words: the mock counts 50 input and 50 output tokens, priced as gpt-4o-mini's list price:
# 37.5 µUSD a call, so 80% of the budget is spent on the 11th call and the 13th does not fit.
PROMPT = " ".join(f"word{n}" for n in range(50))


async def test_threshold_and_refusal_notices_reach_the_budget_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    keel = KeelProcess(
        tmp_path,
        env={
            "KEEL_ADMIN_KEY": ADMIN,
            "KEEL_ALERTS_BUDGET_WEBHOOKS": receiver.url("/budget/secret-token"),
        },
    )
    await asyncio.to_thread(keel.start, 60)
    try:
        admin = {"authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=keel.url, timeout=10) as client:
            created = await client.post(
                "/api/v1/keys",
                json={"name": "capped", "budget_usd": 0.0005, "budget_period": "total"},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            key = {"authorization": f"Bearer {created.json()['key']}"}
            statuses = []
            for _ in range(20):
                answer = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "mock/gpt-4o-mini",
                        "max_tokens": 60,
                        "messages": [{"role": "user", "content": PROMPT}],
                    },
                    headers=key,
                )
                statuses.append(answer.status_code)
                if answer.status_code == 429:
                    assert answer.json()["error"]["code"] == "budget_exceeded"
                    break
            assert statuses[-1] == 429 and set(statuses[:-1]) == {200}

            notices = await receiver.wait_for("/budget/secret-token", 2, timeout=20)
            percents = sorted(n.body["percent"] for n in notices)
            assert percents[:2] == [80, 100]
            assert {n.body["scope"] for n in notices} == {"key"}
            for _ in range(50):  # the history row is written once the delivery is done
                events = await client.get("/api/v1/alerts/events", headers=admin)
                kinds = [e["kind"] for e in events.json()["data"]]
                if kinds.count("budget_threshold") >= 2:
                    break
                await asyncio.sleep(0.2)
            assert kinds.count("budget_threshold") >= 2
            assert "secret-token" not in events.text
    finally:
        keel.stop()
    assert "secret-token" not in keel.log()
