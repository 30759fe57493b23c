"""The tables. Alembic migrations under storage/migrations create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "HISTOGRAM_BASE",
    "HISTOGRAM_BUCKETS",
    "alert_events",
    "alert_rules",
    "events",
    "keys",
    "limit_policies",
    "metadata",
    "prompt_label_moves",
    "prompt_labels",
    "prompt_versions",
    "prompts",
    "request_payloads",
    "requests",
    "rollups",
    "scores",
    "spans",
]

metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_span_id", String(16)),
    Column("created_at", Double, nullable=False),  # unix seconds
    Column("endpoint", String(32), nullable=False),
    Column("model", String(256)),
    Column("provider", String(128)),
    Column("provider_model", String(256)),
    Column("status_code", Integer, nullable=False),
    Column("error", Text),
    Column("error_type", String(64)),
    Column("latency_ms", Double),
    Column("ttft_ms", Double),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("cache_write_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("tokens_estimated", Boolean, nullable=False),
    Column("cost_usd", Double),
    Column("cost_estimated", Boolean, nullable=False),
    Column("customer", String(256)),
    Column("pipeline", String(256)),
    Column("tags", JSON, nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("key_id", String(32)),
    Column("final", Boolean, nullable=False),
    Column("prompt_name", String(256)),  # the prompt the gateway rendered, if any
    Column("prompt_version", Integer),
    # the attempts before the answer: [{provider, model, outcome, status, error, latency_ms}]
    Column("fallbacks", JSON(none_as_null=True)),
    Column("cache_status", String(16)),  # "hit" | "semantic-hit" | "miss" | "bypass"
    Column("cost_saved_usd", Double),  # what a cache hit would have cost upstream
    Column("trimmed_messages", Integer),  # messages the context-trimming policy dropped
    Column("deprecated_model", String(256)),  # the deprecated model the client asked for
    Index("ix_requests_created_at", "created_at"),
    Index("ix_requests_model_created", "model", "created_at"),
    Index("ix_requests_customer_created", "customer", "created_at"),
    Index("ix_requests_pipeline_created", "pipeline", "created_at"),
    Index("ix_requests_trace_id", "trace_id"),
    Index("ix_requests_prompt_created", "prompt_name", "prompt_version", "created_at"),
)

request_payloads = Table(
    "request_payloads",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("request_body", Text),
    Column("response_body", Text),
    Column("truncated", Boolean, nullable=False),
)

keys = Table(
    "keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public key id, part of the key string
    Column("name", String(256), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("hash", String(128), nullable=False),  # sha256(salt + secret), hex
    Column("customer", String(256)),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("revoked_at", Double),
    Column("allowed_models", JSON),
    Column("metadata", JSON),
    Column("rpm", Integer),  # requests per minute; NULL: no limit
    Column("tpm", Integer),  # tokens per minute
    Column("budget_usd", Double),
    Column("budget_period", String(8)),  # "day" | "month" | "total"; set with budget_usd
)

# Limits set through the API for a customer, a pipeline, a model or the project (subject
# "default"). They replace the config file's limits of the same subject, as a whole.
limit_policies = Table(
    "limit_policies",
    metadata,
    Column("scope", String(16), primary_key=True),  # "project" | "customer" | "pipeline" | "model"
    Column("subject", String(256), primary_key=True),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("budget_usd", Double),
    Column("budget_period", String(8)),
    Column("updated_at", Double, nullable=False),
)

prompts = Table(
    "prompts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("description", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("name", name="uq_prompts_name"),
)

# Immutable: a row is written once by a push and never updated.
prompt_versions = Table(
    "prompt_versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "prompt_id",
        String(32),
        ForeignKey("prompts.id", name="fk_prompt_versions_prompt"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),  # 1, 2, 3... per prompt
    Column("content_hash", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # "chat" | "text"
    Column("template", Text),
    Column("messages", JSON),
    Column("variables", JSON),  # a list of names or a JSON schema
    Column("config", JSON, nullable=False),
    Column("description", Text),
    Column("message", Text),
    Column("author", String(256), nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_version"),
    UniqueConstraint("prompt_id", "content_hash", name="uq_prompt_versions_hash"),
)

prompt_labels = Table(
    "prompt_labels",
    metadata,
    Column(
        "prompt_id",
        String(32),
        ForeignKey("prompts.id", name="fk_prompt_labels_prompt"),
        primary_key=True,
    ),
    Column("label", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("protected", Boolean, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

prompt_label_moves = Table(
    "prompt_label_moves",
    metadata,
    # An integer in insertion order: rollback needs "the latest move" even within one clock tick.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "prompt_id",
        String(32),
        ForeignKey("prompts.id", name="fk_prompt_label_moves_prompt"),
        nullable=False,
    ),
    Column("label", String(64), nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("at", Double, nullable=False),
    Column("action", String(16), nullable=False),  # "promote" | "rollback"
    Index("ix_prompt_label_moves_label", "prompt_id", "label", "id"),
)

# Append-only: nothing updates or deletes a row. `prev_hash` and `hash` are for the governance
# work, which will chain the events; they stay empty until then.
events = Table(
    "events",
    metadata,
    Column("id", String(32), primary_key=True),  # time-ordered (keel.records.model.new_id)
    Column("at", Double, nullable=False),
    Column("kind", String(64), nullable=False),  # "prompt.version_created", "prompt.label_moved"
    Column("actor", String(256), nullable=False),
    Column("subject", String(256), nullable=False),  # "prompt:summarize"
    Column("data", JSON, nullable=False),
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
    Index("ix_events_at", "at", "id"),
)

# Spans ingested over OTLP or sent by the Keel SDK (keel.records.span.SpanRecord). Gateway calls
# stay in `requests`; both share trace ids, and the trace view joins them.
spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_span_id", String(16)),
    Column("name", String(512), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("service", String(256)),
    Column("start_time", Double, nullable=False),  # unix seconds
    Column("end_time", Double, nullable=False),
    Column("duration_ms", Double, nullable=False),
    Column("status", String(8), nullable=False),  # "ok" | "error" | "unset"
    Column("error", Text),
    Column("provider", String(128)),
    Column("model", String(256)),
    Column("response_model", String(256)),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("cost_usd", Double),
    Column("cost_estimated", Boolean, nullable=False),
    Column("ttft_ms", Double),
    Column("customer", String(256)),
    Column("session_id", String(256)),
    Column("pipeline", String(256)),
    Column("tags", JSON, nullable=False),
    Column("prompt_name", String(256)),
    Column("prompt_version", Integer),
    Column("counted", Boolean, nullable=False),
    Column("input", Text),
    Column("output", Text),
    Column("attributes", JSON, nullable=False),
    Column("events", JSON, nullable=False),
    Index("ix_spans_start_time", "start_time"),
    Index("ix_spans_session_start", "session_id", "start_time"),
    # r0005: the spans that count as calls (raw analytics queries), and root spans (trace list)
    Index(
        "ix_spans_counted_start",
        "start_time",
        sqlite_where=text("counted = 1 AND kind IN ('llm', 'embedding')"),
        postgresql_where=text("counted AND kind IN ('llm', 'embedding')"),
    ),
    Index(
        "ix_spans_root_start",
        "start_time",
        sqlite_where=text("parent_span_id IS NULL"),
        postgresql_where=text("parent_span_id IS NULL"),
    ),
)

# Scores judge a trace or one span in it: a number, a boolean (stored as 0/1) or a label.
scores = Table(
    "scores",
    metadata,
    Column("id", String(32), primary_key=True),  # time-ordered (keel.records.model.new_id)
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16)),  # None: the score is about the whole trace
    Column("name", String(128), nullable=False),
    Column("data_type", String(16), nullable=False),  # "numeric" | "boolean" | "categorical"
    Column("value", Double),  # numeric and boolean scores
    Column("label", String(256)),  # categorical scores
    Column("source", String(16), nullable=False),  # "human" | "rule" | "model"
    Column("comment", Text),
    Column("author", String(256)),
    Column("created_at", Double, nullable=False),
    Index("ix_scores_trace", "trace_id"),
    Index("ix_scores_name_created", "name", "created_at"),
    Index("ix_scores_created", "created_at"),  # r0005
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("metric", String(32), nullable=False),  # a metric of GET /api/v1/metrics
    Column("filters", JSON, nullable=False),  # {"model": ..., "customer": ..., ...}
    Column("window_s", Integer, nullable=False),
    Column("comparator", String(4), nullable=False),  # ">" | ">=" | "<" | "<="
    Column("threshold", Double, nullable=False),
    Column("for_s", Integer, nullable=False),  # how long the condition holds before firing
    Column("channels", JSON, nullable=False),  # [{"type": "webhook" | "slack", "url": ...}]
    Column("enabled", Boolean, nullable=False),
    Column("state", String(16), nullable=False),  # "ok" | "pending" | "firing"
    Column("state_since", Double),
    Column("last_value", Double),
    Column("last_evaluated_at", Double),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("name", name="uq_alert_rules_name"),
)

# Append-only history: firing, resolved, budget thresholds, and each notification's deliveries.
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", String(32), primary_key=True),  # time-ordered
    Column("rule_id", String(32)),  # None for notices without a rule (budget thresholds)
    Column("rule_name", String(128), nullable=False),
    Column("kind", String(32), nullable=False),  # "firing" | "resolved" | "budget_threshold"
    Column("at", Double, nullable=False),
    Column("value", Double),
    Column("threshold", Double),
    Column("message", Text, nullable=False),
    Column("deliveries", JSON, nullable=False),  # [{"channel", "status", "attempts", "error"}]
    Index("ix_alert_events_at", "at"),
    Index("ix_alert_events_rule_at", "rule_id", "at"),
)

# Latency and time-to-first-token histograms: bucket i counts values in
# [HISTOGRAM_BASE**(i-1), HISTOGRAM_BASE**i) milliseconds; bucket 0 is below 1 ms and the last
# bucket everything above its lower bound.
HISTOGRAM_BUCKETS = 40  # the migration r0004 freezes this number
HISTOGRAM_BASE = 1.3


def _histogram(prefix: str) -> list[Column[int]]:
    return [
        Column(f"{prefix}{i:02d}", BigInteger, nullable=False, default=0)
        for i in range(HISTOGRAM_BUCKETS)
    ]


# Pre-aggregated analytics of counted calls (gateway requests and LLM/embedding spans), so the
# dashboards read thousands of rows, not millions. grain "m": one row per minute, totals only
# (dimension ""); grain "h": one row per hour for the totals and for each value of each
# dimension (model, provider, pipeline, customer, key, prompt "name@version", tag, source).
# Every column adds up, so writers from several replicas upsert with `col = col + excluded.col`.
rollups = Table(
    "rollups",
    metadata,
    Column("grain", String(1), primary_key=True),
    Column("bucket", BigInteger, primary_key=True),  # unix seconds at the start of the bucket
    Column("dimension", String(16), primary_key=True),
    Column("value", String(256), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_usd", Double, nullable=False),
    Column("cost_saved_usd", Double, nullable=False),
    Column("cache_hits", BigInteger, nullable=False),
    Column("latency_count", BigInteger, nullable=False),
    Column("latency_sum_ms", Double, nullable=False),
    Column("ttft_count", BigInteger, nullable=False),
    Column("ttft_sum_ms", Double, nullable=False),
    *_histogram("lat_"),
    *_histogram("ttft_"),
    Index("ix_rollups_dimension", "grain", "dimension", "bucket"),
    Index("ix_rollups_value", "grain", "dimension", "value", "bucket"),  # r0005: top-n reads
)
