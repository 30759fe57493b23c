"""The `cache:` section of the config file (the response cache's settings, off by default).

Kept apart from keel.cache so that reading settings imports no provider or cache code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from keel.config_models import ConfigError

__all__ = ["CacheConfig", "SemanticConfig", "parse_cache_config"]


@dataclass(frozen=True, slots=True)
class SemanticConfig:
    """`cache.semantic` in the config file."""

    enabled: bool = False
    embedding_model: str | None = None  # a public model name served by /v1/embeddings
    threshold: float = 0.95  # cosine similarity a match needs
    max_per_scope: int = 256  # most recent vectors kept per scope (lookup cost is linear in it)
    max_scopes: int = 10_000  # memory backend: scopes kept (least recently used dropped)
    embed_timeout_s: float = 2.0  # a slower embedding call is a miss


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`cache:` in the config file."""

    enabled: bool = False
    ttl_s: int = 3600
    max_entries: int = 10_000  # memory backend
    max_bytes: int = 64 * 1024 * 1024  # memory backend: total size of the entries
    max_entry_bytes: int = 1024 * 1024  # larger answers are not cached
    semantic: SemanticConfig = field(default_factory=SemanticConfig)


_FIELDS = frozenset({f.name for f in fields(CacheConfig)})
_SEMANTIC_FIELDS = frozenset({f.name for f in fields(SemanticConfig)})


def _no_unknown(raw: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    # A misspelt `ttl` must not silently leave the default in place.
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")


def _number(raw: Mapping[str, Any], name: str, default: Any, kind: type, low: float) -> Any:
    value = raw.get(name, default)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"cache: `{name}` must be a number, got {value!r}") from None
    if number < low:
        raise ConfigError(f"cache: `{name}` must be at least {low}, got {number}")
    return number


def _flag(raw: Mapping[str, Any], name: str, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"cache: `{name}` must be true or false, got {value!r}")
    return value


def _semantic(raw: Any) -> SemanticConfig:
    if raw is None:
        return SemanticConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("cache: `semantic` must be a mapping")
    _no_unknown(raw, _SEMANTIC_FIELDS, "cache.semantic")
    d = SemanticConfig()
    model = raw.get("embedding_model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ConfigError("cache: `semantic.embedding_model` must be a model name")
    enabled = _flag(raw, "enabled", d.enabled)
    if enabled and model is None:
        raise ConfigError("cache: `semantic.enabled` needs `semantic.embedding_model`")
    threshold = _number(raw, "threshold", d.threshold, float, 0.0)
    if threshold > 1.0:
        raise ConfigError(f"cache: `semantic.threshold` must be at most 1, got {threshold}")
    return SemanticConfig(
        enabled=enabled,
        embedding_model=model,
        threshold=threshold,
        max_per_scope=_number(raw, "max_per_scope", d.max_per_scope, int, 1),
        max_scopes=_number(raw, "max_scopes", d.max_scopes, int, 1),
        embed_timeout_s=_number(raw, "embed_timeout_s", d.embed_timeout_s, float, 0.001),
    )


def parse_cache_config(raw: Any) -> CacheConfig:
    """The `cache:` section of the YAML config (None: the defaults, cache off)."""
    if raw is None:
        return CacheConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("`cache` must be a mapping")
    _no_unknown(raw, _FIELDS, "cache")
    d = CacheConfig()
    return CacheConfig(
        enabled=_flag(raw, "enabled", d.enabled),
        ttl_s=_number(raw, "ttl_s", d.ttl_s, int, 1),
        max_entries=_number(raw, "max_entries", d.max_entries, int, 1),
        max_bytes=_number(raw, "max_bytes", d.max_bytes, int, 1),
        max_entry_bytes=_number(raw, "max_entry_bytes", d.max_entry_bytes, int, 1),
        semantic=_semantic(raw.get("semantic")),
    )
