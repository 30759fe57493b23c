"""Provider types, found through the `keel.providers` entry-point group.

Built-in providers register through the very hook a third-party package uses: a package declares
`[project.entry-points."keel.providers"] name = "module:register"`, where `register(registry)`
calls `registry.add("type-name", factory)`.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from keel.config import ConfigError, ProviderConfig
from keel.providers.base import Provider, ProviderFactory

__all__ = ["ProviderRegistry", "load_registry"]

log = logging.getLogger(__name__)


class ProviderRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, ProviderFactory] = {}

    def add(self, type_name: str, factory: ProviderFactory) -> None:
        if type_name in self._factories:
            raise ValueError(f"provider type {type_name!r} is registered twice")
        self._factories[type_name] = factory

    def types(self) -> list[str]:
        return sorted(self._factories)

    def create(self, config: ProviderConfig) -> Provider:
        factory = self._factories.get(config.type)
        if factory is None:
            raise ConfigError(
                f"provider {config.name!r} has unknown type {config.type!r}; "
                f"known types: {', '.join(self.types())}"
            )
        return factory(config)


def load_registry() -> ProviderRegistry:
    registry = ProviderRegistry()
    for ep in entry_points(group="keel.providers"):
        try:
            register = ep.load()
        except Exception:  # a broken plugin must not stop Keel; say which one
            log.exception("could not load provider plugin %s (%s)", ep.name, ep.value)
            continue
        register(registry)
    return registry
