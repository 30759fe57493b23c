"""Who is limited how: the `limits:` config section, the policies set through the API, and the
specs of one request.

A policy is the limits of one subject: a customer, a pipeline, a public model, or the project
(the whole deployment, subject "default"). Config policies are read once at start; API
policies live in the database (`keel.limits.store`) and are held here in memory, refreshed
like the keys. An API policy replaces the config policy of the same subject as a whole, even
when it sets no limit at all (that lifts the config's limits for the subject).

`LimitPolicies.specs_for` turns one request into what the rate limiter and the budget ledger
take, without I/O: the hot path does one dictionary lookup per scope.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from keel.config_models import ConfigError
from keel.limits.budgets import PERIODS, BudgetSpec, Period
from keel.limits.ratelimit import LimitSpec

if TYPE_CHECKING:
    from keel.keys.auth import Principal

__all__ = [
    "PROJECT",
    "SCOPES",
    "LimitPolicies",
    "Limits",
    "Policy",
    "Scope",
    "check_limits",
    "parse_limits",
]

Scope = Literal["project", "customer", "pipeline", "model"]
SCOPES: tuple[Scope, ...] = ("project", "customer", "pipeline", "model")
PROJECT = "default"  # the project's one subject
_SECTIONS: dict[str, Scope] = {"customers": "customer", "pipelines": "pipeline", "models": "model"}
_FIELDS = ("rpm", "tpm", "budget_usd", "budget_period")


def check_limits(
    rpm: int | None, tpm: int | None, budget_usd: float | None, budget_period: str | None
) -> None:
    """Raise ValueError unless the numbers are positive and a budget comes with its period."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a whole number above 0, got {value!r}")
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise ValueError(f"budget_usd must be an amount above 0, got {budget_usd!r}")
    if budget_period is not None and budget_period not in PERIODS:
        raise ValueError(
            f"budget_period must be one of {', '.join(PERIODS)}, got {budget_period!r}"
        )
    if (budget_usd is None) != (budget_period is None):
        raise ValueError("budget_usd and budget_period go together: give both or neither")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits and a budget; None means no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None

    def __post_init__(self) -> None:
        check_limits(self.rpm, self.tpm, self.budget_usd, self.budget_period)

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.budget_usd is None

    def rate(self, scope: str, subject: str) -> LimitSpec | None:
        if self.rpm is None and self.tpm is None:
            return None
        return LimitSpec(scope, subject, rpm=self.rpm, tpm=self.tpm)

    def budget(self, scope: str, subject: str) -> BudgetSpec | None:
        if self.budget_usd is None or self.budget_period is None:
            return None
        return BudgetSpec(scope, subject, self.budget_usd, self.budget_period)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
        }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Limits:
        """From a mapping with (some of) rpm, tpm, budget_usd, budget_period; ValueError."""
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; use {', '.join(_FIELDS)}")
        rpm, tpm, usd, period = (raw.get(name) for name in _FIELDS)
        try:
            return cls(
                rpm=None if rpm is None else _whole(rpm, "rpm"),
                tpm=None if tpm is None else _whole(tpm, "tpm"),
                budget_usd=None if usd is None else float(usd),
                budget_period=None if period is None else cast(Period, str(period)),
            )
        except (TypeError, OverflowError):
            raise ValueError("rpm and tpm must be whole numbers, budget_usd an amount") from None


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{name} must be a whole number above 0, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class Policy:
    """The limits of one subject, where they come from and (API) when they were last set."""

    scope: Scope
    subject: str
    limits: Limits
    source: Literal["config", "api"]
    updated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "subject": self.subject,
            **self.limits.to_dict(),
            "source": self.source,
            "updated_at": self.updated_at,
        }


def parse_limits(raw: Any) -> tuple[Policy, ...]:
    """The `limits:` section: `project: {...}` and `customers:`/`pipelines:`/`models:` mappings
    of a name to `{rpm, tpm, budget_usd, budget_period}`. Raises ConfigError."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError("`limits` must be a mapping (project, customers, pipelines, models)")
    unknown = sorted(set(raw) - {"project", *_SECTIONS})
    if unknown:
        raise ConfigError(
            f"limits: unknown section(s) {', '.join(map(str, unknown))}; "
            "use project, customers, pipelines, models"
        )
    out: list[Policy] = []
    if raw.get("project") is not None:
        out.append(_policy("project", PROJECT, raw["project"], "limits.project"))
    for section, scope in _SECTIONS.items():
        entries = raw.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            raise ConfigError(f"limits.{section} must map a name to its limits")
        out += [_policy(scope, str(n), v, f"limits.{section}.{n}") for n, v in entries.items()]
    return tuple(out)


def _policy(scope: Scope, subject: str, raw: Any, where: str) -> Policy:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of {', '.join(_FIELDS)}")
    try:
        limits = Limits.from_mapping(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if scope == "model" and limits.budget_usd is not None:
        raise ConfigError(
            f"{where}: a model takes rpm and tpm only (budgets are per project, "
            "key, customer and pipeline)"
        )
    return Policy(scope, subject, limits, "config")


@functools.lru_cache(maxsize=4096)
def _key_specs(
    key_id: str, rpm: int | None, tpm: int | None, usd: float | None, period: Period | None
) -> tuple[LimitSpec | None, BudgetSpec | None]:
    # A key's own limits, made once per key (and limits) rather than on every request.
    rate = None if rpm is None and tpm is None else LimitSpec("key", key_id, rpm=rpm, tpm=tpm)
    budget = None if usd is None or period is None else BudgetSpec("key", key_id, usd, period)
    return rate, budget


class LimitPolicies:
    """The policies in force: the config's, overridden subject by subject by the API's."""

    def __init__(self, config: Iterable[Policy] = ()) -> None:
        self._config: dict[tuple[str, str], Policy] = {(p.scope, p.subject): p for p in config}
        self._api: dict[tuple[str, str], Policy] = {}

    def replace_api(self, policies: Iterable[Policy]) -> None:
        """Install the API policies as read from the database (at start and on refresh)."""
        self._api = {(p.scope, p.subject): p for p in policies}

    def put(self, policy: Policy) -> None:
        """Take an API policy into account at once (just set in this process)."""
        self._api[(policy.scope, policy.subject)] = policy

    def drop(self, scope: str, subject: str) -> None:
        """Forget an API policy at once (just deleted here): the config's applies again."""
        self._api.pop((scope, subject), None)

    def get(self, scope: str, subject: str) -> Policy | None:
        """The policy in force for a subject: the API's, else the config's, else None."""
        key = (scope, subject)
        return self._api.get(key) or self._config.get(key)

    def config_policy(self, scope: str, subject: str) -> Policy | None:
        return self._config.get((scope, subject))

    def all(self) -> list[Policy]:
        """Every policy in force, by scope (as in SCOPES) and subject."""
        merged = {**self._config, **self._api}
        order: dict[str, int] = {s: i for i, s in enumerate(SCOPES)}
        return [merged[k] for k in sorted(merged, key=lambda k: (order.get(k[0], 99), k[1]))]

    def specs_for(
        self,
        principal: Principal,
        customer: str | None = None,
        pipeline: str | None = None,
        model: str | None = None,
    ) -> tuple[list[LimitSpec], list[BudgetSpec]]:
        """The rate limits and the budget chain of one request; scopes without limits left out.

        Rate specs come in the order project, key, customer, pipeline, model; budgets in the
        chain order project -> key -> customer -> pipeline. `customer` defaults to the key's.
        Scope names and ids are those of the specs: "project" ("default"), "key" (the key id),
        "customer", "pipeline", "model" (the public model name).
        """
        if customer is None:
            customer = principal.customer
        rates: list[LimitSpec] = []
        budgets: list[BudgetSpec] = []
        self._add("project", PROJECT, rates, budgets)
        key_id = principal.key_id if principal.kind == "key" else None
        if key_id is not None:
            rate, budget = _key_specs(
                key_id, principal.rpm, principal.tpm, principal.budget_usd, principal.budget_period
            )
            if rate is not None:
                rates.append(rate)
            if budget is not None:
                budgets.append(budget)
        self._add("customer", customer, rates, budgets)
        self._add("pipeline", pipeline, rates, budgets)
        self._add("model", model, rates, budgets)
        return rates, budgets

    def _add(
        self, scope: str, subject: str | None, rates: list[LimitSpec], budgets: list[BudgetSpec]
    ) -> None:
        if subject is None:
            return
        policy = self._api.get((scope, subject)) or self._config.get((scope, subject))
        if policy is None:
            return
        rate = policy.limits.rate(scope, subject)
        if rate is not None:
            rates.append(rate)
        budget = policy.limits.budget(scope, subject)
        if budget is not None and scope != "model":
            budgets.append(budget)
