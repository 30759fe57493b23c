"""A fake OpenAI upstream fast enough that it is never what a benchmark measures.

A raw asyncio Protocol on uvloop speaking HTTP/1.1 keep-alive, with every response pre-built:
`POST /v1/chat/completions` answers a fixed chat.completion (with usage), or, when the body asks
for `"stream": true`, a chunked SSE response of ten chat.completion.chunk frames, a usage chunk
and `data: [DONE]`. Pipelined requests with Content-Length bodies are answered in order.

    python benchmarks/fast_upstream.py --port 9100 [--chunk-delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from typing import cast

import orjson

__all__ = ["COMPLETION", "build_responses", "serve"]

MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1_735_689_600
WORDS = ["Keel", " is", " a", " self", "-hosted", " gateway", " that", " logs", " every", " call."]
USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000001",
    "object": "chat.completion",
    "created": CREATED,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "".join(WORDS),
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
    "service_tier": "default",
    "system_fingerprint": "fp_bench",
}

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
_STREAM = re.compile(rb'"stream"\s*:\s*true')


def _chunk(event: dict[str, object] | None) -> bytes:
    data = b"data: [DONE]\n\n" if event is None else b"data: " + orjson.dumps(event) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _stream_frames() -> list[bytes]:
    base = {
        "id": COMPLETION["id"],
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }
    frames = []
    for i, word in enumerate(WORDS):
        delta: dict[str, object] = {"content": word}
        if i == 0:
            delta = {"role": "assistant", "content": word, "refusal": None}
        last = i == len(WORDS) - 1
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": "stop" if last else None,
        }
        frames.append(_chunk({**base, "choices": [choice], "usage": None}))
    frames.append(_chunk({**base, "choices": [], "usage": USAGE}))
    frames.append(_chunk(None))
    frames.append(b"0\r\n\r\n")
    return frames


def build_responses() -> tuple[bytes, bytes, list[bytes]]:
    """Return (non-streaming response, streaming response head, streaming body chunks)."""
    body = orjson.dumps(COMPLETION)
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"openai-processing-ms: 1\r\nx-request-id: req_bench\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\nx-request-id: req_bench\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    return plain, head, _stream_frames()


PLAIN, STREAM_HEAD, STREAM_FRAMES = build_responses()
STREAM_ALL = STREAM_HEAD + b"".join(STREAM_FRAMES)
_NOT_FOUND_BODY = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_NOT_FOUND_BODY), _NOT_FOUND_BODY)
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; answers each complete request in the buffer, in order."""

    chunk_delay = 0.0

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed stream is being written; later requests wait for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        transport = self.transport
        assert transport is not None
        while True:
            buf = self.buf
            end = buf.find(_HEAD_END)
            if end < 0:
                return
            head = buf[:end]
            m = _CONTENT_LENGTH.search(head)
            if m is None and _CHUNKED.search(head) is not None:
                transport.write(BAD_REQUEST)  # chunked request bodies are not needed here
                transport.close()
                return
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < total:
                return
            body = buf[end + 4 : total]
            self.buf = buf[total:]
            close = _CLOSE.search(head) is not None or head.find(b" HTTP/1.0\r\n") > 0
            if not head.startswith(b"POST /v1/chat/completions"):
                transport.write(NOT_FOUND)
            elif _STREAM.search(body) is None:
                transport.write(PLAIN)
            elif self.chunk_delay <= 0:
                transport.write(STREAM_ALL)
            else:
                self.busy = True
                asyncio.get_running_loop().create_task(self._slow_stream(close))
                return
            if close:
                transport.close()
                return

    async def _slow_stream(self, close: bool) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(STREAM_HEAD)
        for frame in STREAM_FRAMES:
            await asyncio.sleep(self.chunk_delay)
            if transport.is_closing():
                return
            transport.write(frame)
        self.busy = False
        if close:
            transport.close()
        else:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.buf = b""


async def serve(host: str, port: int, chunk_delay_ms: float = 0.0) -> None:
    """Serve until SIGINT or SIGTERM."""
    UpstreamProtocol.chunk_delay = chunk_delay_ms / 1000.0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, host, port, backlog=1024, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fast_upstream listening on http://{host}:{port}/v1", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="pause between stream frames (0: write the whole stream at once)",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # still correct without it, only slower
        asyncio.run(serve(args.host, args.port, args.chunk_delay_ms))
    else:
        uvloop.run(serve(args.host, args.port, args.chunk_delay_ms))


if __name__ == "__main__":
    main()
