"""OpenAI chat-completions <-> Gemini generateContent translation: pure functions, no I/O.

Request side: system and developer messages become `systemInstruction`; user turns keep role
`user`, assistant turns become role `model`, and tool results become `functionResponse` parts in
a user turn (consecutive turns of one role are merged, as Gemini expects a function call's
responses together). The function name a `functionResponse` needs is looked up from the
assistant tool call with the same id. Tool parameters and json_schema response formats are sent
as `parametersJsonSchema` / `responseJsonSchema`, which take JSON Schema as OpenAI clients write
it; the older `parameters` / `responseSchema` fields take an OpenAPI subset and reject common
keywords such as `additionalProperties`.

Gemini 2.5+ models sign their function calls (`thoughtSignature`) and want the signature back
in the next turn; like Google's own OpenAI-compatible endpoint, Keel carries it in the tool
call's `extra_content.google.thought_signature`.

Dropped OpenAI fields (no Gemini counterpart, or not worth a lossy guess): user, logit_bias,
logprobs, top_logprobs, parallel_tool_calls, service_tier, store, modalities, audio,
prediction, reasoning_effort. Images must be data: URLs; Gemini cannot fetch arbitrary URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from keel.providers.base import UpstreamError, Usage
from keel.providers.translated import tool_arguments

__all__ = [
    "ToolCallIds",
    "blocked_error",
    "finish_reason",
    "openai_usage",
    "to_candidate_message",
    "to_generate_request",
    "usage_from",
]

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_MODE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(400, f"provider gemini {message}", type="invalid_request_error")


def to_generate_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The generateContent request for an OpenAI chat-completions body (the model is in the URL)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _bad_request("needs `messages` to be a list")
    out: dict[str, Any] = {"contents": _contents(messages)}
    system = [
        {"text": text}
        for msg in messages
        if isinstance(msg, dict) and msg.get("role") in ("system", "developer")
        for text in _texts(msg.get("content"))
    ]
    if system:
        out["systemInstruction"] = {"parts": system}
    if body.get("tools"):
        out["tools"] = [{"functionDeclarations": [_declaration(t) for t in body["tools"]]}]
        if body.get("tool_choice") is not None:
            out["toolConfig"] = {"functionCallingConfig": _calling_config(body["tool_choice"])}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    return [p["text"] for p in content or [] if isinstance(p, dict) and p.get("text")]


def _contents(messages: list[Any]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, as of this point in the chat
    for msg in messages:
        if not isinstance(msg, dict):
            raise _bad_request("needs each message to be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            parts, turn_role = _user_parts(msg.get("content")), "user"
        elif role == "assistant":
            parts, turn_role = _model_parts(msg, names), "model"
        elif role == "tool":
            parts, turn_role = [_function_response(msg, names)], "user"
        else:
            raise _bad_request(f"does not accept messages with role {role!r}")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    return contents


def _user_parts(content: Any) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_inline_data(str(url or "")))
        else:
            raise _bad_request(f"does not accept content parts of type {kind!r}")
    return parts


def _inline_data(url: str) -> dict[str, Any]:
    header, _, data = url[5:].partition(",") if url.startswith("data:") else ("", "", "")
    mime, _, encoding = header.partition(";")
    if encoding != "base64" or not data:
        raise _bad_request("accepts images only as base64 data: URLs")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _model_parts(msg: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": t} for t in _texts(msg.get("content"))]
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        names[str(call.get("id"))] = str(fn.get("name"))
        part: dict[str, Any] = {
            "functionCall": {"name": fn.get("name"), "args": _arguments(fn.get("arguments"))}
        }
        google = (call.get("extra_content") or {}).get("google") or {}
        if google.get("thought_signature"):
            part["thoughtSignature"] = google["thought_signature"]
        parts.append(part)
    return parts


def _arguments(raw: Any) -> dict[str, Any]:
    parsed = tool_arguments(raw)
    if parsed is None:
        raise _bad_request("needs tool call arguments to be a JSON object")
    return parsed


def _function_response(msg: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    name = names.get(str(msg.get("tool_call_id"))) or msg.get("name")
    if not name:
        raise _bad_request(
            f"got a tool message for unknown tool_call_id {msg.get('tool_call_id')!r}"
        )
    text = "".join(_texts(msg.get("content")))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise _bad_request("accepts only tools of type 'function'")
    fn = tool.get("function") or {}
    out: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("parameters"):
        out["parametersJsonSchema"] = fn["parameters"]
    return out


def _calling_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in _MODE:
        return {"mode": _MODE[choice]}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    raise _bad_request(f"does not understand tool_choice {choice!r}")


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config = {dst: body[src] for src, dst in _GENERATION.items() if body.get(src) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    schema = (
        (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    )
    if schema:
        config["responseJsonSchema"] = schema
    return config


# -- response side


def finish_reason(reason: Any, has_calls: bool) -> str:
    finish = _FINISH.get(str(reason), "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


def blocked_error(data: Mapping[str, Any]) -> UpstreamError | None:
    """The error for a prompt Gemini refused outright (no candidates, a blockReason)."""
    reason = (data.get("promptFeedback") or {}).get("blockReason")
    if data.get("candidates") or not reason:
        return None
    return UpstreamError(
        400,
        f"provider gemini blocked the prompt: {reason}",
        type="invalid_request_error",
        code="content_filter",
    )


def usage_from(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount")
    # tool-use prompt tokens are billed as input but reported apart from the prompt
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=(meta.get("candidatesTokenCount") or 0) + (thoughts or 0),
        cached_tokens=meta.get("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens or 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
    }


class ToolCallIds:
    """Hands out `call_<n>` ids, since Gemini's function calls carry none of their own."""

    def __init__(self) -> None:
        self.count = 0

    def tool_call(self, part: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
        fn = part.get("functionCall") or {}
        call: dict[str, Any] = {} if index is None else {"index": index}
        call.update(
            {
                "id": f"call_{self.count}",
                "type": "function",
                "function": {
                    "name": fn.get("name"),
                    "arguments": orjson.dumps(fn.get("args") or {}).decode(),
                },
            }
        )
        self.count += 1
        if part.get("thoughtSignature"):
            call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
        return call


def to_candidate_message(
    candidate: Mapping[str, Any], ids: ToolCallIds
) -> tuple[dict[str, Any], str]:
    """One OpenAI choice (without its index) and its text, for a Gemini candidate."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            calls.append(ids.tool_call(part))
        elif "text" in part and not part.get("thought"):
            texts.append(part["text"])  # thought summaries stay out of the answer
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    finish = finish_reason(candidate.get("finishReason"), bool(calls))
    return {"message": message, "finish_reason": finish, "logprobs": None}, text
