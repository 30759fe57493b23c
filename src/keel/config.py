"""Keel's settings: one table (name, env var, default, type, doc) from YAML, env and defaults.

Every setting is documented in docs/settings.md; tests/test_docs.py fails on an undocumented one.
Precedence: environment variable > YAML file > default. Secrets may be given as `env:NAME`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keel.config_cache import CacheConfig, parse_cache_config
from keel.config_models import (
    STRATEGIES,
    ConfigError,
    DeprecationConfig,
    ModelConfig,
    ModelTarget,
    parse_deprecations,
    parse_models,
)
from keel.limits.config import Policy, parse_limits

__all__ = [
    "SETTINGS",
    "STRATEGIES",
    "ConfigError",
    "DeprecationConfig",
    "ModelConfig",
    "ModelTarget",
    "ProviderConfig",
    "Setting",
    "Settings",
    "header_pairs",
    "load_settings",
    "resolve_secret",
]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text or None


def header_pairs(text: str | None) -> dict[str, str]:
    """`name=value,name2=value2` (the OTEL_EXPORTER_OTLP_HEADERS form) as a dict."""
    headers: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError("expected name=value pairs separated by commas")
        headers[name.strip().lower()] = value.strip()
    return headers


def _header_pairs_text(value: Any) -> str | None:
    text = _str_or_none(value)
    header_pairs(text)  # refuse a malformed value at start, not at the first export
    return text


def _url_list(value: Any) -> tuple[str, ...]:
    """Comma-separated (or a YAML list of) http(s) URLs."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    urls = tuple(str(u).strip() for u in items if str(u).strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError("expected http:// or https:// URLs separated by commas")
    return urls


def _at_least(minimum: float, kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A parser of `kind` that refuses values below `minimum`."""

    def parse(value: Any) -> Any:
        number = kind(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    env: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "KEEL_HOST", "127.0.0.1", str, "Address `keel serve` listens on."),
    Setting("port", "KEEL_PORT", 4000, int, "Port `keel serve` listens on."),
    Setting(
        "data_dir",
        "KEEL_DATA_DIR",
        ".keel",
        str,
        "Folder for the SQLite database and the write-ahead log.",
    ),
    Setting("config", "KEEL_CONFIG", None, _str_or_none, "Path of the YAML config file."),
    Setting(
        "database_url",
        "KEEL_DATABASE_URL",
        None,
        _str_or_none,
        "`sqlite:///path` or `postgresql://user@host/db`; default: SQLite in the data dir.",
        secret=True,
    ),
    Setting(
        "redis_url",
        "KEEL_REDIS_URL",
        None,
        _str_or_none,
        "Redis for shared state across replicas (rate limits, budgets, cache, revocation).",
        secret=True,
    ),
    Setting(
        "admin_key",
        "KEEL_ADMIN_KEY",
        None,
        _str_or_none,
        "Admin key for the management API. Without it Keel serves only on loopback.",
        secret=True,
    ),
    Setting("log_level", "KEEL_LOG_LEVEL", "info", str, "debug, info, warning or error."),
    Setting(
        "max_request_bytes",
        "KEEL_MAX_REQUEST_BYTES",
        10 * 1024 * 1024,
        int,
        "Largest request body accepted; larger bodies get 413.",
    ),
    Setting(
        "store_payloads",
        "KEEL_STORE_PAYLOADS",
        True,
        _bool,
        "Store request and response bodies with each record.",
    ),
    Setting(
        "payload_max_bytes",
        "KEEL_PAYLOAD_MAX_BYTES",
        64 * 1024,
        int,
        "Cap per stored body; longer bodies are cut and flagged as truncated.",
    ),
    Setting(
        "otlp_max_body_bytes",
        "KEEL_OTLP_MAX_BODY_BYTES",
        16 * 1024 * 1024,
        _at_least(1024, int),
        "Largest OTLP export body accepted at `/v1/traces`, as sent (compressed); larger "
        "bodies get 413.",
    ),
    Setting(
        "otlp_max_decompressed_bytes",
        "KEEL_OTLP_MAX_DECOMPRESSED_BYTES",
        64 * 1024 * 1024,
        _at_least(1024, int),
        "Largest OTLP export body once decompressed; decompression stops there and the export "
        "gets 413.",
    ),
    Setting(
        "otlp_max_attribute_length",
        "KEEL_OTLP_MAX_ATTRIBUTE_LENGTH",
        16 * 1024,
        _at_least(64, int),
        "Longest span attribute string kept, in characters; longer values are cut and end "
        "with `…[truncated]`.",
    ),
    Setting(
        "otlp_max_attributes",
        "KEEL_OTLP_MAX_ATTRIBUTES",
        128,
        _at_least(1, int),
        "Attributes kept per span, event and link (and items per array value); the rest are "
        "dropped and counted in `keel.dropped_attributes`.",
    ),
    Setting(
        "wal_max_bytes",
        "KEEL_WAL_MAX_BYTES",
        1024 * 1024 * 1024,
        int,
        "Bound of the write-ahead log; when full, requests get 503 until the writer drains it.",
    ),
    Setting(
        "wal_segment_bytes",
        "KEEL_WAL_SEGMENT_BYTES",
        64 * 1024 * 1024,
        int,
        "Size at which the write-ahead log starts a new segment file.",
    ),
    Setting(
        "wal_fsync",
        "KEEL_WAL_FSYNC",
        "batch",
        str,
        "`batch`: group-commit fsync in the background every `wal_fsync_interval_ms`; "
        "`always`: fsync before the response status line is sent.",
    ),
    Setting(
        "wal_fsync_interval_ms",
        "KEEL_WAL_FSYNC_INTERVAL_MS",
        10,
        int,
        "Group-commit interval of the write-ahead log's fsync in `batch` mode.",
    ),
    Setting(
        "writer_batch_size",
        "KEEL_WRITER_BATCH_SIZE",
        1000,
        int,
        "Most records the background writer puts in one database transaction.",
    ),
    Setting(
        "sqlite_writer_process",
        "KEEL_SQLITE_WRITER_PROCESS",
        True,
        _bool,
        "With SQLite, write ingested spans from a helper process that `keel serve` starts and "
        "stops, so the database work runs beside request handling instead of taking turns with "
        "it on Python's interpreter lock (about one and a half times the OTLP ingest rate on "
        "two cores).",
    ),
    Setting(
        "writer_linger_ms",
        "KEEL_WRITER_LINGER_MS",
        20,
        int,
        "How long the background writer lets records gather before a transaction when traffic "
        "is light (records reach the database that much later; the log already holds them).",
    ),
    Setting(
        "otlp_export_url",
        "KEEL_OTLP_EXPORT_URL",
        None,
        _str_or_none,
        "OTLP/HTTP traces endpoint of your collector (e.g. `http://otel:4318/v1/traces`): Keel "
        "exports a span per gateway call there. Unset: no export.",
        secret=True,
    ),
    Setting(
        "otlp_export_headers",
        "KEEL_OTLP_EXPORT_HEADERS",
        None,
        _header_pairs_text,
        "Headers for the OTLP export, `name=value` pairs separated by commas (for example the "
        "collector's `authorization`).",
        secret=True,
    ),
    Setting(
        "otlp_export_service_name",
        "KEEL_OTLP_EXPORT_SERVICE_NAME",
        "keel",
        str,
        "`service.name` of the exported spans.",
    ),
    Setting(
        "upstream_connect_timeout_s",
        "KEEL_UPSTREAM_CONNECT_TIMEOUT_S",
        10.0,
        float,
        "Timeout to connect to a provider.",
    ),
    Setting(
        "upstream_read_timeout_s",
        "KEEL_UPSTREAM_READ_TIMEOUT_S",
        120.0,
        float,
        "Longest silence allowed while reading a provider's answer (between stream chunks).",
    ),
    Setting(
        "upstream_total_timeout_s",
        "KEEL_UPSTREAM_TOTAL_TIMEOUT_S",
        600.0,
        float,
        "Longest a provider call may take in all.",
    ),
    Setting(
        "request_deadline_s",
        "KEEL_REQUEST_DEADLINE_S",
        120.0,
        _at_least(0.001, float),
        "One total deadline per request across all its retries and fallbacks; past it the "
        "client gets 504.",
    ),
    Setting(
        "retry_max_attempts",
        "KEEL_RETRY_MAX_ATTEMPTS",
        2,
        _at_least(1, int),
        "Attempts per target (the first call included) on a retryable failure (429, 5xx, "
        "connection error) before moving to the next target.",
    ),
    Setting(
        "retry_backoff_base_ms",
        "KEEL_RETRY_BACKOFF_BASE_MS",
        200,
        _at_least(0, int),
        "Base of the exponential backoff between retries of a target, with full jitter; an "
        "upstream's `Retry-After` replaces it.",
    ),
    Setting(
        "retry_backoff_max_ms",
        "KEEL_RETRY_BACKOFF_MAX_MS",
        5000,
        _at_least(0, int),
        "Cap of one backoff wait (before jitter).",
    ),
    Setting(
        "breaker_failure_threshold",
        "KEEL_BREAKER_FAILURE_THRESHOLD",
        5,
        _at_least(1, int),
        "Retryable failures of one target within `breaker_window_s` that open its circuit "
        "breaker (the target is then skipped).",
    ),
    Setting(
        "breaker_window_s",
        "KEEL_BREAKER_WINDOW_S",
        30.0,
        _at_least(0.001, float),
        "Window in which a target's failures are counted for its circuit breaker.",
    ),
    Setting(
        "breaker_cooldown_s",
        "KEEL_BREAKER_COOLDOWN_S",
        30.0,
        _at_least(0.001, float),
        "How long an open circuit breaker skips its target before one probe request may try it.",
    ),
    Setting(
        "limits_fail_open",
        "KEEL_LIMITS_FAIL_OPEN",
        False,
        _bool,
        "Admit requests unchecked when Redis cannot be reached, instead of answering 503 "
        "(rate limits and budgets).",
    ),
    Setting(
        "limits_reservation_ttl_s",
        "KEEL_LIMITS_RESERVATION_TTL_S",
        600.0,
        _at_least(1, float),
        "Seconds after which an unsettled budget reservation is released. Keep it above the "
        "longest request.",
    ),
    Setting(
        "limits_default_max_tokens",
        "KEEL_LIMITS_DEFAULT_MAX_TOKENS",
        4096,
        _at_least(1, int),
        "Output cap for the worst-case cost of a request without `max_tokens`; sent upstream "
        "as its `max_tokens` when a budget applies.",
    ),
    Setting(
        "limits_redis_timeout_s",
        "KEEL_LIMITS_REDIS_TIMEOUT_S",
        0.5,
        _at_least(0.001, float),
        "Connect and command timeout for the shared state in Redis (limits, budgets, revocations).",
    ),
    Setting(
        "limits_refresh_s",
        "KEEL_LIMITS_REFRESH_S",
        30.0,
        _at_least(0.1, float),
        "How often each replica reloads the limit policies set through the API (another "
        "replica's change applies within this interval).",
    ),
    Setting(
        "alerts_interval_s",
        "KEEL_ALERTS_INTERVAL_S",
        15.0,
        _at_least(0, float),
        "How often the alert rules are evaluated; 0 turns the evaluator off.",
    ),
    Setting(
        "alerts_timeout_s",
        "KEEL_ALERTS_TIMEOUT_S",
        5.0,
        _at_least(0.001, float),
        "Timeout of one alert notification POST to a webhook.",
    ),
    Setting(
        "alerts_attempts",
        "KEEL_ALERTS_ATTEMPTS",
        3,
        _at_least(1, int),
        "Attempts per notification and channel on a connection error, timeout, 5xx or 429 "
        "(backoff 0.5 s, doubling).",
    ),
    Setting(
        "alerts_budget_webhooks",
        "KEEL_ALERTS_BUDGET_WEBHOOKS",
        (),
        _url_list,
        "Webhook URLs (comma-separated) that receive budget threshold notices (80% and 100% "
        "of a budget) as JSON.",
        secret=True,
    ),
    Setting(
        "alerts_budget_slack",
        "KEEL_ALERTS_BUDGET_SLACK",
        (),
        _url_list,
        "Slack-compatible incoming-webhook URLs (comma-separated) that receive budget "
        "threshold notices.",
        secret=True,
    ),
    Setting(
        "public_url",
        "KEEL_PUBLIC_URL",
        None,
        _str_or_none,
        "Keel's address as people reach it (e.g. `https://keel.example.com`), linked from "
        "alert notifications.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def resolve_secret(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Turn `env:NAME` into the value of environment variable NAME (a missing one is an error)."""
    if isinstance(value, str) and value.startswith("env:"):
        source = os.environ if env is None else env
        name = value[4:]
        if name not in source:
            raise ConfigError(f"environment variable {name} is referenced as {value!r} but not set")
        return source[name]
    return value


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One configured provider instance: `providers: {name: {type: ..., ...}}`."""

    name: str
    type: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 4000
    data_dir: str = ".keel"
    config: str | None = None
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    log_level: str = "info"
    max_request_bytes: int = 10 * 1024 * 1024
    store_payloads: bool = True
    payload_max_bytes: int = 64 * 1024
    otlp_max_body_bytes: int = 16 * 1024 * 1024
    otlp_max_decompressed_bytes: int = 64 * 1024 * 1024
    otlp_max_attribute_length: int = 16 * 1024
    otlp_max_attributes: int = 128
    wal_max_bytes: int = 1024 * 1024 * 1024
    wal_segment_bytes: int = 64 * 1024 * 1024
    wal_fsync: str = "batch"
    wal_fsync_interval_ms: int = 10
    writer_batch_size: int = 1000
    sqlite_writer_process: bool = True
    writer_linger_ms: int = 20
    otlp_export_url: str | None = field(default=None, repr=False)
    otlp_export_headers: str | None = field(default=None, repr=False)
    otlp_export_service_name: str = "keel"
    upstream_connect_timeout_s: float = 10.0
    upstream_read_timeout_s: float = 120.0
    upstream_total_timeout_s: float = 600.0
    request_deadline_s: float = 120.0
    retry_max_attempts: int = 2
    retry_backoff_base_ms: int = 200
    retry_backoff_max_ms: int = 5000
    breaker_failure_threshold: int = 5
    breaker_window_s: float = 30.0
    breaker_cooldown_s: float = 30.0
    limits_fail_open: bool = False
    limits_reservation_ttl_s: float = 600.0
    limits_default_max_tokens: int = 4096
    limits_redis_timeout_s: float = 0.5
    limits_refresh_s: float = 30.0
    alerts_interval_s: float = 15.0
    alerts_timeout_s: float = 5.0
    alerts_attempts: int = 3
    alerts_budget_webhooks: tuple[str, ...] = field(default=(), repr=False)
    alerts_budget_slack: tuple[str, ...] = field(default=(), repr=False)
    public_url: str | None = None
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    deprecations: tuple[DeprecationConfig, ...] = ()
    # model name -> price override in USD per million tokens:
    # {input, output, cached_input, cache_write, reasoning}
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # the `limits:` section: policies of the project, customers, pipelines and models
    limits: tuple[Policy, ...] = ()
    # the `cache:` section: the response cache (off by default)
    cache: CacheConfig = field(default_factory=CacheConfig)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir) / 'keel.db'}"


def _parse_providers(raw: Any, env: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError("`providers` must be a mapping of name to provider settings")
    out = []
    for name, spec in raw.items():
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ConfigError(f"provider {name!r} needs a `type` (openai, anthropic, gemini, mock)")
        rest = {
            k: resolve_secret(v)
            for k, v in spec.items()
            if k not in {"type", "base_url", "api_key"}
        }
        out.append(
            ProviderConfig(
                name=str(name),
                type=str(spec["type"]),
                base_url=_str_or_none(spec.get("base_url")),
                api_key=_str_or_none(resolve_secret(spec.get("api_key"), env)),
                options=rest,
            )
        )
    return tuple(out)


def _parse_prices(raw: Any) -> dict[str, dict[str, float]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "`prices` must map a model name to {input, output, ...} in USD per 1M tokens"
        )
    allowed = {"input", "output", "cached_input", "cache_write", "reasoning"}
    out: dict[str, dict[str, float]] = {}
    for model, spec in raw.items():
        if not isinstance(spec, Mapping) or not set(spec) <= allowed:
            raise ConfigError(f"price for {model!r} takes only {sorted(allowed)}")
        out[str(model)] = {k: float(v) for k, v in spec.items()}
    return out


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, the YAML file, `KEEL_*` variables and explicit overrides."""
    environ = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config_path = overrides.get("config") or environ.get("KEEL_CONFIG")
    file_values: dict[str, Any] = {}
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {config_path} must hold a mapping")
        file_values = dict(loaded)
    known = set(_BY_NAME) | {"providers", "models", "prices", "deprecations", "limits", "cache"}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {config_path}: {', '.join(unknown)}")

    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.name in overrides:
            raw, source = overrides[s.name], "command line"
        elif s.env in environ:
            raw, source = environ[s.env], s.env
        elif s.name in file_values:
            raw, source = resolve_secret(file_values[s.name], environ), str(config_path)
        else:
            values[s.name] = s.default
            continue
        try:
            values[s.name] = s.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {s.name} from {source}: {exc}") from None
    if values["wal_fsync"] not in {"batch", "always"}:
        raise ConfigError("setting wal_fsync must be `batch` or `always`")
    values["config"] = config_path
    return Settings(
        **values,
        providers=_parse_providers(file_values.get("providers"), environ),
        models=parse_models(file_values.get("models")),
        prices=_parse_prices(file_values.get("prices")),
        deprecations=parse_deprecations(file_values.get("deprecations")),
        limits=parse_limits(file_values.get("limits")),
        cache=parse_cache_config(file_values.get("cache")),
    )
