"""The `models:` routing contract and `deprecations:` in the config file, and their errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.config import (
    ConfigError,
    DeprecationConfig,
    ModelConfig,
    ModelTarget,
    Settings,
    load_settings,
)

CONTRACT = """
models:
  - name: smart
    strategy: priority          # priority | weighted | latency | cost
    targets:
      - {provider: a, model: gpt-4o, weight: 3, timeout_s: 20}
      - {provider: b, model: claude-sonnet-4-5}
    fallbacks: [cheap]          # other public model names, tried in order
  - name: cheap
    targets:
      - {provider: b, model: gpt-4o-mini}
deprecations:
  - {model: gpt-4-0613, replacement: gpt-4o, sunset: 2026-06-30, policy: route}   # route | refuse
  - {model: old, replacement: new, sunset: "2026-01-01", policy: refuse}
request_deadline_s: 30
breaker_failure_threshold: 3
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "keel.yaml"
    path.write_text(text)
    return load_settings({"config": str(path)}, env=env or {})


def load_models(tmp_path: Path, models: Any, deprecations: Any = None) -> Settings:
    doc: dict[str, Any] = {"models": models}
    if deprecations is not None:
        doc["deprecations"] = deprecations
    return load(tmp_path, yaml.safe_dump(doc))


def test_the_documented_contract_parses(tmp_path: Path) -> None:
    s = load(tmp_path, CONTRACT, env={"KEEL_RETRY_MAX_ATTEMPTS": "4"})
    assert s.models == (
        ModelConfig(
            "smart",
            (
                ModelTarget("a", "gpt-4o", weight=3.0, timeout_s=20.0),
                ModelTarget("b", "claude-sonnet-4-5"),
            ),
            strategy="priority",
            fallbacks=("cheap",),
        ),
        ModelConfig("cheap", (ModelTarget("b", "gpt-4o-mini"),)),
    )
    assert s.deprecations == (
        DeprecationConfig("gpt-4-0613", "gpt-4o", date(2026, 6, 30), "route"),
        DeprecationConfig("old", "new", date(2026, 1, 1), "refuse"),
    )
    got = (s.request_deadline_s, s.retry_max_attempts, s.breaker_failure_threshold)
    assert got == (30.0, 4, 3)


def test_defaults() -> None:
    s = load_settings(env={})
    assert (
        s.request_deadline_s,
        s.retry_max_attempts,
        s.retry_backoff_base_ms,
        s.retry_backoff_max_ms,
        s.breaker_failure_threshold,
        s.breaker_window_s,
        s.breaker_cooldown_s,
        s.deprecations,
    ) == (120.0, 2, 200, 5000, 5, 30.0, 30.0, ())


def target(provider: str = "a", **kw: Any) -> dict[str, Any]:
    return {"provider": provider, "model": "m", **kw}


def model(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "targets": [target()], **kw}


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            [model("x", strategy="fastest")],
            "model 'x': unknown strategy 'fastest'; use one of priority, weighted, latency, cost",
        ),
        (
            [model("x", fallbacks=["nope"])],
            "model 'x': fallback 'nope' is not a model in `models` (known: x)",
        ),
        (
            [model("x", fallbacks=["y"]), model("y", fallbacks=["z"]), model("z", fallbacks=["x"])],
            "fallbacks form a cycle: x -> y -> z -> x",
        ),
        ([model("x", fallbacks=["x"])], "fallbacks form a cycle: x -> x"),
        ([model("x", fallbacks="y")], "model 'x': `fallbacks` must be a list of model names"),
        ([model("x"), model("x")], "model name(s) given more than once in `models`: x"),
        (
            [{"name": "x", "targets": [target(weight=-1)]}],
            "model 'x': weight must be at least 0, got -1",
        ),
        (
            [{"name": "x", "targets": [target(timeout_s=0)]}],
            "model 'x': timeout_s must be above 0, got 0",
        ),
        (
            [{"name": "x", "targets": [target(timeout="5")]}],
            "model 'x': unknown target key(s) timeout",
        ),
    ],
)
def test_model_errors(tmp_path: Path, models: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_models(tmp_path, models)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("deprecations", "message"),
    [
        (
            [{"model": "a", "replacement": "b", "sunset": "2026-06-30", "policy": "warn"}],
            "deprecation of 'a': policy must be `route` or `refuse`",
        ),
        (
            [{"model": "a", "replacement": "b", "sunset": "soon"}],
            "deprecation of 'a': sunset must be a date like 2026-06-30, got 'soon'",
        ),
        (
            [{"model": "a", "sunset": "2026-06-30"}],
            "each deprecation needs `model`, `replacement` and `sunset`: "
            "{'model': 'a', 'sunset': '2026-06-30'}",
        ),
        (
            [
                {"model": "a", "replacement": "b", "sunset": "2026-06-30"},
                {"model": "b", "replacement": "a", "sunset": "2026-06-30"},
            ],
            "deprecation replacements form a cycle: a -> b -> a",
        ),
        (
            [
                {"model": "a", "replacement": "b", "sunset": "2026-06-30"},
                {"model": "a", "replacement": "c", "sunset": "2026-06-30"},
            ],
            "model 'a' is deprecated twice in `deprecations`",
        ),
    ],
)
def test_deprecation_errors(tmp_path: Path, deprecations: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_models(tmp_path, [model("x")], deprecations)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KEEL_RETRY_MAX_ATTEMPTS": "0"},
            "setting retry_max_attempts from KEEL_RETRY_MAX_ATTEMPTS",
        ),
        (
            {"KEEL_BREAKER_COOLDOWN_S": "-1"},
            "setting breaker_cooldown_s from KEEL_BREAKER_COOLDOWN_S",
        ),
    ],
)
def test_setting_bounds(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert str(caught.value).startswith(message + ": must be at least")
