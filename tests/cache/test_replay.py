"""Cached answers replayed as OpenAI streams, and live streams assembled into cached answers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from keel.cache import CacheHit, CollectingStream, ReplayStream, StreamCollector
from keel.providers.base import CallContext, ChatStream, Usage
from keel.providers.client import Timeouts
from keel.providers.http import DONE_FRAME
from keel.providers.mock import DEFAULT_CONFIG, MockProvider

TEXT = "The capital of France is Paris.  It sits on the Seine.\n"
USAGE_JSON = {
    "prompt_tokens": 12,
    "completion_tokens": 14,
    "total_tokens": 26,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def completion(*choices: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1_750_000_000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [{"index": i, "logprobs": None, **choice} for i, choice in enumerate(choices)],
        "usage": USAGE_JSON,
    }


TEXT_ANSWER = completion(
    {"message": {"role": "assistant", "content": TEXT, "refusal": None}, "finish_reason": "stop"}
)
TOOL_ANSWER = completion(
    {
        "message": {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris", "x": 1}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "time", "arguments": "{}"},
                },
            ],
        },
        "finish_reason": "tool_calls",
    }
)
TWO_CHOICES = completion(
    {
        "message": {"role": "assistant", "content": "one two", "refusal": None},
        "finish_reason": "stop",
    },
    {
        "message": {"role": "assistant", "content": "three", "refusal": None},
        "finish_reason": "length",
    },
)


async def frames_of(stream: ChatStream) -> list[bytes]:
    return [frame async for frame in stream]


def chunks(frames: list[bytes]) -> list[ChatCompletionChunk]:
    assert frames[-1] == DONE_FRAME
    out = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        out.append(ChatCompletionChunk.model_validate(orjson.loads(frame[6:])))
    return out


@pytest.mark.parametrize(
    "answer", [TEXT_ANSWER, TOOL_ANSWER, TWO_CHOICES], ids=["text", "tools", "n2"]
)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_replay_is_a_valid_stream_that_reassembles_to_the_answer(
    answer: dict[str, Any], include_usage: bool
) -> None:
    usage = Usage(input_tokens=12, output_tokens=14)
    stream = ReplayStream(orjson.dumps(answer), include_usage=include_usage, usage=usage)
    assert isinstance(stream, ChatStream)
    frames = await frames_of(stream)
    parsed = chunks(frames)
    assert all(c.id == "chatcmpl-abc" and c.model == "gpt-4o-2024-08-06" for c in parsed)
    usage_chunks = [c for c in parsed if c.usage is not None]
    if include_usage:
        assert [c.choices for c in usage_chunks] == [[]]
        assert usage_chunks[0].usage.model_dump(exclude_none=True) == USAGE_JSON  # type: ignore[union-attr]
        assert parsed[-1] is usage_chunks[0]
    else:
        assert usage_chunks == []
    collector = StreamCollector(max_bytes=1 << 20)
    for frame in frames:
        collector.feed(frame)
    rebuilt = collector.completion(stream.usage)  # the usage chunk's when there is one
    assert rebuilt is not None
    assert orjson.loads(rebuilt) == answer  # the whole answer, usage included either way
    ChatCompletion.model_validate_json(rebuilt)
    assert (stream.usage, stream.served_model) == (usage, "gpt-4o-2024-08-06")
    contents = [c.message.content or "" for c in ChatCompletion.model_validate(answer).choices]
    assert stream.output_text == "".join(contents)


async def test_the_collector_fills_usage_from_the_stream() -> None:
    """Without include_usage the frames carry no usage: the collector takes it from
    `completion(usage)`, and with none given leaves `usage` out."""
    stream = ReplayStream(orjson.dumps(TEXT_ANSWER), include_usage=False, usage=None)
    collector = StreamCollector(max_bytes=1 << 20)
    for frame in await frames_of(stream):
        collector.feed(frame)
    assert "usage" not in orjson.loads(collector.completion() or b"{}")
    rebuilt = collector.completion(Usage(input_tokens=12, output_tokens=14))
    assert orjson.loads(rebuilt or b"{}")["usage"] == USAGE_JSON


async def test_text_without_spaces_is_still_split_and_whitespace_kept() -> None:
    long_word = "x" * 150
    answer = completion(
        {"message": {"role": "assistant", "content": long_word + "\n\n  "}, "finish_reason": "stop"}
    )
    parsed = chunks(
        await frames_of(ReplayStream(orjson.dumps(answer), include_usage=False, usage=None))
    )
    pieces = [c.choices[0].delta.content for c in parsed if c.choices[0].delta.content]
    assert pieces == ["x" * 64, "x" * 64, "x" * 22 + "\n\n  "]


async def test_replay_for_a_request_honours_its_stream_options() -> None:
    hit = CacheHit(
        orjson.dumps(TEXT_ANSWER), Usage(input_tokens=1), "gpt-4o", "openai", 0.1, "exact"
    )
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    with_usage = chunks(await frames_of(ReplayStream.for_request(hit, asked)))
    without = chunks(await frames_of(ReplayStream.for_request(hit, {"stream": True})))
    assert with_usage[-1].usage is not None
    assert all(c.usage is None for c in without)
    assert len(with_usage) == len(without) + 1


async def test_a_closed_replay_stops() -> None:
    stream = ReplayStream(orjson.dumps(TEXT_ANSWER), include_usage=False, usage=None)
    first = await anext(stream)
    await stream.aclose()
    assert first.startswith(b"data: ")
    assert await frames_of(stream) == []


def ctx() -> CallContext:
    return CallContext(session=None, timeout=Timeouts(total=10), request_id="r1")  # type: ignore[arg-type]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_live_stream_is_collected_into_the_plain_answer(include_usage: bool) -> None:
    """Round trip through the mock provider: collecting its stream gives what its plain call
    answers (ids aside), so a streamed answer can be served to a plain request later."""
    mock = MockProvider(DEFAULT_CONFIG)
    body: dict[str, Any] = {
        "model": "echo",
        "messages": [{"role": "user", "content": "hello there world"}],
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    plain = orjson.loads((await mock.chat(dict(body), ctx())).body)
    collector = StreamCollector(max_bytes=1 << 20)
    stream = CollectingStream(await mock.stream_chat({**body, "stream": True}, ctx()), collector)
    assert isinstance(stream, ChatStream)
    relayed = await frames_of(stream)
    assert relayed[-1] == DONE_FRAME
    assert stream.output_text == "hello there world"
    rebuilt = orjson.loads(collector.completion(stream.usage) or b"{}")
    for answer in (plain, rebuilt):
        answer.pop("created")
        answer["choices"][0]["message"].pop("refusal", None)
    assert rebuilt == plain


async def test_a_broken_or_unfinished_stream_is_not_cacheable() -> None:
    frames = await frames_of(
        ReplayStream(orjson.dumps(TEXT_ANSWER), include_usage=False, usage=None)
    )
    unfinished = StreamCollector(max_bytes=1 << 20)
    for frame in frames[:-1]:  # no [DONE]
        unfinished.feed(frame)
    assert unfinished.completion() is None
    errored = StreamCollector(max_bytes=1 << 20)
    for frame in [*frames[:3], b'data: {"error": {"message": "upstream broke"}}\n\n', DONE_FRAME]:
        errored.feed(frame)
    assert errored.completion() is None
    too_big = StreamCollector(max_bytes=100)
    for frame in frames:
        too_big.feed(frame)
    assert too_big.completion() is None
    no_finish = StreamCollector(max_bytes=1 << 20)
    for frame in [*frames[:2], DONE_FRAME]:
        no_finish.feed(frame)
    assert no_finish.completion() is None
