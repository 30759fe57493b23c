"""The gateway's pure pieces: metadata, trace context, model resolution, errors, settings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from keel.config import ConfigError, ModelConfig, ModelTarget, ProviderConfig, load_settings
from keel.gateway.errors import GatewayError, error_body
from keel.gateway.metadata import parse_meta, parse_traceparent
from keel.gateway.models import ModelRouter
from keel.providers.registry import load_registry
from keel.server import is_loopback


def test_traceparent_valid_joins_the_callers_trace() -> None:
    ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert (ctx.trace_id, ctx.parent_span_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert len(ctx.span_id) == 16 and ctx.span_id != ctx.parent_span_id
    assert ctx.traceparent() == f"00-{ctx.trace_id}-{ctx.span_id}-01"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    ],
)
def test_traceparent_invalid_starts_a_new_trace(value: str | None) -> None:
    ctx = parse_traceparent(value)
    assert len(ctx.trace_id) == 32 and ctx.parent_span_id is None


def test_meta_precedence_and_tag_cleaning() -> None:
    meta = parse_meta(
        {"x-keel-customer": " acme ", "x-keel-tags": "a, b,,a , c"}, {"user": "u1"}, "key-customer"
    )
    assert (meta.customer, meta.tags) == ("acme", ["a", "b", "c"])
    assert parse_meta({}, {"user": "u1"}, "k").customer == "u1"
    assert parse_meta({}, {"user": 5}, "k").customer == "k"
    assert (
        len(parse_meta({"x-keel-tags": ",".join(str(i) for i in range(100))}, {}, None).tags) == 32
    )


def _router() -> ModelRouter:
    registry = load_registry()
    providers = {
        "mock": registry.create(ProviderConfig("mock", "mock")),
        "up": registry.create(ProviderConfig("up", "openai", "http://127.0.0.1:9/v1")),
    }
    return ModelRouter(providers, (ModelConfig("fast", (ModelTarget("up", "gpt-4o-mini"),)),))


def test_router_resolves_public_names_and_provider_prefixes() -> None:
    router = _router()
    assert [(t.provider_name, t.model) for t in router.resolve("fast")] == [("up", "gpt-4o-mini")]
    assert [(t.provider_name, t.model) for t in router.resolve("up/o3")] == [("up", "o3")]
    assert router.resolve("mock/echo")[0].provider_name == "mock"
    with pytest.raises(GatewayError) as caught:
        router.resolve("other/model")
    assert caught.value.status == 404 and "mock, up" in caught.value.message
    ids = {m["id"] for m in router.list_models()}
    assert {"fast", "mock/echo"} <= ids


def test_error_body_is_openai_shaped() -> None:
    assert orjson.loads(error_body("bad", "invalid_request_error", "c", "model")) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": "c"}
    }
    assert GatewayError(429, "slow down", retry_after=1.4).headers() == [(b"retry-after", b"1")]


def test_settings_precedence_and_secret_references(tmp_path: Path) -> None:
    cfg = tmp_path / "keel.yaml"
    cfg.write_text(
        "port: 5000\nlog_level: debug\nproviders:\n  up:\n    type: openai\n"
        "    api_key: env:MY_KEY\n"
    )
    s = load_settings({"config": str(cfg)}, env={"KEEL_PORT": "6000", "MY_KEY": "sk-x"})
    assert (s.port, s.log_level, s.providers[0].api_key) == (6000, "debug", "sk-x")
    assert "sk-x" not in repr(s)
    with pytest.raises(ConfigError, match="MY_KEY"):
        load_settings({"config": str(cfg)}, env={})
    cfg.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"config": str(cfg)}, env={})
    with pytest.raises(ConfigError, match="port"):
        load_settings(env={"KEEL_PORT": "many"})


def test_loopback_detection() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "example.com"]))
