"""The `limits:` config section, API overrides, and the specs of one request."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import ConfigError, load_settings
from keel.keys.auth import Principal
from keel.limits import BudgetSpec, LimitPolicies, Limits, LimitSpec, Policy, parse_limits

CONFIG = {
    "project": {"budget_usd": 500, "budget_period": "month"},
    "customers": {"acme": {"rpm": 60, "tpm": 100000, "budget_usd": 20, "budget_period": "month"}},
    "pipelines": {"support": {"budget_usd": 5, "budget_period": "day"}},
    "models": {"gpt-4o": {"rpm": 100}},
}
KEY = Principal(
    kind="key", key_id="k1", customer="acme", rpm=10, budget_usd=2.5, budget_period="day"
)


def test_parse_whole_section() -> None:
    assert parse_limits(CONFIG) == (
        Policy("project", "default", Limits(budget_usd=500.0, budget_period="month"), "config"),
        Policy("customer", "acme", Limits(60, 100000, 20.0, "month"), "config"),
        Policy("pipeline", "support", Limits(budget_usd=5.0, budget_period="day"), "config"),
        Policy("model", "gpt-4o", Limits(rpm=100), "config"),
    )
    assert parse_limits(None) == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "`limits` must be a mapping"),
        ({"keys": {}}, "limits: unknown section(s) keys"),
        ({"customers": ["acme"]}, "limits.customers must map a name to its limits"),
        ({"customers": {"acme": 5}}, "limits.customers.acme must be a mapping"),
        ({"customers": {"acme": {"rpm": 0}}}, "limits.customers.acme: rpm must be a whole"),
        ({"customers": {"acme": {"rpm": 1.5}}}, "rpm must be a whole number"),
        ({"customers": {"acme": {"rpm": "x"}}}, "rpm must be a whole number"),
        ({"customers": {"acme": {"rpms": 1}}}, "unknown field(s) rpms"),
        ({"project": {"budget_usd": 5}}, "limits.project: budget_usd and budget_period go"),
        ({"project": {"budget_usd": 5, "budget_period": "week"}}, "budget_period must be one"),
        ({"pipelines": {"p": {"budget_usd": -1, "budget_period": "day"}}}, "above 0"),
        ({"models": {"m": {"budget_usd": 1, "budget_period": "day"}}}, "rpm and tpm only"),
    ],
)
def test_parse_errors(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_limits(raw)
    assert message in str(info.value)


def test_settings_read_the_section(tmp_path: Path) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(
        "limits:\n  customers:\n    acme: {rpm: 60, budget_usd: 20, budget_period: month}\n"
    )
    settings = load_settings(overrides={"config": str(path)}, env={})
    assert settings.limits == (
        Policy("customer", "acme", Limits(60, None, 20.0, "month"), "config"),
    )
    path.write_text("limits:\n  customers:\n    acme: {rpm: -1}\n")
    with pytest.raises(ConfigError, match=r"limits\.customers\.acme: rpm"):
        load_settings(overrides={"config": str(path)}, env={})


def test_specs_for_the_whole_hierarchy() -> None:
    policies = LimitPolicies(parse_limits(CONFIG))
    rates, budgets = policies.specs_for(KEY, pipeline="support", model="gpt-4o")
    assert rates == [
        LimitSpec("key", "k1", rpm=10),
        LimitSpec("customer", "acme", rpm=60, tpm=100000),
        LimitSpec("model", "gpt-4o", rpm=100),
    ]
    assert budgets == [  # the chain, in order: project -> key -> customer -> pipeline
        BudgetSpec("project", "default", 500.0, "month"),
        BudgetSpec("key", "k1", 2.5, "day"),
        BudgetSpec("customer", "acme", 20.0, "month"),
        BudgetSpec("pipeline", "support", 5.0, "day"),
    ]


def test_specs_for_leaves_out_scopes_without_limits() -> None:
    policies = LimitPolicies(parse_limits({"customers": CONFIG["customers"]}))
    assert policies.specs_for(Principal(kind="open")) == ([], [])
    assert policies.specs_for(Principal(kind="admin"), model="other") == ([], [])
    plain_key = Principal(kind="key", key_id="k2")
    rates, budgets = policies.specs_for(plain_key, customer="acme", pipeline="unknown")
    assert rates == [LimitSpec("customer", "acme", rpm=60, tpm=100000)]
    assert budgets == [BudgetSpec("customer", "acme", 20.0, "month")]
    # the customer given (the request's) wins over the key's
    assert policies.specs_for(KEY, customer="other") == (
        [LimitSpec("key", "k1", rpm=10)],
        [BudgetSpec("key", "k1", 2.5, "day")],
    )
    assert LimitPolicies().specs_for(KEY)[0] == [LimitSpec("key", "k1", rpm=10)]


def test_api_policies_replace_config_ones_whole() -> None:
    policies = LimitPolicies(parse_limits(CONFIG))
    api = Policy("customer", "acme", Limits(rpm=5), "api", 1.0)
    policies.replace_api([api])
    assert policies.get("customer", "acme") == api
    rates, budgets = policies.specs_for(Principal(kind="open"), customer="acme")
    assert rates == [LimitSpec("customer", "acme", rpm=5)]
    assert budgets == [BudgetSpec("project", "default", 500.0, "month")]  # no customer budget
    lifted = Policy("project", "default", Limits(), "api", 2.0)
    policies.put(lifted)
    assert policies.specs_for(Principal(kind="open")) == ([], [])
    policies.drop("project", "default")
    policies.replace_api([])
    assert policies.get("customer", "acme") == policies.config_policy("customer", "acme")
    assert [(p.scope, p.subject, p.source) for p in policies.all()] == [
        ("project", "default", "config"),
        ("customer", "acme", "config"),
        ("pipeline", "support", "config"),
        ("model", "gpt-4o", "config"),
    ]
