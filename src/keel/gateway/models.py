"""Model resolution: a public model name (or `provider/model`) to the targets that serve it.

`resolve` gives the targets as configured; `route` adds the model's strategy and fallbacks, which
`keel.gateway.routing` turns into an ordered plan.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.config import ModelConfig
from keel.gateway.errors import GatewayError
from keel.providers.base import Provider
from keel.providers.mock import LISTED_MODELS

__all__ = ["ModelRoute", "ModelRouter", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str  # the provider's own model name
    weight: float = 1.0  # share of first picks under the `weighted` strategy
    timeout_s: float | None = None  # bound of one call to this target; None: the deadline's

    @property
    def provider_name(self) -> str:
        return self.provider.config.name

    @property
    def key(self) -> tuple[str, str]:
        """(provider name, model): what breakers and latency averages are kept by."""
        return (self.provider.config.name, self.model)


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A public model's targets, the strategy that orders them, and its fallback models."""

    name: str
    targets: tuple[Target, ...]
    strategy: str = "priority"
    fallbacks: tuple[str, ...] = ()


class ModelRouter:
    def __init__(self, providers: Mapping[str, Provider], models: tuple[ModelConfig, ...]) -> None:
        self._providers = dict(providers)
        self._public: dict[str, ModelRoute] = {}
        for m in models:
            targets = []
            for t in m.targets:
                if t.provider not in self._providers:
                    raise GatewayError(
                        500, f"model {m.name!r} names unknown provider {t.provider!r}"
                    )
                provider = self._providers[t.provider]
                targets.append(Target(provider, t.model, t.weight, t.timeout_s))
            self._public[m.name] = ModelRoute(m.name, tuple(targets), m.strategy, m.fallbacks)
        self._cache: dict[str, ModelRoute] = {}

    @property
    def configured(self) -> tuple[ModelRoute, ...]:
        """The routes of the config's `models:`, in order."""
        return tuple(self._public.values())

    def resolve(self, name: str) -> tuple[Target, ...]:
        """The targets for `name`, as configured; GatewayError 404 when nothing serves it."""
        return self.route(name).targets

    def route(self, name: str) -> ModelRoute:
        """The route for `name`; `provider/model` is one target, no fallbacks. 404 if unknown."""
        found = self._public.get(name) or self._cache.get(name)
        if found:
            return found
        provider_name, sep, model = name.partition("/")
        provider = self._providers.get(provider_name) if sep and model else None
        if provider is None:
            raise GatewayError(
                404,
                f"The model {name!r} does not exist: use a model from GET /v1/models or "
                f"<provider>/<model> with a configured provider "
                f"({', '.join(sorted(self._providers))}).",
                code="model_not_found",
                param="model",
            )
        route = ModelRoute(name, (Target(provider, model),))
        if len(self._cache) < 10_000:  # bounded: names come from clients
            self._cache[name] = route
        return route

    def list_models(self) -> list[dict[str, Any]]:
        created = int(time.time())
        names = list(self._public)
        for pname, provider in self._providers.items():
            listed = provider.config.options.get("models")
            if provider.config.type == "mock":  # its own models and the demo's stand-ins
                listed = list(LISTED_MODELS)
            if isinstance(listed, list):
                names += [f"{pname}/{m}" for m in listed]
        return [{"id": n, "object": "model", "created": created, "owned_by": "keel"} for n in names]
