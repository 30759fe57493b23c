"""Budget threshold notices: a budget reached 80% or 100% of its limit in its period.

The budget ledger (`keel.limits.budgets`) emits each `Notice` once per budget and period, on the
replica whose settle crossed the threshold (Redis decides, so replicas do not repeat it). The
gateway hands notices to `deliver_budget_notices`, which only queues them: the request path
never waits on a webhook or the database. A background task sends each to the channels of
the `alerts_budget_webhooks` and `alerts_budget_slack` settings and appends an `alert_events`
row (kind "budget_threshold", no rule) with the deliveries; without channels the row is
still written, so the history shows every threshold crossed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from keel.alerts import store
from keel.alerts.notify import Notification, Sender
from keel.alerts.rules import Channel
from keel.limits.budgets import Notice
from keel.storage.database import Database

__all__ = ["BudgetNotices", "budget_notification", "deliver_budget_notices", "install"]

log = logging.getLogger("keel.alerts")

_QUEUE = 1000
_PER = {"day": "per day", "month": "per month", "total": "in total"}
_installed: BudgetNotices | None = None


def budget_notification(notice: Notice, at: float, public_url: str | None = None) -> Notification:
    """What a budget notice says, to people and to a generic webhook."""
    who = f"{notice.scope} {notice.id!r}"
    text = (
        f"{who} has spent {notice.spent_usd:.6g} USD: {notice.percent}% of its budget of "
        f"{notice.limit_usd:.6g} USD {_PER.get(notice.period, notice.period)} "
        f"(period {notice.period_tag})"
    )
    body: dict[str, Any] = {
        "kind": "budget_threshold",
        "state": "budget_threshold",
        "scope": notice.scope,
        "id": notice.id,
        "period": notice.period,
        "period_tag": notice.period_tag,
        "percent": notice.percent,
        "spent_usd": notice.spent_usd,
        "limit_usd": notice.limit_usd,
        "at": at,
        "message": text,
    }
    if public_url:
        body["keel_url"] = public_url.rstrip("/")
        text += f"\n{body['keel_url']}"
    return Notification(f"[Keel] budget {notice.percent}% used: {who}", text, body)


class BudgetNotices:
    """Queues budget notices and delivers them in the background (bounded: a flood is dropped
    past `max_queued`, counted in `dropped`)."""

    def __init__(
        self,
        db: Database,
        sender: Sender,
        channels: Iterable[Channel],
        *,
        public_url: str | None = None,
        max_queued: int = _QUEUE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.sender = sender
        self.channels = tuple(channels)
        self.public_url = public_url
        self.clock = clock
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[Notice, float]] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None

    def submit(self, notices: Iterable[Notice]) -> None:
        """Queue notices for delivery; never blocks, never raises."""
        for notice in notices:
            try:
                self._queue.put_nowait((notice, self.clock()))
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("budget notice for %s %r dropped: queue full", notice.scope, notice.id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, grace_s: float = 10.0) -> None:
        """Deliver what is queued within `grace_s`, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            notice, at = await self._queue.get()
            try:
                await self.deliver(notice, at)
            except Exception as exc:  # never let one notice stop the ones after it
                log.warning("budget notice not delivered: %s", type(exc).__name__)
            finally:
                self._queue.task_done()

    async def deliver(self, notice: Notice, at: float | None = None) -> dict[str, Any] | None:
        """Send one notice to the channels and record it; the event, or None if the database
        could not take it (the deliveries happened all the same)."""
        at = self.clock() if at is None else at
        note = budget_notification(notice, at, self.public_url)
        deliveries = await self.sender.send_all(self.channels, note)
        try:
            return await store.add_event(
                self.db,
                rule_id=None,
                rule_name=f"budget {notice.scope} {notice.id}"[:128],
                kind="budget_threshold",
                at=at,
                value=notice.spent_usd,
                threshold=notice.limit_usd * notice.percent / 100,
                message=note.text.split("\n", 1)[0],
                deliveries=[d.to_dict() for d in deliveries],
            )
        except Exception as exc:
            log.warning("budget notice sent but not recorded: %s", type(exc).__name__)
            return None


def install(notices: BudgetNotices | None) -> None:
    """Make `notices` the process's receiver of `deliver_budget_notices` (None: no receiver)."""
    global _installed
    _installed = notices


def deliver_budget_notices(notices: Iterable[Notice]) -> None:
    """Hand budget notices to this process's alerts (queued; never blocks, never raises).

    The gateway calls it with `Settlement.notices` and `BudgetExceeded.notices`. Without a
    running alerts service (a unit test of the limits, say) the notices are only logged."""
    receiver = _installed
    if receiver is not None:
        receiver.submit(notices)
        return
    for notice in notices:
        log.info(
            "budget notice (no alerts running): %s %r at %d%%",
            notice.scope,
            notice.id,
            notice.percent,
        )
