"""Budget threshold notices: queued from the request path, sent to the configured channels
and recorded in the alert history."""

from __future__ import annotations

import logging

import pytest

from keel.alerts import notices, store
from keel.alerts.notices import BudgetNotices, deliver_budget_notices
from keel.alerts.notify import Sender
from keel.alerts.rules import Channel
from keel.alerts.service import budget_channels
from keel.config import ConfigError, load_settings
from keel.limits import BudgetLedger, BudgetSpec, MemoryState
from keel.limits.budgets import Notice
from keel.storage.database import Database
from tests.alerts.receiver import Receiver

NOTICE = Notice("customer", "acme", "month", "m2026-11", 80, 16.5, 20.0)


async def test_a_notice_is_sent_and_recorded(db: Database, receiver: Receiver) -> None:
    sender = Sender(attempts=1)
    channels = [Channel("webhook", receiver.url("/budget")), Channel("slack", receiver.url("/s"))]
    service = BudgetNotices(
        db, sender, channels, public_url="https://keel.example", clock=lambda: 500.0
    )
    service.start()
    notices.install(service)
    try:
        deliver_budget_notices([NOTICE])
        await service.stop()
    finally:
        notices.install(None)
        await sender.close()
    text = (
        "customer 'acme' has spent 16.5 USD: 80% of its budget of 20 USD per month "
        "(period m2026-11)"
    )
    [webhook] = receiver.at("/budget")
    assert webhook.body == {
        "kind": "budget_threshold",
        "state": "budget_threshold",
        "scope": "customer",
        "id": "acme",
        "period": "month",
        "period_tag": "m2026-11",
        "percent": 80,
        "spent_usd": 16.5,
        "limit_usd": 20.0,
        "at": 500.0,
        "message": text,
        "keel_url": "https://keel.example",
    }
    [slack] = receiver.at("/s")
    assert (
        slack.body["text"]
        == f"[Keel] budget 80% used: customer 'acme': {text}\nhttps://keel.example"
    )
    [event] = await store.list_events(db)
    assert {k: v for k, v in event.items() if k != "id"} == {
        "rule_id": None,
        "rule_name": "budget customer acme",
        "kind": "budget_threshold",
        "at": 500.0,
        "value": 16.5,
        "threshold": 16.0,
        "message": text,
        "deliveries": [
            {
                "channel": f"{receiver.base_url}/…",
                "type": t,
                "status": "sent",
                "attempts": 1,
                "error": None,
            }
            for t in ("webhook", "slack")
        ],
    }


async def test_without_channels_the_notice_is_still_recorded(db: Database) -> None:
    sender = Sender()
    service = BudgetNotices(db, sender, [])
    event = await service.deliver(Notice("project", "default", "total", "total", 100, 50.0, 50.0))
    await sender.close()
    assert event is not None
    assert (event["kind"], event["deliveries"]) == ("budget_threshold", [])
    assert event["message"] == (
        "project 'default' has spent 50 USD: 100% of its budget of 50 USD in total (period total)"
    )
    assert await store.list_events(db) == [event]


async def test_the_queue_is_bounded(db: Database) -> None:
    sender = Sender()
    service = BudgetNotices(db, sender, [], max_queued=2)  # not started: nothing drains it
    service.submit([NOTICE, NOTICE, NOTICE])
    await sender.close()
    assert service.dropped == 1


def test_without_a_running_service_notices_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notices.install(None)
    with caplog.at_level(logging.INFO, logger="keel.alerts"):
        deliver_budget_notices([NOTICE])
    assert caplog.messages == ["budget notice (no alerts running): customer 'acme' at 80%"]


def test_budget_channels_from_the_settings() -> None:
    settings = load_settings(
        env={
            "KEEL_ALERTS_BUDGET_WEBHOOKS": "http://127.0.0.1:9/a, https://hooks.example/b",
            "KEEL_ALERTS_BUDGET_SLACK": "https://hooks.slack.com/services/T/B/SECRET",
        }
    )
    assert budget_channels(settings) == (
        Channel("webhook", "http://127.0.0.1:9/a"),
        Channel("webhook", "https://hooks.example/b"),
        Channel("slack", "https://hooks.slack.com/services/T/B/SECRET"),
    )
    assert "SECRET" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"KEEL_ALERTS_BUDGET_SLACK": "hooks.slack.com/services/T/B/SECRET"})
    assert str(caught.value) == (
        "setting alerts_budget_slack from KEEL_ALERTS_BUDGET_SLACK: expected http:// or "
        "https:// URLs separated by commas"
    )


async def test_notices_of_a_real_ledger_settle_reach_the_webhook(
    db: Database, receiver: Receiver
) -> None:
    """What the gateway's hook does: the ledger's settlement notices, handed over as they are."""
    ledger = BudgetLedger(MemoryState())
    spec = BudgetSpec("customer", "acme", 10.0, "total")
    sender = Sender(attempts=1)
    service = BudgetNotices(db, sender, [Channel("webhook", receiver.url("/budget"))])
    service.start()
    notices.install(service)
    try:
        for _ in range(3):  # 3 + 3 + 3 USD of 10: the third settle crosses 80%
            reservation = await ledger.reserve([spec], 3.0)
            deliver_budget_notices((await ledger.settle(reservation, 3.0)).notices)
        await service.stop()
    finally:
        notices.install(None)
        await sender.close()
    [got] = receiver.at("/budget")
    assert (got.body["scope"], got.body["id"], got.body["percent"]) == ("customer", "acme", 80)
    assert got.body["spent_usd"] == 9.0
    assert [e["kind"] for e in await store.list_events(db)] == ["budget_threshold"]


def test_a_budget_url_without_a_host_is_a_config_error() -> None:
    settings = load_settings(env={"KEEL_ALERTS_BUDGET_WEBHOOKS": "https://"})
    with pytest.raises(ConfigError) as caught:
        budget_channels(settings)
    assert str(caught.value) == (
        "settings alerts_budget_webhooks and alerts_budget_slack: channels[0].url must be an "
        "http:// or https:// URL with a host"
    )
