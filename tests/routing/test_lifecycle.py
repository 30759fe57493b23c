"""Deprecations: served with a header before sunset; routed or refused after, per policy."""

from __future__ import annotations

from datetime import date

import pytest

from keel.config import DeprecationConfig
from keel.gateway.errors import GatewayError
from keel.gateway.lifecycle import Deprecation, Lifecycle
from keel.metrics import Metrics

SUNSET = date(2026, 6, 30)
TABLE = [
    DeprecationConfig("gpt-4-0613", "gpt-4o", SUNSET, "route"),
    DeprecationConfig("old-embed", "text-embedding-3-small", SUNSET, "refuse"),
    DeprecationConfig("gpt-3", "gpt-4-0613", date(2025, 1, 1), "route"),
]


def lifecycle(today: date, metrics: Metrics | None = None) -> Lifecycle:
    count = metrics.count_deprecated if metrics else None
    return Lifecycle(TABLE, count=count, today=lambda: today)


def test_before_sunset_serves_as_asked_with_a_header() -> None:
    found = lifecycle(date(2026, 6, 29)).check("gpt-4-0613")
    assert found == Deprecation("gpt-4-0613", "gpt-4-0613", "gpt-4o", SUNSET, retired=False)
    assert found.header == "model=gpt-4-0613; replacement=gpt-4o; sunset=2026-06-30"


@pytest.mark.parametrize("today", [SUNSET, date(2027, 1, 1)])
def test_from_sunset_route_serves_the_replacement(today: date) -> None:
    found = lifecycle(today).check("gpt-4-0613")
    assert found == Deprecation("gpt-4-0613", "gpt-4o", "gpt-4o", SUNSET, retired=True)


def test_from_sunset_refuse_answers_410_naming_the_replacement() -> None:
    with pytest.raises(GatewayError) as caught:
        lifecycle(SUNSET).check("old-embed")
    e = caught.value
    assert (e.status, e.code, e.param) == (410, "model_retired", "model")
    assert e.message == (
        "The model 'old-embed' was retired on 2026-06-30; use 'text-embedding-3-small' instead."
    )
    assert lifecycle(date(2026, 1, 1)).check("old-embed") is not None  # before: served


def test_a_provider_prefixed_name_is_routed_within_that_provider() -> None:
    found = lifecycle(SUNSET).check("up/gpt-4-0613")
    assert found is not None and (found.serve, found.replacement) == ("up/gpt-4o", "up/gpt-4o")


def test_routes_follow_through_retired_replacements() -> None:
    assert lifecycle(SUNSET).check("gpt-3") == Deprecation(
        "gpt-3", "gpt-4o", "gpt-4-0613", date(2025, 1, 1), retired=True
    )
    before = lifecycle(date(2025, 6, 1)).check("gpt-3")  # its replacement is not retired yet
    assert before is not None and before.serve == "gpt-4-0613"


def test_unlisted_models_pass_and_uses_are_counted() -> None:
    metrics = Metrics()
    lc = lifecycle(SUNSET, metrics)
    assert lc.check("gpt-4o") is None
    lc.check("gpt-4-0613")
    lc.check("gpt-4-0613")
    with pytest.raises(GatewayError):
        lc.check("old-embed")
    text = metrics.render().decode()
    assert 'keel_deprecated_model_requests_total{model="gpt-4-0613"} 2.0' in text
    assert 'keel_deprecated_model_requests_total{model="old-embed"} 1.0' in text
    assert 'gpt-4o"}' not in text
    assert bool(lc) and not Lifecycle([])
