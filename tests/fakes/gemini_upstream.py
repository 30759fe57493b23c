"""A fake Gemini API (AI Studio, v1beta): a real aiohttp server on 127.0.0.1, same wire format.

Routes: `models/{model}:generateContent`, `:streamGenerateContent?alt=sse` and
`:batchEmbedContents`. Like the real API it answers a wrong `x-goog-api-key` with 400
API_KEY_INVALID and checks that every function call turn is followed by as many function
responses. It records every request and echoes the last user text; with tools, `call NAME {json}`
gets a functionCall; a turn of function responses gets `tool said: ...`; `unsafe ...` gets
finishReason SAFETY and `blocked ...` a promptFeedback.blockReason with no candidates. Models
named `*thinking*` report thoughtsTokenCount 4 and sign function calls; `*cache*` models report
cachedContentTokenCount 3.

`fail_next(fault)`: http_400, http_401, http_429 (Retry-After: 2), http_500, http_503, html_502,
invalid_json, reset, stream_break, stream_truncate (clean end without a finishReason),
stream_error_first, stream_error_mid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

API_KEY = "AIza-fake-gemini-secret-0123456789"

_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/x is not found for API version v1beta"),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


def error_body(code: int, message: str | None = None) -> dict[str, Any]:
    status, default = _STATUS.get(code, ("INTERNAL", "An internal error has occurred."))
    return {"error": {"code": code, "message": message or default, "status": status}}


def _error(code: int, message: str | None = None, **headers: str) -> web.Response:
    return web.json_response(error_body(code, message), status=code, headers=headers)


_BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
}


def _words(text: str) -> int:
    return len(text.split())


def _parts_text(parts: list[dict[str, Any]]) -> str:
    return " ".join(p["text"] for p in parts if "text" in p)


class GeminiUpstream:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.base_url = ""
        self._faults: list[str] = []
        self._runner: web.AppRunner | None = None
        self._ids = 0

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1beta/models/{spec}", self._route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1beta"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, fault: str, count: int = 1) -> None:
        self._faults.extend([fault] * count)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            Recorded(request.path, dict(request.query), dict(request.headers), body)
        )
        fault = self._faults.pop(0) if self._faults else None
        early = _fault_response(request, fault)
        if early is not None:
            return early
        if request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response(_BAD_KEY, status=400)
        model, _, method = request.match_info["spec"].partition(":")
        self._ids += 1
        if method == "batchEmbedContents":
            return _embed(model, body)
        problem = _check(body)
        if problem is not None:
            return problem
        answer = self._answer(model, body)
        if method == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await _stream(request, answer, fault)
        if method != "generateContent":
            return _error(404, f"method {method} is not supported by the fake")
        if fault == "invalid_json":
            return web.Response(body=b'{"candidates": [', content_type="application/json")
        return web.json_response(answer)

    def _answer(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        last = body["contents"][-1]
        text = _parts_text(last["parts"])
        config = body.get("generationConfig") or {}
        thinking = "thinking" in model
        answer: dict[str, Any] = {"modelVersion": f"{model}-001", "responseId": f"resp{self._ids}"}
        candidate: dict[str, Any] = {"content": {"role": "model"}, "index": 0}
        if body.get("tools") and text.startswith("call "):
            name, _, args = text[5:].partition(" ")
            call: dict[str, Any] = {
                "functionCall": {"name": name, "args": json.loads(args or "{}")}
            }
            if thinking:
                call["thoughtSignature"] = f"sig-{self._ids}"
            candidate.update(content={"role": "model", "parts": [call]}, finishReason="STOP")
        elif text.startswith("blocked"):
            answer["promptFeedback"] = {"blockReason": "SAFETY"}
        elif text.startswith("unsafe"):
            candidate = {"finishReason": "SAFETY", "index": 0}
        else:
            if not text:
                responses = [p["functionResponse"]["response"] for p in last["parts"]]
                text = "tool said: " + " ".join(str(r.get("content", r)) for r in responses)
            reply, reason = _limit(text, config)
            candidate.update(
                content={"role": "model", "parts": [{"text": reply}]}, finishReason=reason
            )
        if "promptFeedback" not in answer:
            count = config.get("candidateCount", 1)
            answer["candidates"] = [{**candidate, "index": i} for i in range(count)]
        answer["usageMetadata"] = _usage(model, body, answer.get("candidates", []), thinking)
        return answer


def _fault_response(request: web.Request, fault: str | None) -> web.Response | None:
    if fault is None:
        return None
    if fault == "reset":
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=500)
    if fault == "html_502":
        html = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(status=502, text=html, content_type="text/html")
    if fault.startswith("http_"):
        code = int(fault[5:])
        return _error(code, **({"retry-after": "2"} if code == 429 else {}))
    return None


def _check(body: dict[str, Any]) -> web.Response | None:
    contents = body.get("contents")
    if not contents:
        return _error(400, "* GenerateContentRequest.contents: contents is not specified")
    for turn, following in zip(contents, [*contents[1:], None], strict=True):
        if turn.get("role") not in ("user", "model"):
            return _error(400, f"Please use a valid role: user, model. Got {turn.get('role')}")
        calls = sum("functionCall" in p for p in turn["parts"])
        answers = sum("functionResponse" in p for p in (following or {}).get("parts", []))
        if calls and following is not None and calls != answers:
            return _error(
                400,
                "Please ensure that the number of function response parts is equal to "
                "the number of function call parts of the function call turn.",
            )
    return None


def _limit(text: str, config: dict[str, Any]) -> tuple[str, str]:
    for seq in config.get("stopSequences") or []:
        if seq in text:
            return text[: text.index(seq)], "STOP"
    words = text.split(" ")
    limit = config.get("maxOutputTokens")
    if limit is not None and len(words) > limit:
        return " ".join(words[:limit]), "MAX_TOKENS"
    return text, "STOP"


def _usage(
    model: str, body: dict[str, Any], candidates: list[dict[str, Any]], thinking: bool
) -> dict[str, Any]:
    system = (body.get("systemInstruction") or {}).get("parts") or []
    prompt = _words(_parts_text(system)) + sum(
        _words(_parts_text(c["parts"])) for c in body["contents"]
    )
    output = 0
    for cand in candidates:
        for part in (cand.get("content") or {}).get("parts") or []:
            output += _words(part.get("text", "")) + (5 if "functionCall" in part else 0)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": output}
    if thinking:
        usage["thoughtsTokenCount"] = 4
    if "cache" in model:
        usage["promptTokenCount"] = prompt + 3
        usage["cachedContentTokenCount"] = 3
    usage["totalTokenCount"] = sum(v for k, v in usage.items() if k != "cachedContentTokenCount")
    return usage


def _embed(model: str, body: dict[str, Any]) -> web.Response:
    embeddings = []
    for request in body.get("requests") or []:
        if request.get("model") != f"models/{model}":
            return _error(400, "Model name in the requests must match the URL.")
        text = _parts_text(request["content"]["parts"])
        values = [float(len(text)), float(_words(text)), 0.5]
        size = request.get("outputDimensionality")
        if size:
            values = (values + [0.0] * size)[:size]
        embeddings.append({"values": values})
    return web.json_response({"embeddings": embeddings})


def _chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream of an answer: one chunk per word (or per function call), usage on the last."""
    base = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
    usage = answer["usageMetadata"]
    early_usage = {
        "promptTokenCount": usage["promptTokenCount"],
        "totalTokenCount": usage["promptTokenCount"],
    }
    if "candidates" not in answer:
        return [{**base, "promptFeedback": answer["promptFeedback"], "usageMetadata": usage}]
    first = answer["candidates"][0]
    parts = (first.get("content") or {}).get("parts") or []
    pieces: list[dict[str, Any]] = []
    for part in parts:
        if "text" in part:
            words = part["text"].split(" ")
            pieces.extend({"text": w if i == 0 else " " + w} for i, w in enumerate(words))
        else:
            pieces.append(part)
    chunks = []
    for piece in pieces or [None]:
        cands = [
            {"content": {"role": "model", "parts": [piece] if piece else []}, "index": c["index"]}
            for c in answer["candidates"]
        ]
        chunks.append({**base, "candidates": cands, "usageMetadata": early_usage})
    for cand, final in zip(chunks[-1]["candidates"], answer["candidates"], strict=True):
        cand["finishReason"] = final["finishReason"]
    chunks[-1]["usageMetadata"] = usage
    return chunks


async def _stream(
    request: web.Request, answer: dict[str, Any], fault: str | None
) -> web.StreamResponse:
    datas: list[bytes] = [json.dumps(c).encode() for c in _chunks(answer)]
    overloaded = json.dumps(error_body(503)).encode()
    if fault == "stream_error_first":
        datas = [overloaded]
    elif fault == "stream_error_mid":
        datas = [datas[0], overloaded]
    elif fault == "stream_truncate":
        datas = datas[:-1]
    elif fault == "invalid_json":
        datas = [b"{not json"]
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for index, data in enumerate(datas):
        if fault == "stream_break" and index == 1:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(b"data: " + data + b"\r\n\r\n")
    await resp.write_eof()
    return resp
