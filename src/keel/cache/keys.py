"""What the response cache keys on, who may share an entry, and the knobs that turn it on.

A key is the sha256 of (tenant, the plan's provider model(s), the normalised request). The tenant
is a required keyword argument of every key function, so no call site can build a key that two
tenants share (LiteLLM #29955 leaked answers across tenants through exactly that).

Normalising drops the fields that do not change the answer (`IGNORED_FIELDS`) and serialises
with sorted keys, so field order and the stream flag do not split the cache. Everything else the
client sent stays in the key, including `temperature`, `seed` and `n`: a request with
temperature > 0 is still cacheable — whoever turns the cache on opts into repeated answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from keel.config_cache import CacheConfig, SemanticConfig, parse_cache_config

__all__ = [
    "CACHE_HEADER",
    "IGNORED_FIELDS",
    "CacheConfig",
    "CacheMode",
    "SemanticConfig",
    "normalise",
    "parse_cache_config",
    "parse_mode",
    "request_key",
    "scope_key",
    "tenant_of",
]

CACHE_HEADER = "x-keel-cache"

CacheMode = Literal["use", "bypass", "refresh"]
_MODES: frozenset[str] = frozenset({"use", "bypass", "refresh"})

# Fields that change how an answer is delivered, billed or logged, never what it says.
IGNORED_FIELDS: frozenset[str] = frozenset(
    {
        "stream",  # a streamed and a plain call get the same answer; replay.py converts
        "stream_options",  # only asks for the usage chunk, which replay honours per request
        "user",  # an end-user id for the provider's abuse checks; the tenant is in the key
        "safety_identifier",  # OpenAI's successor of `user`
        "metadata",  # free-form tags for the provider's dashboard
        "store",  # whether the provider keeps the completion
        "service_tier",  # latency/price class at the provider, same model and answer
        "prompt_cache_key",  # routing hint for the provider's own prompt cache
        "prompt_cache_retention",
    }
)

# Sampling knobs clients send as 1 or 1.0 interchangeably; the key must not tell them apart.
_FLOAT_FIELDS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")


def parse_mode(value: str | None) -> CacheMode:
    """The `x-keel-cache` request header: `use` (default), `bypass` or `refresh`.

    An unknown value raises ValueError rather than quietly using the cache: a client that typed
    `bypas` to avoid a stale answer must learn it did not get what it asked for."""
    if value is None:
        return "use"
    mode = value.strip().lower()
    if mode not in _MODES:
        raise ValueError(f"`{CACHE_HEADER}` must be use, bypass or refresh, got {value!r}")
    return mode  # type: ignore[return-value]  # checked against _MODES just above


def tenant_of(key_id: str | None, customer: str | None) -> str:
    """Who may share cache entries: the virtual key, else the customer, else everyone anonymous.

    The kind is part of the name so a key id can never equal a customer name."""
    if key_id:
        return f"key:{key_id}"
    if customer:
        return f"customer:{customer}"
    return "anonymous"


def normalise(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as far as it decides the answer (see `IGNORED_FIELDS`)."""
    out = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    for name in _FLOAT_FIELDS:
        value = out.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _digest(tenant: str, model_key: str, part: Any) -> str:
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("a cache key needs a non-empty tenant")
    payload = orjson.dumps(
        {"tenant": tenant, "model": model_key, "part": part}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(payload).hexdigest()


def request_key(body: Mapping[str, Any], *, tenant: str, model_key: str) -> str:
    """The exact-cache key of a chat request (64 hex characters).

    `model_key` names the provider model(s) the request would go to (for example
    `openai/gpt-4o-mini` or the targets of a routed model joined by commas), so changing a
    route does not serve answers of the old model."""
    return _digest(tenant, model_key, normalise(body))


def scope_key(tenant: str, model_key: str, shape: Any) -> str:
    """A semantic-cache scope: only entries of the same scope are ever compared."""
    return _digest(tenant, model_key, {"semantic-scope": shape})


# -- config ------------------------------------------------------------------------------------
