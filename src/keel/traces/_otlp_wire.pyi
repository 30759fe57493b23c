"""The C fast path of the OTLP protobuf decoder (built from _otlp_wire.c; see otlp.py)."""

from collections.abc import Callable

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
