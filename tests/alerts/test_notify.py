"""Delivery to a real webhook receiver on 127.0.0.1: retries, failures, timeouts, redirects,
and the generic and Slack payloads."""

from __future__ import annotations

import logging

import pytest

from keel.alerts.notify import Delivery, Notification, Sender
from keel.alerts.rules import Channel
from tests.alerts.receiver import Receiver

NOTE = Notification(
    "[Keel] errors FIRING",
    "error_rate > 0.5 over 10 s (customer=<!channel>): value 1",
    {"rule": "errors", "state": "firing", "value": 1.0},
)


@pytest.fixture
async def sender() -> Sender:
    return Sender(timeout_s=0.5, attempts=3, backoff_s=0.01)


async def test_generic_webhook_gets_the_json_body(sender: Sender, receiver: Receiver) -> None:
    delivery = await sender.send(Channel("webhook", receiver.url("/hook?token=s3cret")), NOTE)
    await sender.close()
    assert delivery == Delivery(f"{receiver.base_url}/…", "webhook", "sent", 1)
    [got] = receiver.at("/hook")
    assert got.body == {"rule": "errors", "state": "firing", "value": 1.0}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "keel-alerts"


async def test_slack_payload_shape(sender: Sender, receiver: Receiver) -> None:
    await sender.send(Channel("slack", receiver.url("/services/T0/B0/secret")), NOTE)
    await sender.close()
    [got] = receiver.at("/services/T0/B0/secret")
    assert got.body == {
        "text": "[Keel] errors FIRING: error_rate &gt; 0.5 over 10 s (customer=&lt;!channel&gt;): "
        "value 1",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "[Keel] errors FIRING"}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "error_rate &gt; 0.5 over 10 s (customer=&lt;!channel&gt;): value 1",
                },
            },
        ],
    }


async def test_retries_on_500_and_429_then_succeeds(sender: Sender, receiver: Receiver) -> None:
    receiver.script("/flaky", 500, 429)
    delivery = await sender.send(Channel("webhook", receiver.url("/flaky")), NOTE)
    await sender.close()
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 3, None)
    assert len(receiver.at("/flaky")) == 3


async def test_permanent_failure_is_returned_and_logged_redacted(
    sender: Sender, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script("/down/secret-token", 503, 503, 503, 503)
    with caplog.at_level(logging.WARNING, logger="keel.alerts"):
        delivery = await sender.send(Channel("slack", receiver.url("/down/secret-token")), NOTE)
    await sender.close()
    assert delivery == Delivery(f"{receiver.base_url}/…", "slack", "failed", 3, "HTTP 503")
    assert len(receiver.at("/down/secret-token")) == 3
    assert "failed after 3 attempt(s): HTTP 503" in caplog.text
    assert "secret-token" not in caplog.text


async def test_a_4xx_is_not_retried(sender: Sender, receiver: Receiver) -> None:
    receiver.script("/gone", 404)
    delivery = await sender.send(Channel("webhook", receiver.url("/gone")), NOTE)
    await sender.close()
    assert (delivery.status, delivery.attempts, delivery.error) == ("failed", 1, "HTTP 404")


async def test_timeout_is_retried_then_recorded(receiver: Receiver) -> None:
    sender = Sender(timeout_s=0.2, attempts=2, backoff_s=0.01)
    receiver.hang_s = 1.0
    receiver.script("/slow", "hang", "hang")
    delivery = await sender.send(Channel("webhook", receiver.url("/slow")), NOTE)
    await sender.close()
    assert (delivery.status, delivery.attempts, delivery.error) == ("failed", 2, "timed out")


async def test_redirect_is_not_followed(sender: Sender, receiver: Receiver) -> None:
    receiver.script("/moved", "redirect")
    delivery = await sender.send(Channel("webhook", receiver.url("/moved")), NOTE)
    await sender.close()
    assert delivery.status == "failed"
    assert (delivery.attempts, delivery.error) == (1, "HTTP 302: redirects are not followed")
    assert [r.path for r in receiver.received] == ["/moved"]


async def test_connection_refused(sender: Sender, receiver: Receiver) -> None:
    url = receiver.url("/x")
    await receiver.close()
    delivery = await sender.send(Channel("webhook", url), NOTE)
    await sender.close()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.error == "connection failed (ConnectError)"


async def test_send_all_keeps_the_channel_order(sender: Sender, receiver: Receiver) -> None:
    receiver.script("/b", 400)
    channels = [Channel("webhook", receiver.url("/a")), Channel("slack", receiver.url("/b"))]
    deliveries = await sender.send_all(channels, NOTE)
    await sender.close()
    assert [(d.type, d.status) for d in deliveries] == [("webhook", "sent"), ("slack", "failed")]
