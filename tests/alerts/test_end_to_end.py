"""DONE-WHEN: a real `keel serve` with a rule "error_rate > 0.5 over 10 s, for 0 s" notifies a
local webhook "firing" after failing requests, then "resolved" once successful ones bring the
rate down; the history (API and CLI) shows both. Then two replicas on one PostgreSQL notify a
transition once."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alerts.receiver import Receiver
from tests.servers import KEEL_BIN, KeelProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

INTERVAL_S = 0.5
WINDOW_S = 10
ENV = {"KEEL_ALERTS_INTERVAL_S": str(INTERVAL_S), "KEEL_ALERTS_TIMEOUT_S": "2"}


def _rule(receiver: Receiver) -> dict[str, Any]:
    return {
        "name": "gateway-errors",
        "metric": "error_rate",
        "window_s": WINDOW_S,
        "comparator": ">",
        "threshold": 0.5,
        "for_s": 0,
        "channels": [{"type": "webhook", "url": receiver.url("/hook/token-abc")}],
    }


async def _chat(client: httpx.AsyncClient, model: str, n: int) -> list[int]:
    statuses = []
    for _ in range(n):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
        statuses.append(response.status_code)
    return statuses


async def _start(keel: KeelProcess) -> KeelProcess:
    return await asyncio.to_thread(keel.start, 60)  # a loaded 2-core machine starts slowly


async def test_firing_then_resolved_through_a_real_keel(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    keel = await _start(KeelProcess(tmp_path, env={**ENV, "KEEL_DATABASE_URL": database_url}))
    try:
        async with httpx.AsyncClient(base_url=keel.url, timeout=10) as client:
            created = await client.post("/api/v1/alerts/rules", json=_rule(receiver))
            assert created.status_code == 201, created.text
            rule_id = created.json()["id"]
            # 502s, then 503s once the mock's circuit breaker opens: errors either way
            assert all(s >= 500 for s in await _chat(client, "mock/fail", 4))
            [firing] = await receiver.wait_for("/hook/token-abc", 1, WINDOW_S + 5 * INTERVAL_S)
            assert firing.body["state"] == "firing"
            assert (firing.body["rule"], firing.body["value"]) == ("gateway-errors", 1.0)
            assert await _chat(client, "mock/echo", 8) == [200] * 8  # 4 errors of 12 calls
            both = await receiver.wait_for("/hook/token-abc", 2, WINDOW_S + 5 * INTERVAL_S)
            assert [r.body["state"] for r in both] == ["firing", "resolved"]
            assert both[1].body["value"] == pytest.approx(4 / 12)
            await asyncio.sleep(3 * INTERVAL_S)  # no repeat while it stays resolved
            assert len(receiver.at("/hook/token-abc")) == 2
            history = await client.get("/api/v1/alerts/events", params={"rule": "gateway-errors"})
            events = history.json()["data"]
            assert [(e["kind"], e["rule_id"]) for e in events] == [
                ("resolved", rule_id),
                ("firing", rule_id),
            ]
            for event in events:
                assert event["deliveries"] == [
                    {
                        "channel": f"{receiver.base_url}/…",
                        "type": "webhook",
                        "status": "sent",
                        "attempts": 1,
                        "error": None,
                    }
                ]
            assert "token-abc" not in history.text
            rule = (await client.get("/api/v1/alerts/rules/gateway-errors")).json()
            assert rule["state"] == "ok"
        cli = await asyncio.to_thread(
            subprocess.run,
            [KEEL_BIN, "alerts", "history", "--rule", "gateway-errors"],
            env={**os.environ, "KEEL_URL": keel.url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == 0, cli.stderr
        kinds = [line.split()[3] for line in cli.stdout.splitlines()[1:]]
        assert kinds == ["resolved", "firing"]
    finally:
        await asyncio.to_thread(keel.stop)
    assert "token-abc" not in keel.log()


@pytest.mark.parametrize("dialect", ["postgresql"])
async def test_two_replicas_notify_once(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    env = {**ENV, "KEEL_DATABASE_URL": database_url}
    replicas = [KeelProcess(tmp_path / "a", env=env), KeelProcess(tmp_path / "b", env=env)]
    try:
        for replica in replicas:
            await _start(replica)
        async with httpx.AsyncClient(base_url=replicas[0].url, timeout=10) as client:
            created = await client.post("/api/v1/alerts/rules", json=_rule(receiver))
            assert created.status_code == 201, created.text
            assert all(s >= 500 for s in await _chat(client, "mock/fail", 3))
        await receiver.wait_for("/hook/token-abc", 1, WINDOW_S + 5 * INTERVAL_S)
        # the rule stays firing until the window passes; by then both replicas have
        # evaluated it many times: still one notification, then one resolve
        both = await receiver.wait_for("/hook/token-abc", 2, WINDOW_S + 10 * INTERVAL_S)
        await asyncio.sleep(4 * INTERVAL_S)
        assert [r.body["state"] for r in receiver.at("/hook/token-abc")] == ["firing", "resolved"]
        assert both[1].body["value"] is None  # no data once the errors left the window
    finally:
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in replicas))
