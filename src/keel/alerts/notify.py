"""Delivering notifications to webhooks: generic JSON, or Slack-compatible `{text, blocks}`.

One POST per channel through one `httpx.AsyncClient` with timeouts, retried with exponential
backoff on connection errors, timeouts, 5xx and 429 (its `Retry-After` is honoured, capped).
Redirects are never followed: a 3xx is a failure, so a webhook cannot bounce the notification
(and its secret-bearing body) elsewhere. A failure is returned as a `Delivery` and logged with
the URL redacted; nothing here raises to the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from keel.alerts.rules import Channel

__all__ = ["Delivery", "Notification", "Sender", "slack_payload"]

log = logging.getLogger("keel.alerts")  # deliveries are logged here, URLs redacted

_MAX_RETRY_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class Notification:
    """What to say: `title` and `text` for people (Slack), `body` for a generic webhook."""

    title: str
    text: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one notification to one channel (its URL redacted)."""

    channel: str
    type: str
    status: str  # "sent" | "failed"
    attempts: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "type": self.type,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
        }


def _slack_escape(text: str) -> str:
    # Slack reads `<...>` as links and mentions (`<!channel>`); names and filter values in a
    # notification are not Slack markup, so its three control characters are escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(note: Notification) -> dict[str, Any]:
    """Slack's incoming-webhook shape (Mattermost and others accept it too)."""
    return {
        "text": _slack_escape(f"{note.title}: {note.text}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": note.title[:150]}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _slack_escape(note.text)[:3000]},
            },
        ],
    }


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class Sender:
    """Posts notifications. `attempts` per channel, `backoff_s` doubled after each failure."""

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": "keel-alerts"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send_all(self, channels: Sequence[Channel], note: Notification) -> list[Delivery]:
        """Send to every channel at once; one Delivery per channel, in the channels' order."""
        return list(await asyncio.gather(*(self.send(c, note) for c in channels)))

    async def send(self, channel: Channel, note: Notification) -> Delivery:
        payload = slack_payload(note) if channel.type == "slack" else dict(note.body)
        error = "not sent"
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            wait = self.backoff_s * 2 ** (attempt - 1)
            try:
                response = await self._client.post(channel.url, json=payload)
            except httpx.TimeoutException:
                error = "timed out"
            except httpx.TransportError as exc:
                error = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if status < 300:
                    return Delivery(channel.redacted, channel.type, "sent", attempt)
                error = f"HTTP {status}"
                if 300 <= status < 400:
                    error = f"HTTP {status}: redirects are not followed"
                    break
                if status != 429 and status < 500:
                    break  # the receiver refuses this body: sending it again will not help
                after = _retry_after(response) if status == 429 else None
                if after is not None:
                    wait = min(after, _MAX_RETRY_AFTER_S)
            if attempt < self.attempts:
                await asyncio.sleep(wait)
        log.warning(
            "alert notification to %s channel %s failed after %d attempt(s): %s",
            channel.type,
            channel.redacted,
            attempt,
            error,
        )
        return Delivery(channel.redacted, channel.type, "failed", attempt, error)
