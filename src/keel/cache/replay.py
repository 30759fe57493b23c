"""Converting between a cached chat.completion and an OpenAI stream, both ways.

`ReplayStream` serves a cached answer to a client that asked for `stream: true`: it is a
`ChatStream` like any provider's, so the gateway relays it with the same code. `StreamCollector`
goes the other way: fed every frame of a live stream, it assembles the chat.completion that a
plain call would have answered, so streamed answers are cached too. `CollectingStream` wraps a
provider stream and feeds a collector as the frames pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.cache.store import CacheHit
from keel.providers.base import ChatStream, Usage
from keel.providers.http import DONE_FRAME, asked_usage, sse_frame

__all__ = ["CollectingStream", "ReplayStream", "StreamCollector", "usage_json"]

_WORD = re.compile(r"\s*\S+\s*")  # a word with the whitespace around it
_MAX_PIECE = 64  # characters per chunk, for text without spaces (code, CJK, base64)


def usage_json(usage: Usage) -> dict[str, Any]:
    """Keel's `Usage` as OpenAI's `usage` object."""
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens or 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
    }


def _pieces(text: str) -> Iterator[str]:
    """Word-sized pieces that add up to exactly `text`."""
    words = _WORD.findall(text)
    if "".join(words) != text:  # only whitespace: no word to attach it to
        words = [text]
    for word in words:
        for start in range(0, len(word), _MAX_PIECE):
            yield word[start : start + _MAX_PIECE]


class ReplayStream:
    """A cached chat.completion as `chat.completion.chunk` frames, ending with `[DONE]`.

    Per choice: a role chunk, the content (and refusal) in word-sized pieces, each tool call
    as a header delta then its arguments in pieces, a finish chunk. Then a usage chunk, only
    when the client asked with `stream_options.include_usage`. The chunks keep the cached
    answer's id, created time and model. Token logprobs are not replayed."""

    def __init__(self, response: bytes, *, include_usage: bool, usage: Usage | None) -> None:
        self.usage: Usage | None = usage
        data = orjson.loads(response)
        if not isinstance(data, dict):
            raise ValueError("a cached answer must be a chat.completion object")
        model = data.get("model")
        self.served_model: str | None = model if isinstance(model, str) else None
        self._data = data
        self._include_usage = include_usage
        self._parts: list[str] = []
        self._frames = self._generate()
        self._closed = False

    @classmethod
    def for_request(cls, hit: CacheHit, body: Mapping[str, Any]) -> ReplayStream:
        """The replay of `hit` for the client's request `body` (which says whether it wants
        the usage chunk)."""
        return cls(hit.response_bytes, include_usage=asked_usage(body), usage=hit.usage)

    @property
    def output_text(self) -> str:
        return "".join(self._parts)

    @output_text.setter
    def output_text(self, value: str) -> None:
        self._parts = [value]

    def _chunk(self, index: int | None, delta: dict[str, Any], finish: str | None = None) -> bytes:
        head = {
            "id": self._data.get("id"),
            "object": "chat.completion.chunk",
            "created": self._data.get("created"),
            "model": self._data.get("model"),
        }
        if self._data.get("system_fingerprint") is not None:
            head["system_fingerprint"] = self._data["system_fingerprint"]
        if index is None:
            head["choices"] = []
            head["usage"] = delta
        else:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            head["choices"] = [choice]
            if self._include_usage:  # as OpenAI does: every chunk carries `usage`, null
                head["usage"] = None
        return sse_frame(head)

    def _choice(self, choice: dict[str, Any]) -> Iterator[tuple[bytes, str]]:
        index = int(choice.get("index") or 0)
        message = choice.get("message") or {}
        content = message.get("content")
        yield self._chunk(index, {"role": "assistant", "content": "" if content else None}), ""
        if isinstance(content, str):
            for piece in _pieces(content):
                yield self._chunk(index, {"content": piece}), piece
        refusal = message.get("refusal")
        if isinstance(refusal, str):
            for piece in _pieces(refusal):
                yield self._chunk(index, {"refusal": piece}), ""
        for j, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            header = {
                "index": j,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": ""},
            }
            yield self._chunk(index, {"tool_calls": [header]}), ""
            for piece in _pieces(function.get("arguments") or ""):
                delta = {"tool_calls": [{"index": j, "function": {"arguments": piece}}]}
                yield self._chunk(index, delta), ""
        if isinstance(message.get("function_call"), dict):  # the legacy functions API
            yield self._chunk(index, {"function_call": message["function_call"]}), ""
        yield self._chunk(index, {}, choice.get("finish_reason") or "stop"), ""

    def _generate(self) -> Iterator[tuple[bytes, str]]:
        for choice in self._data.get("choices") or ():
            if isinstance(choice, dict):
                yield from self._choice(choice)
        if self._include_usage:
            raw = self._data.get("usage")
            if not isinstance(raw, dict) and self.usage is not None:
                raw = usage_json(self.usage)
            if isinstance(raw, dict):
                yield self._chunk(None, raw), ""
        yield DONE_FRAME, ""

    def __aiter__(self) -> ReplayStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            frame, text = next(self._frames)
        except StopIteration:
            self._closed = True
            raise StopAsyncIteration from None
        self._parts.append(text)
        return frame

    async def aclose(self) -> None:
        self._closed = True


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None


class StreamCollector:
    """Assembles the chat.completion of a live stream from its frames.

    `completion()` answers only for a stream that ended with `[DONE]`, every choice finished,
    no error event and at most `max_bytes` of frames: a broken or partial answer is never
    cached."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.seen_bytes = 0
        self.done = False
        self.failed = False
        self._head: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}

    def feed(self, frame: bytes) -> None:
        """One relayed frame (`data: ...` lines and a blank line; several events are fine)."""
        if self.failed or self.done:
            return
        self.seen_bytes += len(frame)
        if self.seen_bytes > self.max_bytes:
            self.failed = True
            return
        for line in frame.splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self.done = True
                return
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.failed = True
                return
            if not isinstance(chunk, dict) or "error" in chunk:
                self.failed = True
                return
            self._observe(chunk)

    def _observe(self, chunk: dict[str, Any]) -> None:
        for name in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(name) is not None:
                self._head.setdefault(name, chunk[name])
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for raw in chunk.get("choices") or ():
            if not isinstance(raw, dict):
                continue
            choice = self._choices.setdefault(int(raw.get("index") or 0), _Choice())
            delta = raw.get("delta") or {}
            if isinstance(delta.get("content"), str):
                choice.content.append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                choice.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                self._tool_delta(choice, call)
            if raw.get("finish_reason"):
                choice.finish_reason = raw["finish_reason"]

    @staticmethod
    def _tool_delta(choice: _Choice, call: dict[str, Any]) -> None:
        slot = choice.tools.setdefault(
            int(call.get("index") or 0), {"id": None, "type": "function", "name": "", "args": []}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            slot["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            slot["args"].append(function["arguments"])

    def completion(self, usage: Usage | None = None) -> bytes | None:
        """The chat.completion JSON, or None when the stream is not cacheable. `usage` (the
        stream's own count) fills in when the client did not ask for the usage chunk."""
        if not self.done or self.failed or not self._choices:
            return None
        if any(c.finish_reason is None for c in self._choices.values()):
            return None
        choices = []
        for index in sorted(self._choices):
            c = self._choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(c.content) if c.content or not c.tools else None,
                "refusal": "".join(c.refusal) if c.refusal else None,
            }
            if c.tools:
                message["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": t["type"],
                        "function": {"name": t["name"], "arguments": "".join(t["args"])},
                    }
                    for _, t in sorted(c.tools.items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
            )
        out: dict[str, Any] = {
            "id": self._head.get("id"),
            "object": "chat.completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
            "choices": choices,
        }
        if "system_fingerprint" in self._head:
            out["system_fingerprint"] = self._head["system_fingerprint"]
        raw_usage = self._usage or (usage_json(usage) if usage is not None else None)
        if raw_usage is not None:
            out["usage"] = raw_usage
        return orjson.dumps(out)


class CollectingStream:
    """A provider stream that feeds every frame it yields to `collector` on the way."""

    def __init__(self, inner: ChatStream, collector: StreamCollector) -> None:
        self.inner = inner
        self.collector = collector
        self._frames = inner.__aiter__()

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @usage.setter
    def usage(self, value: Usage | None) -> None:
        self.inner.usage = value

    @property
    def served_model(self) -> str | None:
        return self.inner.served_model

    @served_model.setter
    def served_model(self, value: str | None) -> None:
        self.inner.served_model = value

    @property
    def output_text(self) -> str:
        return self.inner.output_text

    @output_text.setter
    def output_text(self, value: str) -> None:
        self.inner.output_text = value

    def __aiter__(self) -> CollectingStream:
        return self

    async def __anext__(self) -> bytes:
        frame = await self._frames.__anext__()
        self.collector.feed(frame)
        return frame

    async def aclose(self) -> None:
        await self.inner.aclose()
