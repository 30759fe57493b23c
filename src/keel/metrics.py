"""Prometheus metrics: one registry for the process, exposed at /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


CircuitStates = Callable[[], Iterable[tuple[str, str, float]]]


class _CircuitCollector(Collector):
    """`keel_circuit_state{provider, model}`, read from the breaker board at scrape time (a
    breaker turns half-open by the clock, with no event to set a gauge on)."""

    def __init__(self) -> None:
        self.states: CircuitStates = tuple

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "keel_circuit_state",
            "Circuit breaker per target: 0 closed, 1 half-open, 2 open.",
            labels=("provider", "model"),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for provider, model, value in self.states():
            family.add_metric((provider, model), value)
        yield family


class _CounterCollector(Collector):
    """Counters kept by other parts (cache, limits) as plain integers, read at scrape time."""

    def __init__(self) -> None:
        self.read: Callable[[], Iterable[tuple[str, str, tuple[str, ...], float]]] = tuple

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[CounterMetricFamily]:
        families: dict[str, CounterMetricFamily] = {}
        for name, doc, labels, value in self.read():
            label_names = ("status",) if labels else ()
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, doc, labels=label_names)
            family.add_metric(labels, value)
        yield from families.values()


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
        self.otlp_exports = Counter(
            "keel_otlp_exports",
            "OTLP trace exports received at /v1/traces, by outcome (accepted, partial, "
            "malformed, too_large, unsupported, unauthorized, unavailable, internal).",
            ("outcome",),
            registry=r,
        )
        self.otlp_spans_accepted = Counter(
            "keel_otlp_spans_accepted",
            "Spans accepted at /v1/traces (in the write-ahead log when the answer went out).",
            registry=r,
        )
        self.otlp_spans_rejected = Counter(
            "keel_otlp_spans_rejected",
            "Spans of decoded exports refused at /v1/traces, by reason (invalid: reported in "
            "partial_success; unavailable: the export got 503).",
            ("reason",),
            registry=r,
        )
        self.spans_pending = Gauge(
            "keel_spans_pending",
            "Spans accepted since start and not yet in the database.",
            registry=r,
        )
        self.deprecated_requests = Counter(
            "keel_deprecated_model_requests",
            "Requests that named a model in the deprecation table.",
            ("model",),
            registry=r,
        )
        self._circuits = _CircuitCollector()
        r.register(self._circuits)
        self._counters = _CounterCollector()
        r.register(self._counters)

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

    def bind_spans(self, pending: Callable[[], float]) -> None:
        """Read `keel_spans_pending` from `pending()` at each scrape."""
        self.spans_pending.set_function(pending)

    def bind_counters(
        self, read: Callable[[], Iterable[tuple[str, str, tuple[str, ...], float]]]
    ) -> None:
        """Counters (name, help, status label or (), value) read at each scrape."""
        self._counters.read = read

    def bind_breakers(self, states: CircuitStates) -> None:
        """Read `keel_circuit_state` from `states()` (BreakerBoard.gauge) at each scrape."""
        self._circuits.states = states

    def count_deprecated(self, model: str) -> None:
        self.deprecated_requests.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
