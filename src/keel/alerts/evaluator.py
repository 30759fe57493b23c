"""The background evaluator: every `interval_s`, each enabled rule's metric over its window.

For each rule: value = metric over [now - window_s, now] (None when there is no data, which
never holds the condition), then the state machine (`states.step`). A state change is written
with a compare-and-set (`store.transition`); only the writer that wins it notifies, so with
several replicas on one PostgreSQL a transition is notified once. Notifications run as tasks,
one after the other per rule (a firing notice is never overtaken by its resolve), and each
becomes an `alert_events` row with its deliveries. The loop survives anything: a rule whose
evaluation fails is logged and retried at the next tick, a database outage included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from keel.alerts import store
from keel.alerts.notify import Notification, Sender
from keel.alerts.rules import Rule, holds
from keel.alerts.states import Step, step
from keel.analytics.query import Filters
from keel.storage.database import Database

__all__ = ["Evaluator", "MetricSource", "rule_notification"]

log = logging.getLogger("keel.alerts")

MetricSource = Callable[[Database, str, float, float, Filters], Awaitable[float | None]]


def _value(value: float | None) -> str:
    return "no data" if value is None else f"{value:.6g}"


def rule_notification(
    rule: Rule, state: str, value: float | None, at: float, public_url: str | None = None
) -> Notification:
    """What a rule's "firing", "resolved" or "test" notification says."""
    verb = {"firing": "FIRING", "resolved": "resolved", "test": "test"}.get(state, state)
    text = f"{rule.condition()}: value {_value(value)}"
    if state == "test":
        text = f"Test notification for {rule.condition()}"
    body: dict[str, Any] = {
        "rule": rule.name,
        "rule_id": rule.id,
        "state": state,
        "metric": rule.metric,
        "value": value,
        "threshold": rule.threshold,
        "comparator": rule.comparator,
        "window_s": rule.window_s,
        "for_s": rule.for_s,
        "filters": dict(rule.filters),
        "at": at,
        "message": text,
    }
    if public_url:
        body["keel_url"] = public_url.rstrip("/")
        text += f"\n{body['keel_url']}"
    return Notification(f"[Keel] {rule.name} {verb}", text, body)


class Evaluator:
    """Runs the rules of `db` every `interval_s`; `source` computes a metric over a window."""

    def __init__(
        self,
        db: Database,
        source: MetricSource,
        sender: Sender,
        *,
        interval_s: float = 15.0,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.source = source
        self.sender = sender
        self.interval_s = interval_s
        self.public_url = public_url
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._chains: dict[str, asyncio.Task[None]] = {}  # rule id -> its last notification

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop evaluating; let notifications under way finish within `grace_s`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.drain(grace_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the notifications under way (cancelled past `timeout_s`)."""
        tasks = list(self._chains.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval_s)

    async def run_once(self) -> None:
        """Evaluate every enabled rule once."""
        try:
            rules = await store.load_rules(self.db.engine, enabled_only=True)
        except Exception as exc:  # the database may be down: try again next tick
            log.warning("alert rules not evaluated: cannot load them (%s)", type(exc).__name__)
            return
        for rule in rules:
            try:
                await self.evaluate(rule)
            except Exception as exc:  # one rule's failure must not stop the others, or the loop
                log.warning(
                    "alert rule %r not evaluated: %s",
                    rule.name,
                    type(exc).__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )

    async def evaluate(self, rule: Rule) -> Step:
        """One evaluation of `rule`: value, next state, compare-and-set, notification."""
        now = self.clock()
        value = await self.source(
            self.db, rule.metric, now - rule.window_s, now, rule.query_filters()
        )
        nxt = step(
            rule.state,
            rule.state_since,
            holds(value, rule.comparator, rule.threshold),
            now,
            rule.for_s,
        )
        if not nxt.changed(rule.state, rule.state_since):
            await store.touch(self.db, rule.id, value, now)
            return nxt
        if not await store.transition(self.db, rule, nxt, value, now):
            log.debug("alert rule %r moved by another writer; skipped", rule.name)
            return Step(rule.state, rule.state_since)
        if nxt.notify is not None:
            self._notify(rule, nxt.notify, value, now)
        return nxt

    def _notify(self, rule: Rule, kind: str, value: float | None, at: float) -> None:
        previous = self._chains.get(rule.id)
        task = asyncio.create_task(self._deliver(previous, rule, kind, value, at))
        self._chains[rule.id] = task
        task.add_done_callback(lambda t: self._forget(rule.id, t))

    def _forget(self, rule_id: str, task: asyncio.Task[None]) -> None:
        if self._chains.get(rule_id) is task:
            del self._chains[rule_id]

    async def _deliver(
        self,
        previous: asyncio.Task[None] | None,
        rule: Rule,
        kind: str,
        value: float | None,
        at: float,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        note = rule_notification(rule, kind, value, at, self.public_url)
        deliveries = await self.sender.send_all(rule.channels, note)
        try:
            await store.add_event(
                self.db,
                rule_id=rule.id,
                rule_name=rule.name,
                kind=kind,
                at=at,
                value=value,
                threshold=rule.threshold,
                message=note.body["message"],
                deliveries=[d.to_dict() for d in deliveries],
            )
        except Exception as exc:
            log.warning(
                "alert %r %s was notified but not recorded: %s", rule.name, kind, type(exc).__name__
            )
