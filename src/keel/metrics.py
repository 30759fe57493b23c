"""Prometheus metrics: one registry for the process, exposed at /metrics."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "provider")
        self.requests = Counter(
            "keel_requests", "Gateway requests by outcome.", (*labels, "status"), registry=r
        )
        self.errors = Counter(
            "keel_request_errors",
            "Gateway requests that failed, by error type.",
            (*labels, "type"),
            registry=r,
        )
        self.latency = Histogram(
            "keel_request_latency_seconds",
            "Gateway request latency.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "keel_time_to_first_token_seconds",
            "Time to first streamed token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "keel_tokens",
            "Tokens by kind (input, output, cached, reasoning).",
            (*labels, "kind"),
            registry=r,
        )
        self.cost = Counter("keel_cost_usd", "Cost in USD of priced requests.", labels, registry=r)
        self.log_full = Counter(
            "keel_log_full_rejections",
            "Requests refused with 503 because the write-ahead log was full.",
            registry=r,
        )
        self.records_pending = Gauge(
            "keel_records_pending",
            "Records in the write-ahead log not yet in the database.",
            registry=r,
        )
        self.records_written = Gauge(
            "keel_records_written", "Records written to the database since start.", registry=r
        )
        self.records_lost = Gauge(
            "keel_records_lost",
            "Records that could not be logged because of a disk fault.",
            registry=r,
        )
        self.database_up = Gauge(
            "keel_database_up", "1 when the record writer reaches the database.", registry=r
        )

    def bind_pipeline(
        self,
        pending: Callable[[], float],
        written: Callable[[], float],
        lost: Callable[[], float],
        db_up: Callable[[], float],
    ) -> None:
        self.records_pending.set_function(pending)
        self.records_written.set_function(written)
        self.records_lost.set_function(lost)
        self.database_up.set_function(db_up)

    def render(self) -> bytes:
        return generate_latest(self.registry)
