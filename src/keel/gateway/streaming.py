"""Relaying an open provider stream to the client as server-sent events.

The status line goes out only once the provider has answered, so a failure before the first byte
is a real HTTP error. After it, a failure ends the stream with an SSE error event. A client that
disconnects cancels the upstream call at once; what was seen so far is still recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from keel.gateway.asgi import Receive, Send
from keel.providers.base import ChatStream, UpstreamError

__all__ = ["SSE_HEADERS", "StreamOutcome", "relay"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class StreamOutcome:
    ttft_ms: float | None = None
    chunks: int = 0
    error: UpstreamError | None = None
    disconnected: bool = False


def error_frame(err: UpstreamError) -> bytes:
    payload = {"error": {"message": err.message, "type": err.type, "code": err.code, "param": None}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _pump(stream: ChatStream, send: Send, started: float, out: StreamOutcome) -> None:
    try:
        async for frame in stream:
            if out.ttft_ms is None:
                out.ttft_ms = (time.perf_counter() - started) * 1000.0
            out.chunks += 1
            await send({"type": "http.response.body", "body": frame, "more_body": True})
    except UpstreamError as err:
        out.error = err
        await send({"type": "http.response.body", "body": error_frame(err), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def relay(stream: ChatStream, receive: Receive, send: Send, started: float) -> StreamOutcome:
    """Send every frame of `stream`; return what happened. Always releases the upstream."""
    out = StreamOutcome()
    pump = asyncio.ensure_future(_pump(stream, send, started, out))
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        if not pump.done():
            out.disconnected = True
            pump.cancel()
        else:
            pump.result()  # re-raise a send failure other than a disconnect
    except OSError:
        out.disconnected = True
    finally:
        watch.cancel()
        if not pump.done():
            pump.cancel()
        await asyncio.gather(pump, watch, return_exceptions=True)
        await stream.aclose()
    return out
