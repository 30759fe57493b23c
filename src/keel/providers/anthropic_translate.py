"""OpenAI chat-completions <-> Anthropic Messages translation: pure functions, no I/O.

Request side: system and developer messages become the top-level `system`; user, assistant and
tool messages become alternating `user`/`assistant` turns (Anthropic rejects two turns of the
same role in a row, so consecutive ones are merged, and tool results ride in a user turn);
content parts, tools, tool_choice and the sampling fields are renamed to Anthropic's names.

A text content part carrying `cache_control` keeps it (the convention other gateways use), which
is how a client asks Anthropic to cache a prompt prefix through an OpenAI-shaped request.

OpenAI fields with no Anthropic counterpart are dropped rather than passed on, because Anthropic
rejects unknown fields and the rest of the request still means the same thing: frequency and
presence penalties, logit_bias, logprobs, seed, service_tier, store, modalities, audio,
prediction, reasoning_effort and `response_format`. Anthropic has no JSON mode, so
`response_format` (json_object or json_schema) is not enforced: a client that needs JSON must ask
for it in the prompt (or use a forced tool call, which is what the schema would become).

Response side: text blocks join into `message.content`, tool_use blocks become `tool_calls`,
thinking blocks are left out, and usage counts the cache reads and writes into the prompt total
because Anthropic's `input_tokens` excludes them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from keel.providers.base import UpstreamError, Usage
from keel.providers.translated import tool_arguments

__all__ = [
    "finish_reason",
    "openai_usage",
    "to_chat_completion",
    "to_messages_request",
    "usage_from",
]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(400, f"provider anthropic {message}", type="invalid_request_error")


def to_messages_request(body: Mapping[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat-completions body."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad_request("supports n=1 only")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _bad_request("needs `messages` to be a list")
    out: dict[str, Any] = {"model": body["model"], "messages": _turns(messages)}
    system = _system(messages)
    if system:
        out["system"] = system
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    # Anthropic requires max_tokens where OpenAI does not
    out["max_tokens"] = max_tokens or default_max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(src) is not None:
            out[dst] = body[src]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    _add_tools(out, body)
    return out


def _system(messages: list[Any]) -> str | list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg, dict) and msg.get("role") in ("system", "developer"):
            blocks.extend(b for b in _content_blocks(msg.get("content")) if b["type"] == "text")
    if any("cache_control" in b for b in blocks):
        return blocks  # only the block form can carry cache_control
    return "\n\n".join(b["text"] for b in blocks)


def _turns(messages: list[Any]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for msg in messages:
        if not isinstance(msg, dict):
            raise _bad_request("needs each message to be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            blocks, turn_role = _content_blocks(msg.get("content")), "user"
        elif role == "assistant":
            blocks, turn_role = _assistant_blocks(msg), "assistant"
        elif role == "tool":
            blocks, turn_role = [_tool_result(msg)], "user"
        else:
            raise _bad_request(f"does not accept messages with role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    return turns


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad_request("needs message content to be a string or a list of parts")
    return [block for part in content if (block := _part_block(part)) is not None]


def _part_block(part: Any) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "refusal"):
        text = part.get(kind) or ""
        if not text:
            return None  # Anthropic rejects empty text blocks
        block: dict[str, Any] = {"type": "text", "text": text}
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        return block
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _image_block(str(url or ""))
    raise _bad_request(f"does not accept content parts of type {kind!r}")


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise _bad_request("accepts data: image URLs only when base64-encoded")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad_request("accepts image URLs only as data: or http(s) URLs")


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _content_blocks(msg.get("content"))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": _arguments(fn.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    parsed = tool_arguments(raw)
    if parsed is None:
        raise _bad_request("needs tool call arguments to be a JSON object")
    return parsed


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _content_blocks(content)
    return block


def _add_tools(out: dict[str, Any], body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    out["tools"] = [_tool(t) for t in tools]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    out["tool_choice"] = choice


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise _bad_request("accepts only tools of type 'function'")
    fn = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": fn.get("name"),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None:
        return {"type": "auto"}
    if isinstance(choice, str) and choice in _TOOL_CHOICE:
        return {"type": _TOOL_CHOICE[choice]}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name")}
    raise _bad_request(f"does not understand tool_choice {choice!r}")


def finish_reason(stop_reason: Any) -> str:
    return _FINISH.get(str(stop_reason), "stop")


def usage_from(raw: Any, into: Usage | None = None) -> Usage:
    """Keel's Usage from an Anthropic `usage` object (fields it lacks keep their old value)."""
    usage = into if into is not None else Usage()
    if not isinstance(raw, dict):
        return usage
    fresh = raw.get("input_tokens")
    read = raw.get("cache_read_input_tokens")
    write = raw.get("cache_creation_input_tokens")
    if read is not None:
        usage.cached_tokens = read
    if write is not None:
        usage.cache_write_tokens = write
    if fresh is not None:
        usage.input_tokens = fresh + (usage.cached_tokens or 0) + (usage.cache_write_tokens or 0)
    if raw.get("output_tokens") is not None:
        usage.output_tokens = raw["output_tokens"]
    return usage


def openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens or 0},
    }


def to_chat_completion(msg: Mapping[str, Any], model: str) -> tuple[dict[str, Any], str, Usage]:
    """The chat.completion body, its text and its usage for an Anthropic message."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block))
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    usage = usage_from(msg.get("usage"))
    body = {
        "id": msg.get("id") or "chatcmpl-anthropic",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(msg.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(usage),
    }
    return body, text, usage


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {
            "name": block.get("name"),
            "arguments": orjson.dumps(block.get("input") or {}).decode(),
        },
    }
