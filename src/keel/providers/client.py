"""A lean HTTP/1.1 client for provider calls: keep-alive pools, httptools parsing, deadlines.

The upstream call is most of what the gateway itself spends per request, so this client does
only what provider APIs need: one exchange at a time per connection, a keep-alive pool per
origin, bodies by Content-Length, chunked or connection close, TLS, and three timeouts
(connect; read, the longest silence; total). It has no cookies, no redirects and no proxies on
purpose: a provider answers directly, and following a redirect with a provider key attached
would hand the key to whoever the redirect names.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = [
    "ConnectError",
    "ProtocolError",
    "Response",
    "Timeouts",
    "TransportError",
    "UpstreamClient",
]

_HIGH_WATER = 1 << 20  # pause reading a stream the consumer is not keeping up with
_MAX_LINE = 4 << 20  # one SSE line longer than this is not an answer any provider gives
_USER_AGENT = "keel"


class TransportError(Exception):
    """The upstream could not be reached, or broke the exchange."""


class ConnectError(TransportError):
    pass


class ProtocolError(TransportError):
    pass


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    read: float = 120.0  # the longest silence while waiting for the answer or between chunks
    total: float = 600.0


@lru_cache(maxsize=1024)
def _target(url: str) -> tuple[tuple[str, str, int], str, str]:
    """((scheme, host, port), request target, Host header) of an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"not an http(s) URL: {scheme}://…")
    port = parts.port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, parts.hostname, port), path, parts.netloc.rpartition("@")[2]


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection, and the state of the exchange it is carrying."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.begin()

    def begin(self) -> None:
        """Reset for a new exchange on this connection."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.received = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: TransportError | None = None
        self.eof_body = False
        self.reusable = False
        self._paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response ({type(exc).__name__})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and self.eof_body and not self.complete:
            self.complete = True  # a body without length or chunking ends with the connection
        elif not self.complete:
            self._fail(
                ProtocolError("the connection closed before the response was complete")
                if self.received
                else ProtocolError("the connection closed before any answer")
            )
        self._wake()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.eof_body = not chunked and "content-length" not in self.headers
        if self.status >= 200:
            self.headers_done = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:  # an informational answer (103 Early Hints): the real one follows
            self.headers = {}
            return
        # Read it now: llhttp resets its flags for the next message once this callback returns.
        self.reusable = self._parser.should_keep_alive()
        # Read it now: llhttp resets its flags for the next message once this callback returns.
        self.reusable = self._parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- for the client -----------------------------------------------------------------------

    def keep_alive(self) -> bool:
        return self.complete and self.reusable and not self.closed and not self.eof_body

    def take(self) -> bytes:
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, within: float) -> None:
        """Wait for progress: headers, a body chunk, the end, or an error."""
        if within <= 0:
            raise TimeoutError
        # A plain timer, not asyncio.timeout(): this runs for every chunk of every stream.
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(within, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _fail(self, exc: TransportError) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer whose status and headers have arrived; the body is read on demand."""

    def __init__(
        self,
        client: UpstreamClient,
        origin: tuple[str, str, int],
        conn: _Connection,
        deadline: float,
        read_timeout: float,
    ) -> None:
        self._client = client
        self._origin = origin
        self._conn = conn
        self._deadline = deadline
        self._read_timeout = read_timeout
        self._released = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        encoding = conn.headers.get("content-encoding", "").lower()
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
        self._inflate = zlib.decompressobj(wbits) if wbits else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def _progress(self) -> None:
        conn = self._conn
        if conn.error is not None:
            raise conn.error
        remaining = self._deadline - conn.loop.time()
        await conn.wait(min(self._read_timeout, remaining))
        if conn.error is not None and not conn.chunks:
            raise conn.error

    def _decode(self, data: bytes) -> bytes:
        if self._inflate is None:
            return data
        try:
            return self._inflate.decompress(data)
        except zlib.error:
            raise ProtocolError("the response body could not be decompressed") from None

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            while not self._conn.complete:
                await self._progress()
            return self._decode(self._conn.take() if self._conn.chunks else b"")
        finally:
            self.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield self._decode(conn.take())
            elif conn.complete:
                return
            else:
                await self._progress()

    async def iter_lines(self) -> AsyncIterator[bytes]:
        """The body line by line (each with its `\\n`); ValueError for an absurdly long line."""
        buffer = bytearray()
        async for chunk in self.iter_chunks():
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                yield bytes(buffer[start : end + 1])
                start = end + 1
            del buffer[:start]
            if len(buffer) > _MAX_LINE:
                raise ValueError("a line of the response is too long")
        if buffer:
            yield bytes(buffer)

    def release(self) -> None:
        """Give the connection back when the exchange finished cleanly, else close it."""
        if self._released:
            return
        self._released = True
        if self._conn.keep_alive() and self._conn.error is None:
            self._client._put(self._origin, self._conn)
        else:
            self._conn.close()


class UpstreamClient:
    def __init__(
        self,
        *,
        max_idle_per_origin: int = 1024,
        idle_timeout: float = 15.0,  # below most servers' keep-alive, to meet few closed ones
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._idle_timeout = idle_timeout
        self._ssl = ssl_context

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _take_idle(self, origin: tuple[str, str, int], now: float) -> _Connection | None:
        pool = self._idle.get(origin)
        while pool:
            conn = pool.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
        return None

    def _put(self, origin: tuple[str, str, int], conn: _Connection) -> None:
        pool = self._idle.setdefault(origin, [])
        if len(pool) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        pool.append(conn)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, origin: tuple[str, str, int], within: float
    ) -> _Connection:
        scheme, host, port = origin
        tls = scheme == "https"
        try:
            async with asyncio.timeout(within):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=self._ssl_context() if tls else None,
                    server_hostname=host if tls else None,
                )
        except (OSError, ssl.SSLError) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            )
            raise ConnectError(f"cannot connect to {host}:{port}: {reason}") from None
        return conn

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        timeouts: Timeouts,
    ) -> Response:
        """Send one request and wait for the status line and headers of its answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        origin, path, host = _target(url)
        message = _head(method, path, host, headers, len(body)) + body
        conn = self._take_idle(origin, loop.time())
        if conn is None:
            remaining = deadline - loop.time()
            conn = await self._connect(loop, origin, min(timeouts.connect, remaining))
        conn.begin()
        assert conn.transport is not None
        conn.transport.write(message)
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    # Never sent again, even on a pooled connection the server may have closed
                    # while idle: a POST to a model that did run would be paid twice.
                    raise conn.error
                await conn.wait(min(timeouts.read, deadline - loop.time()))
        except BaseException:
            conn.close()
            raise
        return Response(self, origin, conn, deadline, timeouts.read)

    async def close(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()


def _head(method: str, path: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {length}"]
    has_agent = False
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lower = name.lower()
        if lower in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        has_agent = has_agent or lower == "user-agent"
        lines.append(f"{name}: {value}")
    if not has_agent:
        lines.append(f"user-agent: {_USER_AGENT}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
