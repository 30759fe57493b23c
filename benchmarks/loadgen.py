"""A closed-loop HTTP/1.1 load generator cheap enough that the server is always the bottleneck.

Each of C keep-alive connections is an asyncio Protocol that writes a pre-built request, parses
only what it must of the response (status, Content-Length or chunked framing) and sends the next
request from inside `data_received`, so no task switch sits between two requests. It records
each request's latency and the time to its first body byte (perf_counter, seconds).

    python benchmarks/loadgen.py http://127.0.0.1:9100/v1/chat/completions -c 50 -d 10 [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass, field
from time import perf_counter
from typing import cast
from urllib.parse import urlsplit

import orjson

__all__ = ["Result", "build_request", "chat_body", "percentile", "run_load"]

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)

# Response parser states.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER = range(5)


def chat_body(model: str, stream: bool = False) -> bytes:
    """A typical small chat request (~300 bytes)."""
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
            {"role": "user", "content": "In one sentence, what does an LLM gateway do?"},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def build_request(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {parts.netloc}",
        "content-type: application/json",
        "accept: */*",
        f"content-length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[int(rank) - 1]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    ttfb: list[float] = field(default_factory=list)  # seconds to the first body byte
    errors: int = 0  # non-200 answers and broken connections
    elapsed: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        out = {
            "requests": float(self.completed),
            "errors": float(self.errors),
            "rps": self.rps,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p90_ms": percentile(lat, 90) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
        }
        if self.ttfb:
            ttfb = sorted(self.ttfb)
            out |= {
                "ttfb_p50_ms": percentile(ttfb, 50) * 1e3,
                "ttfb_p90_ms": percentile(ttfb, 90) * 1e3,
                "ttfb_p99_ms": percentile(ttfb, 99) * 1e3,
            }
        return out


class _Run:
    """Shared state of one load run: the budget of requests, the clock and the results."""

    def __init__(self, request: bytes, budget: int, deadline: float) -> None:
        self.request = request
        self.budget = budget
        self.deadline = deadline
        self.result = Result()
        self.closes = _CLOSE.search(request[: request.find(_HEAD_END)]) is not None
        self.active = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take(self) -> bool:
        if self.budget <= 0 or perf_counter() >= self.deadline:
            return False
        self.budget -= 1
        return True

    def finished_one(self) -> None:
        self.active -= 1
        if self.active == 0 and not self.done.done():
            self.done.set_result(None)


class _Conn(asyncio.Protocol):
    def __init__(self, run: _Run, ttfb: bool) -> None:
        self.run = run
        self.want_ttfb = ttfb
        self.transport: asyncio.Transport | None = None
        self.in_flight = False
        self.closed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reset()

    def _reset(self) -> None:
        self.buf = b""
        self.state = _HEAD
        self.remaining = 0
        self.status = 0
        self.close_after = self.run.closes
        self.t_first = 0.0
        self.t0 = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send_next(self) -> bool:
        if self.transport is None or not self.run.take():
            return False
        self._reset()
        self.in_flight = True
        self.t0 = perf_counter()
        self.transport.write(self.run.request)
        return True

    def data_received(self, data: bytes) -> None:
        if self.state == _BODY and not self.buf:
            # Fast path for Content-Length bodies: count the bytes, keep none.
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                return
            self.remaining = 0
            self._complete()
            return
        self.buf = self.buf + data if self.buf else data
        self._parse()

    def _body_started(self) -> None:
        if self.t_first == 0.0:
            self.t_first = perf_counter()

    def _parse(self) -> None:  # noqa: C901 - one state machine reads best in one place
        while True:
            buf = self.buf
            if self.state == _HEAD:
                end = buf.find(_HEAD_END)
                if end < 0:
                    return
                head = buf[:end]
                self.status = int(head[9:12])
                self.close_after = self.close_after or _CLOSE.search(head) is not None
                self.buf = buf = buf[end + 4 :]
                if _CHUNKED.search(head) is not None:
                    self.state = _CHUNK_SIZE
                else:
                    m = _CONTENT_LENGTH.search(head)
                    self.remaining = int(m.group(1)) if m else 0
                    self.state = _BODY
                if buf:
                    self._body_started()
            elif self.state == _BODY:
                if buf:
                    self._body_started()
                if len(buf) < self.remaining:
                    self.remaining -= len(buf)
                    self.buf = b""
                    return
                self.buf = b""  # a response never carries bytes of the next one here
                self._complete()
                return
            elif self.state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                self._body_started()
                size = int(buf[:end].split(b";", 1)[0], 16)
                self.buf = buf[end + 2 :]
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.state = _CHUNK_DATA
                    self.remaining = size + 2  # the data and its CRLF
            elif self.state == _CHUNK_DATA:
                if len(buf) < self.remaining:
                    return
                self.buf = buf[self.remaining :]
                self.state = _CHUNK_SIZE
            else:  # _TRAILER: usually just the final CRLF
                if buf.startswith(b"\r\n"):
                    self.buf = b""
                    self._complete()
                    return
                end = buf.find(_HEAD_END)
                if end < 0:
                    return
                self.buf = b""
                self._complete()
                return

    def _complete(self) -> None:
        now = perf_counter()
        self.in_flight = False
        result = self.run.result
        result.statuses[self.status] = result.statuses.get(self.status, 0) + 1
        if self.status == 200:
            result.latencies.append(now - self.t0)
            if self.want_ttfb:
                result.ttfb.append((self.t_first or now) - self.t0)
        else:
            result.errors += 1
        if self.close_after:
            assert self.transport is not None
            self.closed = True  # now, not in connection_lost: run_load looks before that runs
            self.transport.close()
            self.run.finished_one()
        elif not self.send_next():
            self.run.finished_one()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed = True
        if self.in_flight:
            self.in_flight = False
            self.run.result.errors += 1
            self.run.result.statuses[0] = self.run.result.statuses.get(0, 0) + 1
            self.run.finished_one()
        if not self.lost.done():
            self.lost.set_result(None)


async def run_load(
    url: str,
    request: bytes,
    connections: int = 1,
    duration: float | None = None,
    requests: int | None = None,
    ttfb: bool = False,
) -> Result:
    """Closed loop: each connection sends its next request as soon as the last one finished.

    Stops after `requests` requests or `duration` seconds, whichever comes first. A connection the
    server closes is reopened, so a run survives `connection: close` answers.
    """
    if duration is None and requests is None:
        raise ValueError("give a duration, a number of requests, or both")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    conns: list[_Conn] = []
    run = _Run(request, requests if requests is not None else 1 << 62, float("inf"))
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: _Conn(run, ttfb), host, port)
        conns.append(proto)
    start = perf_counter()
    run.deadline = start + duration if duration is not None else float("inf")
    while True:
        run.done = loop.create_future()
        for c in conns:
            if c.transport is not None and not c.in_flight and c.send_next():
                run.active += 1
        if run.active == 0:
            break
        await run.done
        # Connections closed by the server: open fresh ones while there is budget left.
        closed = [c for c in conns if c.closed]
        if not closed or not (run.budget > 0 and perf_counter() < run.deadline):
            break
        conns = [c for c in conns if not c.closed]
        for _ in closed:
            _, proto = await loop.create_connection(lambda: _Conn(run, ttfb), host, port)
            conns.append(proto)
    run.result.elapsed = perf_counter() - start
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return run.result


def _print(result: Result) -> None:
    s = result.summary()
    line = (
        f"{int(s['requests'])} requests, {int(s['errors'])} errors, {s['rps']:.0f} req/s; "
        f"latency p50 {s['p50_ms']:.3f} ms, p90 {s['p90_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms"
    )
    if "ttfb_p50_ms" in s:
        line += f"; ttfb p50 {s['ttfb_p50_ms']:.3f} ms, p99 {s['ttfb_p99_ms']:.3f} ms"
    print(line)
    if result.errors:
        print(f"statuses: {result.statuses}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:4000/v1/chat/completions")
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, help="seconds")
    parser.add_argument("-n", "--requests", type=int)
    parser.add_argument("--model", default="fast")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-H", "--header", action="append", default=[], help="'name: value'")
    args = parser.parse_args()
    if args.duration is None and args.requests is None:
        args.duration = 5.0
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    request = build_request(args.url, chat_body(args.model, args.stream), headers)

    async def go() -> Result:
        return await run_load(
            args.url, request, args.connections, args.duration, args.requests, ttfb=args.stream
        )

    try:
        import uvloop
    except ImportError:
        _print(asyncio.run(go()))
    else:
        _print(uvloop.run(go()))


if __name__ == "__main__":
    main()
