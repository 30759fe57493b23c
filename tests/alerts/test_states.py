"""The ok -> pending -> firing -> ok state machine, step by step."""

from __future__ import annotations

from keel.alerts.states import Step, step


def test_pending_then_firing_after_for_s() -> None:
    assert step("ok", None, True, 100.0, 30) == Step("pending", 100.0)
    assert step("pending", 100.0, True, 129.0, 30) == Step("pending", 100.0)
    assert step("pending", 100.0, True, 130.0, 30) == Step("firing", 130.0, "firing")


def test_for_zero_fires_at_once() -> None:
    assert step("ok", None, True, 100.0, 0) == Step("firing", 100.0, "firing")


def test_firing_stays_silent_while_the_condition_holds() -> None:
    assert step("firing", 130.0, True, 500.0, 30) == Step("firing", 130.0)


def test_resolve_notifies_and_pending_cancels_silently() -> None:
    assert step("firing", 130.0, False, 140.0, 30) == Step("ok", 140.0, "resolved")
    assert step("pending", 100.0, False, 110.0, 30) == Step("ok", 110.0)
    assert step("ok", 90.0, False, 110.0, 30) == Step("ok", 90.0)


def test_changed() -> None:
    assert not Step("ok", 90.0).changed("ok", 90.0)
    assert Step("pending", 100.0).changed("ok", 90.0)
