"""A fake OpenAI API: a real aiohttp server on 127.0.0.1 speaking OpenAI's wire format.

It answers as OpenAI's API reference documents: `chat.completion` objects; SSE streams of
`chat.completion.chunk` ending with `data: [DONE]` (with `stream_options.include_usage`, chunks
carry `"usage": null` and a last chunk with empty `choices` the usage); embedding lists (float or
base64); the model list; errors as `{"error": {message, type, param, code}}`. Azure's deployment
routes answer too (they require `api-key` and `api-version`).

Answers are deterministic: the last user text is echoed, one token per whitespace-separated word;
with `tools`, a last user text `call NAME {json}` gets a tool call; json_object `response_format`
wraps the text as `{"echo": text}`; `n` gives n identical choices. A model named `*reasoning*`
reports reasoning_tokens 5 and cached_tokens 3 (inside the totals, as OpenAI counts them).

`fail_next(fault)` makes the next POST(s) misbehave; FAULTS lists them: http_{400,401,404,429
(Retry-After: 2),500}, html_502, invalid_json, error_200 (an error object with status 200), reset,
hang (until `stop()`), and for streams slow_drip (a chunk a second), stream_break (the connection
drops after 2 chunks), stream_error_first, stream_error_mid (after 2 chunks). On a non-stream
request these become a 1 s delay, a reset, and error_200. `requests` keeps what was asked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import re
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

FAKE_API_KEY = "sk-fake-openai-secret-0123456789"
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini-reasoning", "text-embedding-3-small")
_STREAM_FAULTS = {"slow_drip", "stream_break", "stream_error_first", "stream_error_mid"}
_OTHER = {"html_502", "invalid_json", "error_200", "reset", "hang"}
FAULTS = frozenset({f"http_{s}" for s in (400, 401, 404, 429, 500)} | _STREAM_FAULTS | _OTHER)
_INVALID = "invalid_request_error"
_PREDICTIONS = {"accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_STATUS_ERRORS = {
    400: ("invalid_request_error", None, "Invalid value for 'temperature': must be <= 2."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests per min."),
    500: ("server_error", None, "The server had an error while processing your request."),
}
_HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>\r\n<center><h1>502 Bad"
_HTML_502 += b" Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body></html>\r\n"

FaultOutcome = web.StreamResponse | str | None


@dataclass
class FakeRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    query: dict[str, str]
    json: Any  # None when the body was not JSON


def error_response(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def masked(key: str) -> str:
    """How OpenAI quotes a wrong key back: never whole."""
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "***"


def text_of(content: Any) -> str:
    """A message's text: the content string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(str(p.get("text", "")) for p in parts)
    return ""


def words(text: str) -> int:
    return len(text.split())


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [int.from_bytes(digest[i : i + 4], "big") / 2**31 - 1 for i in range(0, 32, 4)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


class Answer(NamedTuple):
    content: str | None
    tool_call: dict[str, Any] | None
    usage: dict[str, Any]


def answer(body: dict[str, Any]) -> Answer:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    n = int(body.get("n") or 1)
    content: str | None = last
    tool_call = None
    if body.get("tools") and last.startswith("call "):
        name, _, args = last[5:].strip().partition(" ")
        call_id = "call_" + hashlib.sha256(last.encode()).hexdigest()[:24]
        function = {"name": name, "arguments": args.strip() or "{}"}
        tool_call = {"id": call_id, "type": "function", "function": function}
        content, out_words = None, words(name) + words(function["arguments"])
    else:
        if (body.get("response_format") or {}).get("type") == "json_object":
            content = json.dumps({"echo": last})
        out_words = words(content or "")
    reasoning, cached = (5, 3) if "reasoning" in str(body.get("model")) else (0, 0)
    prompt = sum(words(text_of(m.get("content"))) for m in messages) + cached
    completion = out_words * n + reasoning
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, **_PREDICTIONS},
    }
    return Answer(content, tool_call, usage)


class FakeOpenAI:
    """The fake server. `start()` returns its base_url (`http://127.0.0.1:PORT/v1`)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[FakeRequest] = []
        self.usage_in_stream = True
        self.root_url = ""
        self._faults: deque[str] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def fail_next(self, fault: str, count: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        self._faults.extend([fault] * count)

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._azure)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.root_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # wakes hanging and dripping handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _wait_stop(self, seconds: float | None) -> bool:
        """Sleep, cut short by stop(); True if the server is stopping."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _record(self, request: web.Request) -> Any:
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(FakeRequest(request.path, headers, dict(request.query), data))
        return data

    def _auth_error(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("Authorization", "")
        if self.api_key is None or given == f"Bearer {self.api_key}":
            return None
        message = f"Incorrect API key provided: {masked(given.removeprefix('Bearer '))}."
        if not given:
            message = "You didn't provide an API key (as `Authorization: Bearer YOUR_KEY`)."
        return error_response(401, message, _INVALID, "invalid_api_key")

    async def _fault_response(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault.startswith("http_"):
            status = int(fault[5:])
            kind, code, message = _STATUS_ERRORS[status]
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            resp = error_response(status, message.format(key=masked(given)), kind, code)
            if status == 429:
                resp.headers["Retry-After"] = "2"
            return resp
        if fault == "html_502":
            return web.Response(status=502, body=_HTML_502, content_type="text/html")
        if fault == "invalid_json":
            broken = b'{"id": "chatcmpl-1", "choices": ['
            return web.Response(body=broken, content_type="application/json")
        if fault in ("error_200", "stream_error_first", "stream_error_mid"):
            body = {"error": {"message": "The model is overloaded.", "type": "server_error"}}
            return web.json_response(body)
        if fault in ("reset", "stream_break"):
            return _reset(request)
        # hang: answer nothing until the server stops (the client should time out first)
        await self._wait_stop(None)
        return web.Response(status=503)

    async def _take_fault(self, request: web.Request, stream: bool) -> FaultOutcome:
        """The response a queued fault gives, the fault itself for stream faults, or None."""
        if not self._faults:
            return None
        fault = self._faults.popleft()
        if stream and fault in _STREAM_FAULTS:
            return fault
        if fault == "slow_drip":
            await self._wait_stop(1.0)
            return None
        return await self._fault_response(request, fault)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        return self._auth_error(request) or await self._chat_body(request, body)

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        given = request.headers.get("api-key")
        if not given or (self.api_key is not None and given != self.api_key):
            msg = "Access denied due to invalid subscription key or wrong API endpoint."
            return error_response(401, msg, "invalid_request_error", "401")
        if "api-version" not in request.query:
            return error_response(404, "Resource not found", "invalid_request_error", "404")
        if isinstance(body, dict):
            body = {**body, "model": request.match_info["deployment"]}
        if request.path.endswith("/embeddings"):
            return await self._embeddings_body(request, body)
        return await self._chat_body(request, body)

    async def _chat_body(self, request: web.Request, body: Any) -> web.StreamResponse:
        invalid = _invalid_chat(body)
        if invalid is not None:
            return invalid
        fault = await self._take_fault(request, bool(body.get("stream")))
        if isinstance(fault, web.StreamResponse):
            return fault
        result = answer(body)
        if body.get("stream"):
            return await self._stream(request, body, result, fault)
        return web.json_response(self._completion(body, result))

    def _completion(self, body: dict[str, Any], result: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": None}
        if result.tool_call:
            message["tool_calls"] = [result.tool_call]
        finish = "tool_calls" if result.tool_call else "stop"
        choice = {"message": message, "logprobs": None, "finish_reason": finish}
        choices = [{"index": i, **choice} for i in range(int(body.get("n") or 1))]
        head = self._head(body, "chat.completion")
        return {**head, "choices": choices, "usage": result.usage, "service_tier": "default"}

    def _head(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        created = int(time.time())
        fields = {"created": created, "model": body["model"], "system_fingerprint": "fp_fake"}
        return {"id": f"chatcmpl-fake{next(self._ids)}", "object": kind, **fields}

    async def _stream(
        self, request: web.Request, body: dict[str, Any], result: Answer, fault: str | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        if fault == "stream_error_first":
            return await _error_event(resp, "The server is overloaded.")
        for i, frame in enumerate(self._frames(body, result)):
            if i == 2 and fault == "stream_break":
                return _reset(request, resp)
            if i == 2 and fault == "stream_error_mid":
                return await _error_event(resp, "The server had an error while streaming.")
            if i > 0 and fault == "slow_drip" and await self._wait_stop(1.0):
                return resp
            await resp.write(frame)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _frames(self, body: dict[str, Any], result: Answer) -> list[bytes]:
        options = body.get("stream_options") or {}
        with_usage = bool(options.get("include_usage")) and self.usage_in_stream
        base = self._head(body, "chat.completion.chunk")
        if with_usage:
            base["usage"] = None
        frames = []
        for index in range(int(body.get("n") or 1)):
            for delta, finish in _deltas(result):
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                frames.append(_frame({**base, "choices": [choice]}))
        if with_usage:
            frames.append(_frame({**base, "choices": [], "usage": result.usage}))
        return frames

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        return self._auth_error(request) or await self._embeddings_body(request, body)

    async def _embeddings_body(self, request: web.Request, body: Any) -> web.StreamResponse:
        if not isinstance(body, dict) or not body.get("model") or "input" not in body:
            return error_response(400, "'input' and 'model' are required.", "invalid_request_error")
        fault = await self._take_fault(request, False)
        if isinstance(fault, web.StreamResponse):
            return fault
        return web.json_response(embedding_list(body))

    async def _models(self, request: web.Request) -> web.StreamResponse:
        model = {"object": "model", "created": 1700000000, "owned_by": "openai"}
        data = [{"id": m, **model} for m in MODELS]
        return self._auth_error(request) or web.json_response({"object": "list", "data": data})


def _reset(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Drop the connection without finishing the answer (aiohttp then writes nothing more)."""
    if request.transport is not None:
        request.transport.close()
    return resp if resp is not None else web.Response()


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _error_event(resp: web.StreamResponse, message: str) -> web.StreamResponse:
    """An error inside a stream, as OpenAI sends one: an error object, then the end."""
    error = {"message": message, "type": "server_error", "param": None, "code": None}
    await resp.write(_frame({"error": error}))
    await resp.write_eof()
    return resp


def _deltas(result: Answer) -> list[tuple[dict[str, Any], str | None]]:
    """The deltas of one choice, as OpenAI streams them: role, content pieces, finish."""
    if result.tool_call:
        call = result.tool_call
        function = {"name": call["function"]["name"], "arguments": ""}
        head = {"index": 0, "id": call["id"], "type": "function", "function": function}
        args = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
        return [
            ({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}, None),
            ({"tool_calls": [args]}, None),
            ({}, "tool_calls"),
        ]
    pieces = re.findall(r"\s*\S+\s*", result.content or "")
    role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    return [(role, None), *(({"content": p}, None) for p in pieces), ({}, "stop")]


def embedding_list(body: dict[str, Any]) -> dict[str, Any]:
    inputs = _inputs(body["input"])
    data = []
    for i, text in enumerate(inputs):
        vec: Any = vector(text)
        if body.get("encoding_format") == "base64":  # the openai SDK's default
            vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(words(t) for t in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": body["model"], "usage": usage}


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [json.dumps(value)]  # one input given as token ids
    return [v if isinstance(v, str) else json.dumps(v) for v in value or []]


def _invalid_chat(body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return error_response(400, "We could not parse the JSON body of your request.", _INVALID)
    if not body.get("model"):
        return error_response(400, "you must provide a model parameter", _INVALID)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return error_response(400, "Missing required parameter: 'messages'.", _INVALID)
    return None
