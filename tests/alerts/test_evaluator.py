"""The evaluator over a real database and a real webhook receiver, with a fake metric source
and a fake clock: the state machine end to end, deduplication, no data, failures, and the
compare-and-set between two evaluators sharing one PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy.engine import make_url

from keel.alerts import store
from keel.alerts.evaluator import Evaluator
from keel.alerts.notify import Sender
from keel.analytics.query import Filters
from keel.storage.database import Database
from tests.alerts.receiver import Receiver
from tests.clock import Clock
from tests.servers import TcpProxy


@dataclass
class FakeMetrics:
    """Answers window_value from `values` (by metric); `fail` makes it raise."""

    values: dict[str, float | None] = field(default_factory=dict)
    calls: list[tuple[str, float, float, Filters]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    async def __call__(
        self, db: Database, metric: str, since: float, until: float, filters: Filters
    ) -> float | None:
        self.calls.append((metric, since, until, filters))
        if metric in self.fail:
            raise RuntimeError("metric source broke")
        return self.values.get(metric)


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    s = Sender(timeout_s=2.0, attempts=2, backoff_s=0.01)
    yield s
    await s.close()


async def _rule(db: Database, receiver: Receiver, name: str = "errors", **changes: object) -> str:
    fields: dict[str, object] = {
        "name": name,
        "metric": "error_rate",
        "window_s": 60,
        "comparator": ">",
        "threshold": 0.5,
        "for_s": 30,
        "filters": {"model": "mock/fail"},
        "channels": [{"type": "webhook", "url": receiver.url(f"/{name}")}],
    }
    rule = await store.create_rule(db, **{**fields, **changes})  # type: ignore[arg-type]
    return rule.id


async def _tick(evaluator: Evaluator, clock: Clock, at: float) -> None:
    clock.now = at
    await evaluator.run_once()
    await evaluator.drain()


async def test_pending_firing_resolved_each_notified_once(
    db: Database, receiver: Receiver, sender: Sender
) -> None:
    metrics, clock = FakeMetrics({"error_rate": 0.9}), Clock()
    evaluator = Evaluator(db, metrics, sender, clock=clock, public_url="https://keel.example/")
    rule_id = await _rule(db, receiver)
    await _tick(evaluator, clock, 1000.0)
    assert metrics.calls == [("error_rate", 940.0, 1000.0, Filters(model="mock/fail"))]
    rule = await store.get_rule(db, rule_id)
    assert rule is not None and (rule.state, rule.state_since) == ("pending", 1000.0)
    await _tick(evaluator, clock, 1029.0)
    assert receiver.received == []
    await _tick(evaluator, clock, 1030.0)  # held for for_s: fires
    for at in (1045.0, 1060.0, 1075.0):  # stays firing: no repeat
        await _tick(evaluator, clock, at)
    [firing] = receiver.at("/errors")
    assert firing.body == {
        "rule": "errors",
        "rule_id": rule_id,
        "state": "firing",
        "metric": "error_rate",
        "value": 0.9,
        "threshold": 0.5,
        "comparator": ">",
        "window_s": 60,
        "for_s": 30,
        "filters": {"model": "mock/fail"},
        "at": 1030.0,
        "message": "error_rate > 0.5 over 60 s (model=mock/fail): value 0.9",
        "keel_url": "https://keel.example",
    }
    metrics.values["error_rate"] = 0.1
    await _tick(evaluator, clock, 1090.0)
    await _tick(evaluator, clock, 1105.0)
    assert [r.body["state"] for r in receiver.at("/errors")] == ["firing", "resolved"]
    delivery = {
        "channel": f"{receiver.base_url}/…",
        "type": "webhook",
        "status": "sent",
        "attempts": 1,
        "error": None,
    }
    events = await store.list_events(db, rule_id=rule_id)
    assert [{k: v for k, v in e.items() if k != "id"} for e in events] == [
        {
            "rule_id": rule_id,
            "rule_name": "errors",
            "kind": "resolved",
            "at": 1090.0,
            "value": 0.1,
            "threshold": 0.5,
            "message": "error_rate > 0.5 over 60 s (model=mock/fail): value 0.1",
            "deliveries": [delivery],
        },
        {
            "rule_id": rule_id,
            "rule_name": "errors",
            "kind": "firing",
            "at": 1030.0,
            "value": 0.9,
            "threshold": 0.5,
            "message": "error_rate > 0.5 over 60 s (model=mock/fail): value 0.9",
            "deliveries": [delivery],
        },
    ]
    rule = await store.get_rule(db, rule_id)
    assert rule is not None
    assert (rule.state, rule.state_since, rule.last_value, rule.last_evaluated_at) == (
        "ok",
        1090.0,
        0.1,
        1105.0,
    )


async def test_a_pending_rule_that_recovers_never_notifies(
    db: Database, receiver: Receiver, sender: Sender
) -> None:
    metrics, clock = FakeMetrics({"error_rate": 0.9}), Clock()
    evaluator = Evaluator(db, metrics, sender, clock=clock)
    await _rule(db, receiver)
    await _tick(evaluator, clock, 1000.0)
    metrics.values["error_rate"] = 0.2
    await _tick(evaluator, clock, 1010.0)
    metrics.values["error_rate"] = 0.9
    await _tick(evaluator, clock, 1020.0)
    await _tick(evaluator, clock, 1049.0)  # pending again since 1020: not yet for_s
    assert receiver.received == [] and await store.list_events(db) == []
    await _tick(evaluator, clock, 1050.0)
    assert len(receiver.at("/errors")) == 1


async def test_no_data_is_not_a_breach_and_resolves(
    db: Database, receiver: Receiver, sender: Sender
) -> None:
    metrics, clock = FakeMetrics({"latency_p95": None}), Clock()
    evaluator = Evaluator(db, metrics, sender, clock=clock)
    # "< 100" would hold for a missing value read as 0; no data must not fire it
    await _rule(db, receiver, "slow", metric="latency_p95", comparator="<", threshold=100, for_s=0)
    await _tick(evaluator, clock, 1000.0)
    assert receiver.received == []
    metrics.values["latency_p95"] = 50.0
    await _tick(evaluator, clock, 1010.0)
    metrics.values["latency_p95"] = None  # the traffic stopped
    await _tick(evaluator, clock, 1020.0)
    assert [(r.body["state"], r.body["value"]) for r in receiver.at("/slow")] == [
        ("firing", 50.0),
        ("resolved", None),
    ]
    [resolved, _] = await store.list_events(db)
    assert resolved["message"] == "latency_p95 < 100 over 60 s (model=mock/fail): value no data"


async def test_one_failing_rule_does_not_stop_the_others(
    db: Database, receiver: Receiver, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, clock = FakeMetrics({"cost_usd": 12.0}), Clock()
    metrics.fail.add("error_rate")
    evaluator = Evaluator(db, metrics, sender, clock=clock)
    await _rule(db, receiver, "a-broken", for_s=0)
    await _rule(db, receiver, "b-spend", metric="cost_usd", threshold=10, for_s=0)
    with caplog.at_level(logging.WARNING, logger="keel.alerts"):
        await _tick(evaluator, clock, 1000.0)
    assert "alert rule 'a-broken' not evaluated: RuntimeError" in caplog.text
    assert [r.body["rule"] for r in receiver.received] == ["b-spend"]


async def test_notifications_of_a_rule_keep_their_order(
    db: Database, receiver: Receiver, sender: Sender
) -> None:
    metrics, clock = FakeMetrics({"error_rate": 0.9}), Clock()
    evaluator = Evaluator(db, metrics, sender, clock=clock)
    await _rule(db, receiver, for_s=0)
    receiver.hang_s = 0.3  # the firing notice is slow to be taken
    receiver.script("/errors", "hang")
    clock.now = 1000.0
    await evaluator.run_once()
    metrics.values["error_rate"] = 0.0
    clock.now = 1001.0
    await evaluator.run_once()  # resolves while the firing notice is still under way
    await evaluator.drain()
    assert [r.body["state"] for r in receiver.at("/errors")] == ["firing", "resolved"]


async def test_the_loop_runs_on_its_interval(
    db: Database, receiver: Receiver, sender: Sender
) -> None:
    evaluator = Evaluator(db, FakeMetrics({"requests": 5.0}), sender, interval_s=0.05)
    await _rule(db, receiver, "traffic", metric="requests", comparator=">=", threshold=5, for_s=0)
    evaluator.start()
    try:
        await receiver.wait_for("/traffic", 1, timeout=10)
    finally:
        await evaluator.stop()
    assert [e["kind"] for e in await store.list_events(db)] == ["firing"]


@pytest.mark.parametrize("dialect", ["postgresql"])
async def test_two_evaluators_on_one_postgresql_notify_once(
    database_url: str, db: Database, receiver: Receiver
) -> None:
    other = await Database.open(database_url)
    senders = [Sender(attempts=1), Sender(attempts=1)]
    metrics, clock = FakeMetrics({"error_rate": 0.9}), Clock()
    evaluators = [
        Evaluator(d, metrics, s, clock=clock) for d, s in zip([db, other], senders, strict=True)
    ]
    try:
        await _rule(db, receiver, for_s=0)
        for round_, (value, at) in enumerate([(0.9, 1000.0), (0.1, 1010.0)] * 5):
            metrics.values["error_rate"] = value
            clock.now = at + round_ * 100
            await asyncio.gather(*(e.run_once() for e in evaluators))
            await asyncio.gather(*(e.drain() for e in evaluators))
    finally:
        await other.close()
        for s in senders:
            await s.close()
    states = [r.body["state"] for r in receiver.at("/errors")]
    assert states == ["firing", "resolved"] * 5
    assert [e["kind"] for e in reversed(await store.list_events(db))] == states


@pytest.mark.parametrize("dialect", ["postgresql"])
async def test_the_loop_survives_a_database_outage(
    postgres_server_url: str,
    db: Database,
    receiver: Receiver,
    sender: Sender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _rule(db, receiver, for_s=0)
    url = make_url(postgres_server_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port)
    via_proxy = await Database.open(proxied.render_as_string(hide_password=False))
    metrics, clock = FakeMetrics({"error_rate": 0.9}), Clock()
    evaluator = Evaluator(via_proxy, metrics, sender, clock=clock)
    try:
        await proxy.cut()
        with caplog.at_level(logging.WARNING, logger="keel.alerts"):
            await _tick(evaluator, clock, 1000.0)
        assert "alert rules not evaluated: cannot load them" in caplog.text
        await proxy.restore()
        await _tick(evaluator, clock, 1010.0)
    finally:
        await via_proxy.close()
        await proxy.cut()
    assert [r.body["state"] for r in receiver.at("/errors")] == ["firing"]
