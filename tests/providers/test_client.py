"""The upstream HTTP client against raw servers on 127.0.0.1 that answer byte for byte."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from keel.providers.client import (
    ConnectError,
    ProtocolError,
    Timeouts,
    UpstreamClient,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FAST = Timeouts(connect=2, read=2, total=5)


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/x"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient()
    yield c
    await c.close()


Serve = Callable[[Handler], Awaitable[tuple[RawServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[RawServer] = []

    async def start(handler: Handler) -> tuple[RawServer, str]:
        server = RawServer(handler)
        started.append(server)
        return server, await server.start()

    yield start
    for server in started:
        assert server.server is not None
        server.server.close()
        for writer in server.writers:
            writer.transport.abort()
        await server.server.wait_closed()


async def test_keep_alive_reuses_one_connection(client: UpstreamClient, serve: Serve) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(answer(b'{"ok": true}', b"x-thing: 1\r\n"))

    server, url = await serve(handler)
    for _ in range(3):
        resp = await client.request("POST", url, headers={"A": "b"}, body=b"{}", timeouts=FAST)
        assert (resp.status, resp.headers["x-thing"], await resp.read()) == (
            200,
            "1",
            b'{"ok": true}',
        )
    assert server.connections == 1
    assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nA: b\r\n" in seen[0] and b"content-length: 2\r\n" in seen[0]


async def test_a_request_the_server_dropped_unanswered_is_never_sent_again(
    client: UpstreamClient, serve: Serve
) -> None:
    server: RawServer

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"one"))
        await writer.drain()
        await read_request(reader)  # the second request is dropped unanswered

    server, url = await serve(handler)
    first = await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
    assert await first.read() == b"one"
    with pytest.raises(ProtocolError, match="before any answer"):
        await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
    assert server.connections == 1  # a retry could pay for the same completion twice


async def test_chunked_body_is_read_line_by_line_across_chunk_boundaries(
    client: UpstreamClient, serve: Serve
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: a", b"bc\n\nda", b"ta: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await reader.read()

    _, url = await serve(handler)
    resp = await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
    lines = [line async for line in resp.iter_lines()]
    assert lines == [b"data: abc\n", b"\n", b"data: [DONE]\n", b"\n"]
    resp.release()
    assert len(client._idle[next(iter(client._idle))]) == 1  # finished cleanly: pooled


async def test_body_delimited_by_close_and_gzip(client: UpstreamClient, serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\r\n" + gzip.compress(b"hi"))
        await writer.drain()

    _, url = await serve(handler)
    resp = await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
    assert await resp.read() == b"hi"
    assert not client._idle.get(next(iter(client._idle), ("", "", 0)))  # not reusable


async def test_informational_answer_before_the_real_one(
    client: UpstreamClient, serve: Serve
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + answer(b"real"))
        await reader.read()

    _, url = await serve(handler)
    resp = await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
    assert (resp.status, await resp.read()) == (200, b"real")


async def test_read_and_total_timeouts(client: UpstreamClient, serve: Serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(50):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)

    _, url = await serve(silent)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await client.request("POST", url, headers={}, body=b"", timeouts=Timeouts(read=0.2))
    assert loop.time() - started < 1

    _, url = await serve(drip)
    resp = await client.request("POST", url, headers={}, body=b"", timeouts=Timeouts(total=0.5))
    with pytest.raises(TimeoutError):
        await resp.read()  # each chunk comes in time, the whole does not
    assert loop.time() - started < 2


async def test_failures_are_transport_errors(client: UpstreamClient, serve: Serve) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    for handler in (garbage, cut):
        _, url = await serve(handler)
        with pytest.raises(ProtocolError):
            resp = await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
            await resp.read()
    with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1:9:"):
        await client.request("POST", "http://127.0.0.1:9/x", headers={}, body=b"", timeouts=FAST)
    with pytest.raises(ValueError, match="line break"):
        await client.request("POST", url, headers={"x": "a\r\nevil: 1"}, body=b"", timeouts=FAST)


async def test_a_large_stream_is_read_with_backpressure(
    client: UpstreamClient, serve: Serve
) -> None:
    block = b"z" * 65536

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(block) * 64))
        for _ in range(64):
            writer.write(block)
            await writer.drain()

    _, url = await serve(handler)
    resp = await client.request("POST", url, headers={}, body=b"", timeouts=FAST)
    await asyncio.sleep(0.2)  # let the server fill the buffer past the high-water mark
    total = 0
    async for chunk in resp.iter_chunks():
        total += len(chunk)
    assert total == len(block) * 64
