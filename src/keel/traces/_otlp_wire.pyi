"""The C fast paths of OTLP ingest: the protobuf decoder (_otlp_wire.c; see otlp.py) and the
mapping to span rows (_span_map.c; see mapping.py)."""

from collections.abc import Callable, Iterable
from typing import Any

from keel.costs.pricing import Pricer
from keel.traces.otlp import OtlpSpan

def configure(
    span_type: Callable[..., OtlpSpan],
    event_type: Callable[..., object],
    truncated_marker: str,
    deep_marker: str,
    max_depth: int,
    max_key_length: int,
    scope_length: int,
    event_name_length: int,
) -> None: ...
def decode_spans(
    body: bytes, max_value_length: int, max_attributes: int, max_events: int, /
) -> list[OtlpSpan] | None: ...
def decode_rows(
    body: bytes,
    max_value_length: int,
    max_attributes: int,
    max_events: int,
    options: tuple[bool, int, int, str | None, Pricer],
    /,
) -> tuple[list[tuple[Any, ...]], int] | None: ...
def configure_mapping(
    *,
    columns: tuple[str, ...],
    fields: tuple[str, ...],
    table: list[tuple[str, str, int, str, int]],
    span_kinds: frozenset[str],
    openinference_kinds: dict[str, str],
    operations: dict[str, str],
    otel_kinds: dict[int, str],
    statuses: dict[int, str],
    dumps: Callable[[Any], bytes],
    price: Callable[..., tuple[float | None, bool]],
    truncated_marker: str,
    name_length: int,
    tag_length: int,
    max_tags: int,
) -> None: ...
def map_spans(
    spans: Iterable[OtlpSpan],
    options: tuple[bool, int, int, str | None, Pricer],
    seen: set[tuple[str, str]] = ...,
    /,
) -> list[tuple[Any, ...]]: ...
