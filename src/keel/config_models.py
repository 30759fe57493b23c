"""The `models:` and `deprecations:` sections of the config file: routing and model lifecycle.

`keel.config` re-exports everything here; import from there. ConfigError lives here so both
modules raise the same class without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

__all__ = [
    "STRATEGIES",
    "ConfigError",
    "DeprecationConfig",
    "ModelConfig",
    "ModelTarget",
    "parse_deprecations",
    "parse_models",
]


class ConfigError(ValueError):
    """A setting or config file that Keel cannot use; the message says which and why."""


STRATEGIES = ("priority", "weighted", "latency", "cost")


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """One provider model serving a public model; `weight` for `weighted`, `timeout_s` per call."""

    provider: str
    model: str
    weight: float = 1.0
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A public model name, the provider models that serve it, how to pick, and what next."""

    name: str
    targets: tuple[ModelTarget, ...]
    strategy: str = "priority"  # one of STRATEGIES
    fallbacks: tuple[str, ...] = ()  # other public model names, tried in order
    # context trimming: drop the oldest turns so the prompt fits this many tokens (None: off)
    max_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class DeprecationConfig:
    """A retiring model: before `sunset` it is served with a header; from `sunset` on, `policy`
    says whether it is routed to `replacement` or refused."""

    model: str
    replacement: str
    sunset: date
    policy: str = "route"  # route | refuse


def _number(value: Any, what: str, *, zero_ok: bool) -> float:
    """A float that is not negative (and not zero unless `zero_ok`); ConfigError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if number < 0 or (number == 0 and not zero_ok):
        raise ConfigError(f"{what} must be {'at least' if zero_ok else 'above'} 0, got {value!r}")
    return number


def _parse_target(model: str, t: Any) -> ModelTarget:
    if not isinstance(t, Mapping) or "provider" not in t or "model" not in t:
        raise ConfigError(f"model {model!r}: a target needs `provider` and `model`")
    unknown = sorted(set(t) - {"provider", "model", "weight", "timeout_s"})
    if unknown:
        raise ConfigError(f"model {model!r}: unknown target key(s) {', '.join(unknown)}")
    timeout = t.get("timeout_s")
    return ModelTarget(
        provider=str(t["provider"]),
        model=str(t["model"]),
        weight=_number(t.get("weight", 1.0), f"model {model!r}: weight", zero_ok=True),
        timeout_s=None
        if timeout is None
        else _number(timeout, f"model {model!r}: timeout_s", zero_ok=False),
    )


def _parse_model(item: Any) -> ModelConfig:
    if not isinstance(item, Mapping) or "name" not in item or not item.get("targets"):
        raise ConfigError(f"each model needs a `name` and a list of `targets`: {item!r}")
    name = str(item["name"])
    if not isinstance(item["targets"], list):
        raise ConfigError(f"model {name!r}: `targets` must be a list")
    strategy = str(item.get("strategy", "priority"))
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"model {name!r}: unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    fallbacks = item.get("fallbacks") or []
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        raise ConfigError(f"model {name!r}: `fallbacks` must be a list of model names")
    budget = item.get("max_input_tokens")
    if budget is not None and (
        not isinstance(budget, int) or isinstance(budget, bool) or budget < 1
    ):
        raise ConfigError(f"model {name!r}: `max_input_tokens` must be a whole number above 0")
    return ModelConfig(
        name=name,
        targets=tuple(_parse_target(name, t) for t in item["targets"]),
        strategy=strategy,
        fallbacks=tuple(fallbacks),
        max_input_tokens=budget,
    )


def _check_fallbacks(models: tuple[ModelConfig, ...]) -> None:
    """Every fallback names a configured model, and no chain of fallbacks comes back on itself."""
    by_name = {m.name: m for m in models}
    for m in models:
        for f in m.fallbacks:
            if f not in by_name:
                raise ConfigError(
                    f"model {m.name!r}: fallback {f!r} is not a model in `models` "
                    f"(known: {', '.join(sorted(by_name))})"
                )

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"fallbacks form a cycle: {cycle}")
        for f in by_name[name].fallbacks:
            visit(f, [*path, name])

    for m in models:
        visit(m.name, [])


def parse_models(raw: Any) -> tuple[ModelConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("`models` must be a list of {name, targets}")
    out = tuple(_parse_model(item) for item in raw)
    names = [m.name for m in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"model name(s) given more than once in `models`: {', '.join(repeated)}")
    _check_fallbacks(out)
    return out


def _parse_date(value: Any, what: str) -> date:
    if isinstance(value, date):  # YAML reads an unquoted 2026-06-30 as a date already
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{what} must be a date like 2026-06-30, got {value!r}") from None


def _parse_deprecation(item: Any) -> DeprecationConfig:
    needed = {"model", "replacement", "sunset"}
    if not isinstance(item, Mapping) or not needed <= set(item):
        raise ConfigError(f"each deprecation needs `model`, `replacement` and `sunset`: {item!r}")
    model = str(item["model"])
    policy = str(item.get("policy", "route"))
    if policy not in ("route", "refuse"):
        raise ConfigError(f"deprecation of {model!r}: policy must be `route` or `refuse`")
    return DeprecationConfig(
        model=model,
        replacement=str(item["replacement"]),
        sunset=_parse_date(item["sunset"], f"deprecation of {model!r}: sunset"),
        policy=policy,
    )


def parse_deprecations(raw: Any) -> tuple[DeprecationConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("`deprecations` must be a list of {model, replacement, sunset, policy}")
    out = tuple(_parse_deprecation(item) for item in raw)
    by_model: dict[str, str] = {}
    for d in out:
        if d.model in by_model:
            raise ConfigError(f"model {d.model!r} is deprecated twice in `deprecations`")
        by_model[d.model] = d.replacement
    for start in by_model:
        seen, current = [start], by_model[start]
        while current in by_model:
            if current in seen:
                cycle = " -> ".join([*seen[seen.index(current) :], current])
                raise ConfigError(f"deprecation replacements form a cycle: {cycle}")
            seen.append(current)
            current = by_model[current]
    return out
