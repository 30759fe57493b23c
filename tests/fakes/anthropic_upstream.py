"""A fake Anthropic Messages API: a real aiohttp server on 127.0.0.1 speaking the wire format.

It checks what the real API checks that matters to Keel (x-api-key, anthropic-version,
max_tokens, alternating roles), records every request, and answers by echoing the last user
text. With tools, a last user text `call NAME {json}` is answered with a tool_use block; a turn
of tool results is answered with `tool said: ...`; `refuse ...` gets stop_reason refusal.
Models named `*thinking*` add a thinking block; a cached system prompt (a block with
cache_control) or a `*cache*` model reports cache reads 3 and writes 2.

`fail_next(fault)` makes the next request(s) fail: http_400, http_401, http_429 (Retry-After: 2),
http_500, http_529, html_502, invalid_json, reset, stream_break (connection dropped midway),
stream_truncate (clean end without message_stop), stream_error_first, stream_error_mid.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

API_KEY = "sk-ant-fake-secret-0123456789"

_HTTP_ERRORS = {
    400: ("invalid_request_error", "messages: field required"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission"),
    404: ("not_found_error", "model: not found"),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, default = _HTTP_ERRORS.get(status, ("api_error", "Internal server error"))
    return {"type": "error", "error": {"type": kind, "message": message or default}}


def _text_of(content: Any, *, with_tool_results: bool = False) -> str:
    if isinstance(content, str):
        return content
    out = []
    for block in content or []:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_result" and with_tool_results:
            out.append(_text_of(block.get("content")))
    return " ".join(out)


def _words(text: str) -> int:
    return len(text.split())


class AnthropicUpstream:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self._faults: list[str] = []
        self._runner: web.AppRunner | None = None
        self._ids = 0
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, fault: str, count: int = 1) -> None:
        self._faults.extend([fault] * count)

    # -- request handling

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            Recorded(request.path, dict(request.query), dict(request.headers), body)
        )
        fault = self._faults.pop(0) if self._faults else None
        early = self._fault_response(request, fault)
        if early is not None:
            return early
        problem = self._check(request, body)
        if problem is not None:
            return problem
        self._ids += 1
        message = self._answer(body)
        if body.get("stream"):
            return await self._stream(request, message, fault)
        if fault == "invalid_json":
            return web.Response(
                body=b'{"type": "message", "content": [', content_type="application/json"
            )
        return web.json_response(message)

    def _fault_response(self, request: web.Request, fault: str | None) -> web.Response | None:
        if fault is None:
            return None
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if fault == "html_502":
            html = "<html><head><title>502 Bad Gateway</title></head><body>bad</body></html>"
            return web.Response(status=502, text=html, content_type="text/html")
        if fault.startswith("http_"):
            status = int(fault[5:])
            headers = {"retry-after": "2"} if status == 429 else {}
            return web.json_response(error_body(status), status=status, headers=headers)
        return None

    def _check(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return web.json_response(error_body(401), status=401)
        if "anthropic-version" not in request.headers:
            return web.json_response(
                error_body(400, "anthropic-version: header is required"), status=400
            )
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return web.json_response(error_body(400, f"{field}: Field required"), status=400)
        roles = [m["role"] for m in body["messages"]]
        if any(a == b for a, b in itertools.pairwise(roles)) or roles[:1] != ["user"]:
            return web.json_response(
                error_body(400, "messages: roles must alternate, starting with user"), status=400
            )
        return None

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]
        text = _text_of(last["content"])
        blocks: list[dict[str, Any]] = []
        stop, stop_seq = "end_turn", None
        if "thinking" in body["model"]:
            blocks.append({"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"})
        if body.get("tools") and text.startswith("call "):
            name, _, args = text[5:].partition(" ")
            blocks.append({"type": "text", "text": f"Calling {name}."})
            tool = {"type": "tool_use", "id": f"toolu_{self._ids:04d}", "name": name}
            blocks.append({**tool, "input": json.loads(args or "{}")})
            stop = "tool_use"
        elif text.startswith("refuse"):
            stop = "refusal"
        else:
            if not text:
                text = "tool said: " + _text_of(last["content"], with_tool_results=True)
            reply, stop, stop_seq = self._limit(text, body)
            blocks.append({"type": "text", "text": reply})
        return {
            "id": f"msg_fake{self._ids:04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"] + "-20250101",
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": stop_seq,
            "usage": self._usage(body, blocks),
        }

    @staticmethod
    def _limit(text: str, body: dict[str, Any]) -> tuple[str, str, str | None]:
        for seq in body.get("stop_sequences") or []:
            if seq in text:
                return text[: text.index(seq)], "stop_sequence", seq
        words = text.split(" ")
        if len(words) > body["max_tokens"]:
            return " ".join(words[: body["max_tokens"]]), "max_tokens", None
        return text, "end_turn", None

    @staticmethod
    def _usage(body: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, int]:
        system = body.get("system") or ""
        cached = "cache" in body["model"] or (
            isinstance(system, list) and any("cache_control" in b for b in system)
        )
        prompt = _words(_text_of(system)) + sum(
            _words(_text_of(m["content"], with_tool_results=True)) for m in body["messages"]
        )
        output = sum(
            _words(b.get("text", "")) + (5 if b["type"] == "tool_use" else 0) for b in blocks
        )
        return {
            "input_tokens": prompt,
            "output_tokens": output,
            "cache_read_input_tokens": 3 if cached else 0,
            "cache_creation_input_tokens": 2 if cached else 0,
        }

    # -- streaming

    async def _stream(
        self, request: web.Request, message: dict[str, Any], fault: str | None
    ) -> web.StreamResponse:
        events = _events(message)
        if fault == "stream_error_first":
            events = [_error_event()]
        elif fault == "stream_error_mid":
            events = [*events[:4], _error_event()]
        elif fault == "stream_truncate":
            events = events[:-1]
        elif fault == "invalid_json":
            events = [("message_start", None)]
        resp = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        await resp.prepare(request)
        for index, (name, data) in enumerate(events):
            if fault == "stream_break" and index == 4:
                assert request.transport is not None
                request.transport.close()
                return resp
            payload = b"{not json" if data is None else json.dumps(data).encode()
            await resp.write(b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n")
        await resp.write_eof()
        return resp


def _error_event() -> tuple[str, dict[str, Any]]:
    return ("error", error_body(529))


def _events(message: dict[str, Any]) -> list[tuple[str, Any]]:
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    events: list[tuple[str, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        events.extend(_block_events(index, block))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[str, Any]]:
    kind = block["type"]
    if kind == "text":
        empty: dict[str, Any] = {"type": "text", "text": ""}
        words = block["text"].split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    elif kind == "tool_use":
        empty = {**block, "input": {}}
        raw = json.dumps(block["input"])
        cut = len(raw) // 2
        deltas = [
            {"type": "input_json_delta", "partial_json": ""},
            {"type": "input_json_delta", "partial_json": raw[:cut]},
            {"type": "input_json_delta", "partial_json": raw[cut:]},
        ]
    else:
        empty = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block["thinking"]},
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    out: list[tuple[str, Any]] = [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": empty},
        )
    ]
    for delta in deltas:
        out.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
    out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out
