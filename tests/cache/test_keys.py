"""Cache keys, tenants, the x-keel-cache header and the `cache:` config section."""

from __future__ import annotations

import pytest

from keel.cache import (
    CacheConfig,
    SemanticConfig,
    parse_cache_config,
    parse_mode,
    request_key,
    tenant_of,
)
from keel.config_models import ConfigError

BODY = {
    "model": "smart",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is the capital of France?"},
    ],
    "temperature": 0.7,
    "max_tokens": 50,
}


def key(body: dict, tenant: str = "key:k1", model_key: str = "openai/gpt-4o") -> str:
    return request_key(body, tenant=tenant, model_key=model_key)


def test_field_order_and_nested_order_do_not_matter() -> None:
    reordered = {
        "max_tokens": 50,
        "temperature": 0.7,
        "messages": [
            {"content": "be brief", "role": "system"},
            {"content": "what is the capital of France?", "role": "user"},
        ],
        "model": "smart",
    }
    assert key(reordered) == key(BODY)
    assert len(key(BODY)) == 64


def test_delivery_fields_are_ignored() -> None:
    delivered = {
        **BODY,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "end-user-7",
        "metadata": {"run": "42"},
        "store": True,
        "service_tier": "flex",
    }
    assert key(delivered) == key(BODY)


@pytest.mark.parametrize(
    "change",
    [
        {"n": 2},
        {"temperature": 0.2},
        {"seed": 7},
        {"max_tokens": 51},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": [{"role": "user", "content": "what is the capital of Spain?"}]},
    ],
)
def test_fields_that_change_the_answer_change_the_key(change: dict) -> None:
    assert key({**BODY, **change}) != key(BODY)


def test_integer_and_float_sampling_values_are_the_same_key() -> None:
    assert key({**BODY, "temperature": 1}) == key({**BODY, "temperature": 1.0})


def test_tenant_and_model_are_part_of_the_key() -> None:
    assert key(BODY, tenant="key:k2") != key(BODY)
    assert key(BODY, model_key="anthropic/claude-sonnet-4-5") != key(BODY)


def test_the_tenant_cannot_be_left_out() -> None:
    with pytest.raises(TypeError):
        request_key(BODY, model_key="m")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="tenant"):
        request_key(BODY, tenant="", model_key="m")


def test_tenant_of_prefers_the_key_then_the_customer() -> None:
    assert tenant_of("k1", "acme") == "key:k1"
    assert tenant_of(None, "acme") == "customer:acme"
    assert tenant_of(None, None) == "anonymous"
    # a customer named like a key id is still another tenant
    assert tenant_of(None, "k1") != tenant_of("k1", None)


def test_the_header_modes() -> None:
    assert parse_mode(None) == "use"
    assert parse_mode("Bypass ") == "bypass"
    assert parse_mode("refresh") == "refresh"
    with pytest.raises(ValueError, match="use, bypass or refresh"):
        parse_mode("bypas")


def test_config_defaults_and_values() -> None:
    assert parse_cache_config(None) == CacheConfig()
    assert parse_cache_config(
        {
            "enabled": True,
            "ttl_s": 600,
            "max_entries": 50,
            "max_bytes": 1_000_000,
            "max_entry_bytes": 10_000,
            "semantic": {"enabled": True, "embedding_model": "embed", "threshold": 0.9},
        }
    ) == CacheConfig(
        enabled=True,
        ttl_s=600,
        max_entries=50,
        max_bytes=1_000_000,
        max_entry_bytes=10_000,
        semantic=SemanticConfig(enabled=True, embedding_model="embed", threshold=0.9),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ttl": 5}, "unknown field"),
        ({"ttl_s": 0}, "at least"),
        ({"enabled": "yes"}, "true or false"),
        ({"semantic": {"enabled": True}}, "embedding_model"),
        ({"semantic": {"embedding_model": "e", "threshold": 1.5}}, "at most 1"),
        ({"semantic": {"treshold": 0.9}}, "unknown field"),
    ],
)
def test_config_errors_say_what_is_wrong(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cache_config(raw)
