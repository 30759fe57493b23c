"""Alert rules and history in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from keel.alerts import store
from keel.alerts.rules import Channel, RuleError
from keel.alerts.states import Step
from keel.storage.database import Database

SLACK = "https://hooks.slack.com/services/T000/B000/SECRET"


async def _create(db: Database, name: str = "errors", **changes: object) -> store.Rule:
    fields: dict[str, object] = {
        "name": name,
        "metric": "error_rate",
        "window_s": 60,
        "comparator": ">",
        "threshold": 0.5,
        "for_s": 30,
        "filters": {"model": "mock/echo"},
        "channels": [{"type": "slack", "url": SLACK}],
        "now": 1000.0,
    }
    return await store.create_rule(db, **{**fields, **changes})  # type: ignore[arg-type]


async def test_create_get_list_update_delete(db: Database) -> None:
    rule = await _create(db)
    assert rule.channels == (Channel("slack", SLACK),)
    assert await store.get_rule(db, rule.id) == rule
    assert await store.get_rule(db, "errors") == rule
    assert await store.get_rule(db, "nope") is None
    assert await store.list_rules(db) == [
        {
            "id": rule.id,
            "name": "errors",
            "metric": "error_rate",
            "filters": {"model": "mock/echo"},
            "window_s": 60,
            "comparator": ">",
            "threshold": 0.5,
            "for_s": 30,
            "channels": [{"type": "slack", "url": "https://hooks.slack.com/…"}],
            "enabled": True,
            "state": "ok",
            "state_since": None,
            "last_value": None,
            "last_evaluated_at": None,
            "created_at": 1000.0,
            "updated_at": 1000.0,
        }
    ]
    updated = await store.update_rule(
        db, "errors", {"threshold": 0.25, "name": "errors-2"}, now=2000.0
    )
    assert updated is not None
    assert (updated.name, updated.threshold, updated.updated_at) == ("errors-2", 0.25, 2000.0)
    assert updated.channels == rule.channels and updated.created_at == 1000.0
    assert await store.get_rule(db, rule.id) == updated
    assert await store.update_rule(db, "errors", {"threshold": 1}) is None
    deleted = await store.delete_rule(db, "errors-2")
    assert deleted == updated
    assert await store.delete_rule(db, rule.id) is None
    assert await store.list_rules(db) == []


async def test_names_are_unique_and_fields_validated(db: Database) -> None:
    await _create(db)
    with pytest.raises(store.RuleExists, match="an alert rule named 'errors' exists"):
        await _create(db)
    other = await _create(db, "other")
    with pytest.raises(store.RuleExists):
        await store.update_rule(db, other.id, {"name": "errors"})
    with pytest.raises(RuleError, match="unknown metric"):
        await _create(db, "x", metric="nope")
    with pytest.raises(RuleError, match="cannot change state"):
        await store.update_rule(db, other.id, {"state": "firing"})
    with pytest.raises(RuleError, match=r"channels\[0\].url must be an http"):
        await store.update_rule(db, other.id, {"channels": [{"type": "slack", "url": "ftp://x"}]})


async def test_disabling_resets_the_state(db: Database) -> None:
    rule = await _create(db)
    assert await store.transition(db, rule, Step("firing", 1500.0), 0.9, 1500.0)
    disabled = await store.update_rule(db, rule.id, {"enabled": False})
    assert disabled is not None
    assert (disabled.state, disabled.state_since, disabled.last_value) == ("ok", None, 0.9)
    assert await store.load_rules(db.engine, enabled_only=True) == []


async def test_transition_is_a_compare_and_set(db: Database) -> None:
    rule = await _create(db)
    assert await store.transition(db, rule, Step("pending", 1100.0), 0.7, 1100.0)
    # the same transition from the same stale read loses
    assert not await store.transition(db, rule, Step("pending", 1101.0), 0.7, 1101.0)
    pending = await store.get_rule(db, rule.id)
    assert pending is not None
    assert (pending.state, pending.state_since, pending.last_value) == ("pending", 1100.0, 0.7)
    assert await store.transition(db, pending, Step("firing", 1130.0), 0.8, 1130.0)
    assert not await store.transition(db, pending, Step("ok", 1130.0), None, 1130.0)
    await store.touch(db, rule.id, 0.95, 1140.0)
    firing = await store.get_rule(db, rule.id)
    assert firing is not None
    assert (firing.state, firing.state_since) == ("firing", 1130.0)
    assert (firing.last_value, firing.last_evaluated_at) == (0.95, 1140.0)


async def test_events_latest_first_by_rule(db: Database) -> None:
    delivery = {
        "channel": "https://h/…",
        "type": "webhook",
        "status": "sent",
        "attempts": 1,
        "error": None,
    }
    first = await store.add_event(
        db,
        rule_id="r1",
        rule_name="errors",
        kind="firing",
        at=10.0,
        value=0.9,
        threshold=0.5,
        message="m1",
        deliveries=[delivery],
    )
    await store.add_event(
        db,
        rule_id=None,
        rule_name="budget customer acme",
        kind="budget_threshold",
        at=20.0,
        value=16.0,
        threshold=16.0,
        message="m2",
        deliveries=[],
    )
    third = await store.add_event(
        db,
        rule_id="r1",
        rule_name="errors",
        kind="resolved",
        at=30.0,
        value=None,
        threshold=0.5,
        message="m3",
        deliveries=[],
    )
    assert [e["message"] for e in await store.list_events(db)] == ["m3", "m2", "m1"]
    assert await store.list_events(db, rule_id="r1") == [third, first]
    assert [e["message"] for e in await store.list_events(db, limit=1)] == ["m3"]
