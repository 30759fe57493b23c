"""The C mapping of spans to rows (`_span_map.c`, in `keel.traces._otlp_wire`) and its oracle.

`mapping.to_row` is the oracle: for every span `to_rows` (in C) returns exactly the reference's
row (compared by repr: types, -0.0 and the attributes' order included), leaves the span as the
reference leaves it, or fails with the same exception; `fast_protobuf_rows` (decoding and
mapping in one go) returns exactly what the reference decoder and mapping make of the body, or
None where the decoder may fall back.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from keel.costs.pricing import Pricer
from keel.traces import mapping, otlp
from keel.traces.mapping import (
    MappingOptions,
    fast_protobuf_rows,
    to_row,
    to_rows,
)
from keel.traces.otlp import Decoded, Limits, MalformedExport, OtlpEvent, OtlpSpan
from tests.conftest import IN_CI
from tests.traces import test_otlp_wire
from tests.traces.otlp_helpers import pb_export, pb_span

needs_fast_path = pytest.mark.skipif(
    not mapping.FAST_PROTOBUF_ROWS, reason="keel.traces._otlp_wire is not built (no C compiler?)"
)

PRICER = Pricer()
LIMITS = Limits()


def test_the_fast_mapping_is_built_in_ci() -> None:
    """CI must never measure (nor test) the reference mapping in its place."""
    if not IN_CI:
        pytest.skip("outside CI the extension is optional")
    assert mapping.FAST_MAP and mapping.FAST_PROTOBUF_ROWS


def reference_rows(spans: list[OtlpSpan], opts: MappingOptions) -> list[tuple[Any, ...]]:
    rows, seen = [], set()
    for span in spans:
        if (span.trace_id, span.span_id) not in seen:
            seen.add((span.trace_id, span.span_id))
            rows.append(to_row(span, opts))
    return rows


def outcome(make: Any) -> str:
    """What a mapping returned (its repr), or the type of what it raised."""
    try:
        return repr(make())
    except Exception as exc:  # the same failure on both sides is the point
        return f"raised {type(exc).__name__}"


def check_spans(spans: list[OtlpSpan], opts: MappingOptions) -> str:
    """Maps deep copies of `spans` in C and in the reference; asserts the same rows (or the same
    failure) and the same spans left behind. Returns the outcome."""
    ours, theirs = copy.deepcopy(spans), copy.deepcopy(spans)
    expected = outcome(lambda: reference_rows(theirs, opts))
    got = outcome(lambda: mapping._otlp_wire.map_spans(ours, mapping._c_options(opts)))
    assert got == expected
    assert repr(ours) == repr(theirs)
    return got


# -- generated spans, with the mapping's own vocabulary and odd values -----------------------------

ODD_TEXT = [
    "", "x", "gpt-4o", "gpt-4o-mini", "openai", "mock", "echo", "azure", "LLM", "chain",
    "cha\u0131n",  # dotless i: upper() makes it "CHAIN"
    "RETRIEVER", "llm", "agent", "²", "12", "0012", "12345678901", "-5", " 7", "1e3",
    "inf", "nan", "1_000", "0.25", "true", "TRUE", "False", "maybe", "a\0b", "y" * 300,
    "a, b,,c ,", "é😀", "[1, 2]",
]  # fmt: skip
ODD_VALUES: list[Any] = [
    *ODD_TEXT, 0, 5, -5, 2**31 - 1, 2**31, 2**40, 2**63 - 1, -(2**63), True, False, 0.0, -0.0,
    1.5, 3.0, 1e10, math.nan, math.inf, -math.inf, 2.5e-7, 12.0, None, [], ["a", " b ", None, 3],
    ["x"] * 70, [[1, 2], {"k": "v"}], {"role": "user"}, {},
]  # fmt: skip
MESSAGE_KEYS = [
    "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "llm.input_messages.1.message.content",
    "llm.input_messages.01.message.content",
    "llm.input_messages.10",
    "llm.input_messages.².message.role",
    "llm.input_messages.1234567.message.role",
    "llm.input_messages.x.y",
    "llm.input_messages.",
    "llm.output_messages.0.message.content",
    "llm.output_messages.0.content",
    "llm.output_messages.3.message.tool_calls.0.name",
]
KEYS = [*mapping._TABLE, *MESSAGE_KEYS, "gen_ai.operation.name", "other", "l", "é"]
OPERATIONS = ["chat", "embeddings", "execute_tool", "invoke_agent", "unknown", 3]


def random_value(rng: random.Random, key: str) -> Any:
    if key == "gen_ai.operation.name":
        return rng.choice(OPERATIONS)
    if key == "keel.span.kind":
        return rng.choice(["llm", "guardrail", "nope", ["llm"], 1])
    if rng.random() < 0.002:
        return 2**70  # too large for JSON: both sides fail alike
    return rng.choice(ODD_VALUES)


def random_attributes(rng: random.Random) -> dict[str, Any]:
    keys = rng.sample(KEYS, rng.randrange(0, 24))
    return {key: random_value(rng, key) for key in keys}


def random_event(rng: random.Random) -> OtlpEvent:
    time_ns = rng.choice([0, 1_700_000_000_123_456_789, 2**64 - 1])
    kind = rng.randrange(4)
    if kind == 0:
        prompt = {"gen_ai.prompt": rng.choice(ODD_VALUES)}
        return OtlpEvent("gen_ai.content.prompt", time_ns, prompt)
    if kind == 1:
        attributes = {"gen_ai.completion": rng.choice(ODD_VALUES)} if rng.random() < 0.8 else {}
        return OtlpEvent("gen_ai.content.completion", time_ns, attributes)
    if kind == 2:
        attributes = {
            "exception.type": rng.choice(ODD_VALUES),
            "exception.message": rng.choice(ODD_VALUES),
        }
        return OtlpEvent("exception", time_ns, attributes)
    return OtlpEvent("other", time_ns, {"k": rng.choice(ODD_VALUES)})


def random_span(rng: random.Random, number: int) -> OtlpSpan:
    links = [{"trace_id": "ab" * 16, "span_id": None, "attributes": {"why": "retry"}}]
    return OtlpSpan(
        trace_id=f"{number % 3:032x}",
        span_id=f"{rng.randrange(4):016x}",  # repeats within a list: the first copy wins
        parent_span_id=rng.choice([None, "12" * 8]),
        name=rng.choice(["chat", "", "n" * 600, "a\0b", "é" * 513]),
        kind=rng.choice([0, 1, 2, 3, 4, 5, 99, -1]),
        start_ns=rng.choice([0, 1_700_000_000_000_000_000, 2**64 - 1, 1_700_000_000_123_456_789]),
        end_ns=rng.choice([0, 1_700_000_000_500_000_000, 2**64 - 1]),
        status_code=rng.choice([0, 1, 2, 7]),
        status_message=rng.choice(["", "", "boom", "a\0b", "e" * 40]),
        attributes=random_attributes(rng),
        scope=rng.choice([("", ""), ("lib", ""), ("lib", "1.0"), ("", "1.0")]),
        events=[random_event(rng) for _ in range(rng.choice([0, 0, 1, 3]))],
        links=rng.choice([[], links]),
        dropped_attributes=rng.choice([0, 0, 3]),
        dropped_events=rng.choice([0, 2]),
        dropped_links=rng.choice([0, 1]),
    )


def random_options(rng: random.Random) -> MappingOptions:
    return MappingOptions(
        pricer=PRICER,
        store_payloads=rng.random() < 0.7,
        payload_max=rng.choice([64 * 1024, 5]),
        text_max=rng.choice([16 * 1024, 3]),
        customer=rng.choice([None, "key-customer"]),
    )


@needs_fast_path
def test_generated_spans_map_exactly_as_the_reference() -> None:
    failures = 0
    for seed in range(3000):
        rng = random.Random(seed)
        spans = [random_span(rng, n) for n in range(rng.choice([1, 1, 4]))]
        failures += check_spans(spans, random_options(rng)).startswith("raised")
    assert failures < 100  # mostly rows: the odd values must not all end in errors


@needs_fast_path
def test_every_attribute_alone_and_with_its_other_names() -> None:
    """Each mapped name with each odd value, alone and beside the field's other names."""
    by_field: dict[str, list[str]] = {}
    for key, (field, _, _) in mapping._TABLE.items():
        by_field.setdefault(field, []).append(key)
    opts = MappingOptions(pricer=PRICER)
    for key, (field, _, _) in mapping._TABLE.items():
        for value in ODD_VALUES:
            span = random_span(random.Random(0), 0)
            span.attributes = {key: value}
            check_spans([span], opts)
            span.attributes = {other: value for other in reversed(by_field[field])}
            span.attributes[key] = "x"
            check_spans([span], opts)


@needs_fast_path
def test_priced_spans_cost_the_same() -> None:
    attributes = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 200,
    }
    span = random_span(random.Random(1), 0)
    span.attributes, span.events = attributes, []
    rows = to_rows([copy.deepcopy(span)], MappingOptions(pricer=PRICER))
    assert rows[0][18] is not None and rows[0][18] > 0
    assert check_spans([span], MappingOptions(pricer=PRICER)) == repr(rows)


# -- whole exports: decoding and mapping in one go -----------------------------------------------


def reference_export(body: bytes, limits: Limits, opts: MappingOptions) -> tuple[str, int] | None:
    """The reference's rows (repr) and span count, or None where the fast path must fall back."""
    out = Decoded()
    flag, otlp.FAST_DECODE = otlp.FAST_DECODE, False
    try:
        spans = list(otlp.protobuf_spans(body, limits, out))
    except MalformedExport:
        return None
    finally:
        otlp.FAST_DECODE = flag
    if out.rejected:
        return None
    return outcome(lambda: reference_rows(spans, opts)), len(spans)


def check_export(body: bytes, limits: Limits, opts: MappingOptions) -> bool:
    """Asserts that the one-go path is the reference or falls back where it may; whether it
    made the rows."""
    expected = reference_export(body, limits, opts)
    try:
        got = fast_protobuf_rows(body, limits, opts)
    except Exception as exc:
        assert expected is not None and expected[0] == f"raised {type(exc).__name__}"
        return True
    if expected is None:
        assert got is None
        return False
    if got is not None:
        assert (repr(got[0]), got[1]) == expected
    return got is not None


@needs_fast_path
def test_generated_exports_decode_and_map_exactly_as_the_reference() -> None:
    made = 0
    for number, (body, limits) in enumerate(test_otlp_wire.corpus(300)):
        made += check_export(body, limits, random_options(random.Random(number)))
    assert made > 200


@needs_fast_path
def test_llm_exports_decode_and_map_exactly_as_the_reference() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        spans = []
        for number in range(rng.choice([1, 3, 8])):
            attributes = {
                key: value
                for key, value in random_attributes(rng).items()
                if value is not None and not (isinstance(value, int) and value > 2**63 - 1)
            }
            spans.append(
                pb_span(
                    f"span {number}",
                    span_id=bytes([1 + rng.randrange(3)]) * 8,  # repeats: the first copy wins
                    attributes=attributes,
                )
            )
        body = pb_export(spans).SerializeToString()
        assert check_export(body, LIMITS, random_options(rng)), "a canonical export fell back"


@needs_fast_path
def test_mutated_exports_never_crash_nor_differ() -> None:
    """The decoder's fuzzing (test_otlp_wire), on the path that maps as it decodes."""
    seeds = [body for body, _ in test_otlp_wire.corpus(60) if 150 < len(body) < 2000][:16]
    seeds.append(test_otlp_wire.sdk_export())
    rng = random.Random(11)
    made = 0
    for case in range(4000):
        body = test_otlp_wire.mutate(rng, seeds[case % len(seeds)])
        limits = test_otlp_wire.SMALL if case % 2 else LIMITS
        made += check_export(body, limits, random_options(rng))
    assert 400 < made < 3600  # both outcomes well exercised


@needs_fast_path
def test_the_benchmarks_export_and_the_sdks_take_the_fast_path() -> None:
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        from ingest import build_template
    finally:
        sys.path.pop(0)
    opts = MappingOptions(pricer=PRICER, customer="c")
    for body in [build_template().data, test_otlp_wire.sdk_export()]:
        assert check_export(body, LIMITS, opts)


@pytest.mark.parametrize("in_c", [True, False])
def test_an_export_mapped_in_slices_keeps_the_first_copy_of_a_span(
    in_c: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if in_c and not mapping.FAST_MAP:
        pytest.skip("keel.traces._otlp_wire is not built (no C compiler?)")
    monkeypatch.setattr(mapping, "FAST_MAP", in_c)
    first, second, third = (random_span(random.Random(n), n) for n in range(3))
    repeat = copy.deepcopy(first)
    repeat.name = "a later copy"
    opts, seen = MappingOptions(pricer=PRICER), set()
    rows = to_rows([first, second], opts, seen) + to_rows([repeat, third], opts, seen)
    assert [row[:2] for row in rows] == [(s.trace_id, s.span_id) for s in (first, second, third)]
    assert seen == {row[:2] for row in rows}


def test_without_the_extension_the_reference_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping, "FAST_MAP", False)
    monkeypatch.setattr(mapping, "FAST_PROTOBUF_ROWS", False)
    span = random_span(random.Random(3), 0)
    opts = MappingOptions(pricer=PRICER)
    assert to_rows([copy.deepcopy(span), copy.deepcopy(span)], opts) == [to_row(span, opts)]
    assert fast_protobuf_rows(pb_export([pb_span()]).SerializeToString(), LIMITS, opts) is None
