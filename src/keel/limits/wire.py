"""One pipelined connection to Redis for the limit scripts: commands out in RESP, replies in
through hiredis, matched to their callers in order.

Why not redis-py's client here: a limit check is one small EVALSHA, and redis-py spent more
per call than Redis spends running the script (argument encoding, a connection taken from the
pool and given back, a pipeline object, a timeout context per reply). Under load that was most
of what limits cost a request. Here the commands of one event-loop turn leave in one write on
one long-lived connection (Redis runs commands one at a time anyway, so one connection loses
nothing), and a call costs a packed command, a future and its share of the write.

Failure handling is what the limits need to fail closed quickly: no connection, a connection
lost, or no reply for `timeout` seconds while calls wait, and every waiting call fails with
`LinkError`; the next call connects again. A call in flight when the connection drops is not
sent again: it may have run. redis-py still parses the URL, so every URL form the cache and
the revocation feed accept works here too (redis://, rediss://, unix://, user, password, db).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from hashlib import sha1
from typing import Any, cast

import hiredis
from redis.connection import parse_url

__all__ = ["Link", "LinkError", "ReplyError", "Script", "pack"]

ReplyError = hiredis.ReplyError  # Redis answered with an error (NOSCRIPT, a script error, ...)


def pack(parts: tuple[Any, ...]) -> bytes:
    """One RESP command from its parts (bytes, str, int, float), packed in C by hiredis."""
    return cast(bytes, hiredis.pack_command(cast(Any, parts)))  # its stub takes 1-tuples only


class LinkError(Exception):
    """Redis could not be reached, or stopped answering."""


class Script:
    """A Lua script, sent by its SHA1 (EVALSHA), and by its body only when Redis has forgotten
    it (after a restart or SCRIPT FLUSH), which also makes Redis remember it again."""

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = sha1(self.body, usedforsecurity=False).hexdigest().encode()
        # The command's parts after the array header "*2\r\n": what `by_body` swaps.
        self._by_sha = pack((b"EVALSHA", self.sha))[4:]
        self._by_body = pack((b"EVAL", self.body))[4:]

    def command(self, keys: list[str], args: list[Any]) -> bytes:
        return pack((b"EVALSHA", self.sha, len(keys), *keys, *args))

    def by_body(self, command: bytes) -> bytes:
        """`command` (from `command`) as EVAL with the script's body."""
        return command.replace(self._by_sha, self._by_body, 1)


_Waiting = tuple["asyncio.Future[Any]", bytes, Script | None]  # a call, until its reply


class _Connection(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._waiting: deque[_Waiting] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._answered = 0  # replies so far: the watchdog's sign of life
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, command: bytes, script: Script | None = None) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._queue(future, command, script)
        return future

    def _queue(self, future: asyncio.Future[Any], command: bytes, script: Script | None) -> None:
        if self.closed:
            future.set_exception(LinkError("connection closed"))
            return
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(command)
        self._waiting.append((future, command, script))

    def _flush(self) -> None:
        if self.closed or self._transport is None:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._transport.write(data)
        if self._watchdog is None:
            self._arm()

    def _arm(self) -> None:
        self._watchdog = self._loop.call_later(self._timeout, self._watch, self._answered)

    def _watch(self, answered: int) -> None:
        # One timer for the whole connection, not one per call: when it fires, calls have
        # waited `timeout` with no reply at all (Redis is hung or the network is gone).
        self._watchdog = None
        if not self._waiting:
            return
        if self._answered == answered:
            self._fail(LinkError(f"no reply from Redis in {self._timeout:g} s"))
        else:
            self._arm()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            reply = self._reader.gets()
            while reply is not False:
                self._answered += 1
                future, command, script = self._waiting.popleft()
                if not isinstance(reply, ReplyError):
                    if not future.done():  # the caller may have stopped waiting (cancelled)
                        future.set_result(reply)
                elif script is not None and str(reply).startswith("NOSCRIPT"):
                    # The script did not run: run it by its body, whether or not the caller
                    # still waits, as the caller counted on it running.
                    self._queue(future, script.by_body(command), None)
                elif not future.done():
                    future.set_exception(reply)
                reply = self._reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:  # not Redis, or out of step
            self._fail(LinkError(f"bad reply from Redis ({type(exc).__name__})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(LinkError("connection to Redis lost"))

    def _fail(self, error: LinkError) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future, _, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    async def drain(self) -> None:
        """Wait (at most `timeout`) for the calls in flight to be answered."""
        if self._waiting:
            await asyncio.wait([f for f, _, _ in self._waiting], timeout=self._timeout)

    def close(self) -> None:
        self._fail(LinkError("connection closed"))


class Link:
    """Calls to one Redis over one connection, opened at the first call and again after a
    failure. `call` takes a packed command (`pack`, `Script.command`) and returns a future of
    the reply, which raises `ReplyError` for an error reply and `LinkError` when Redis cannot be
    reached in time. A command is sent even if its caller stops waiting (is cancelled): a
    settlement must not be lost to a client that went away."""

    def __init__(self, url: str, *, timeout: float) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        self._options = options
        self._hello: list[bytes] = []  # sent first on every new connection
        password, username = options.get("password"), options.get("username")
        if password is not None:
            auth = (b"AUTH", username, password) if username else (b"AUTH", password)
            self._hello.append(pack(auth))
        if options.get("db"):
            self._hello.append(pack((b"SELECT", int(options["db"]))))
        self._tls = _tls(options) if url.startswith("rediss://") else None
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    def call(self, command: bytes, script: Script | None = None) -> asyncio.Future[Any]:
        """Send `command` (from `script.command` if `script` is given: then a NOSCRIPT answer
        sends it again by the script's body)."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection.send(command, script)
        # Not connected: a task connects and sends, shielded from the caller's cancellation.
        return asyncio.shield(self._send_connecting(command, script))

    async def _send_connecting(self, command: bytes, script: Script | None) -> Any:
        if self._connecting is None:  # callers arriving meanwhile share this attempt
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        connection = await asyncio.shield(self._connecting)
        return await connection.send(command, script)

    def _opened(self, attempt: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._connection = attempt.result()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options

        def protocol() -> _Connection:
            return _Connection(self._timeout)

        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                if "path" in options:
                    _, connection = await loop.create_unix_connection(protocol, options["path"])
                else:
                    host, port = options.get("host", "localhost"), options.get("port", 6379)
                    _, connection = await loop.create_connection(
                        protocol, host, int(port), ssl=self._tls
                    )
                for command in self._hello:
                    await connection.send(command)
        except (OSError, TimeoutError, ReplyError, LinkError) as exc:
            if connection is not None:
                connection.close()
            raise LinkError(f"cannot connect to Redis ({type(exc).__name__})") from exc
        return connection

    async def close(self) -> None:
        """Let the calls in flight finish (settlements, mostly), then close."""
        connection = self._connection
        if connection is not None and not connection.closed:
            await connection.drain()
            connection.close()
        self._connection = None


def _tls(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context of a rediss:// URL, as its ssl_* query options ask."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context
