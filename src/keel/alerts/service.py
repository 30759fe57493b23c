"""The alerts of one running Keel: the rule evaluator and the budget notices, with one sender.

`Runtime` makes one at start (`AlertService.from_settings`) and stops it before the database
closes. The API uses `test_rule` to send a rule's test notification.
"""

from __future__ import annotations

from keel.alerts import notices
from keel.alerts.evaluator import Evaluator, MetricSource, rule_notification
from keel.alerts.notify import Delivery, Sender
from keel.alerts.rules import Channel, Rule, RuleError, check_channels
from keel.analytics.query import window_value
from keel.config import ConfigError, Settings
from keel.storage.database import Database

__all__ = ["AlertService", "budget_channels"]


def budget_channels(settings: Settings) -> tuple[Channel, ...]:
    """The channels of the budget notices, from the settings; ConfigError on a bad URL."""
    raw = [{"type": "webhook", "url": u} for u in settings.alerts_budget_webhooks] + [
        {"type": "slack", "url": u} for u in settings.alerts_budget_slack
    ]
    try:
        return check_channels(raw)
    except RuleError as exc:
        raise ConfigError(
            f"settings alerts_budget_webhooks and alerts_budget_slack: {exc}"
        ) from None


class AlertService:
    def __init__(
        self,
        db: Database,
        sender: Sender,
        *,
        interval_s: float,
        budget_channels: tuple[Channel, ...] = (),
        public_url: str | None = None,
        source: MetricSource = window_value,
        enabled: bool = True,
    ) -> None:
        self.sender = sender
        self.public_url = public_url
        self.enabled = enabled
        self.evaluator = Evaluator(db, source, sender, interval_s=interval_s, public_url=public_url)
        self.budget_notices = notices.BudgetNotices(
            db, sender, budget_channels, public_url=public_url
        )

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> AlertService:
        s = settings
        return cls(
            db,
            Sender(timeout_s=s.alerts_timeout_s, attempts=s.alerts_attempts),
            interval_s=s.alerts_interval_s,
            budget_channels=budget_channels(s),
            public_url=s.public_url,
            enabled=s.alerts_interval_s > 0,
        )

    async def start(self) -> None:
        if self.enabled:
            self.evaluator.start()
        self.budget_notices.start()
        notices.install(self.budget_notices)

    async def stop(self) -> None:
        notices.install(None)
        await self.evaluator.stop()
        await self.budget_notices.stop()
        await self.sender.close()

    async def test_rule(self, rule: Rule, at: float) -> list[Delivery]:
        """Send a "test" notification to every channel of `rule` now."""
        note = rule_notification(rule, "test", rule.last_value, at, self.public_url)
        return await self.sender.send_all(rule.channels, note)
