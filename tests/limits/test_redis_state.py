"""RedisState and its connection (`keel.limits.wire`): scripts Redis has forgotten run once,
a cancelled caller's settlement still lands, a hung or dropped connection fails fast and is
opened again, and the URL's credentials and database are used."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from keel.limits import (
    BudgetLedger,
    BudgetSpec,
    LimitError,
    LimitSpec,
    RateLimiter,
    RedisState,
    StateUnavailable,
    lua,
)
from keel.limits.wire import Link, pack

TOTAL = BudgetSpec("key", "k1", 1.00, "total")


async def test_forgotten_scripts_run_by_body_and_each_call_runs_once(
    redis_url: str, prefix: str
) -> None:
    state = RedisState(redis_url, prefix=prefix)
    limiter, ledger = RateLimiter(state), BudgetLedger(state)
    spec = LimitSpec("key", "k1", rpm=10, tpm=1000)
    first = await ledger.reserve([TOTAL], 0.25, rates=limiter.prepare([spec], tokens=10))
    admin = aioredis.Redis.from_url(redis_url)
    await admin.script_flush()
    await admin.script_load(lua.SETTLE)  # one script known, the other not: a mixed batch
    await admin.aclose()
    second, settlement = await asyncio.gather(
        ledger.reserve([TOTAL], 0.25, rates=limiter.prepare([spec], tokens=10)),
        ledger.settle(first, 0.10, tokens=limiter.tokens([spec], 5)),
    )
    assert settlement.charged_usd == 0.10
    assert second.decision is not None
    assert ("x-ratelimit-remaining-requests", "8") in second.decision.headers
    assert ("x-ratelimit-remaining-tokens", "975") in second.decision.headers  # 10 + 5 + 10
    assert await ledger.spend(TOTAL) == (pytest.approx(0.10), pytest.approx(0.25))
    await state.close()


async def test_a_cancelled_settlement_still_lands(redis_url: str, prefix: str) -> None:
    state = RedisState(redis_url, prefix=prefix)
    ledger = BudgetLedger(state)
    reservation = await ledger.reserve([TOTAL], 0.50)
    settling = asyncio.ensure_future(ledger.settle(reservation, 0.20))
    await asyncio.sleep(0)  # the settlement is sent and waits for its reply
    settling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settling
    assert await ledger.spend(TOTAL) == (pytest.approx(0.20), 0.0)
    await state.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts a server on loopback that speaks as `handler` says; gives its redis:// URL."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await handler(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"

    yield start
    for writer in writers:
        writer.transport.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_hung_redis_fails_calls_within_the_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads everything, answers nothing

    state = RedisState(await serve(never_answer), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        await state.ping()
    with pytest.raises(LimitError) as caught:  # the connection is opened again, and hangs again
        await RateLimiter(state).check([LimitSpec("key", "k1", rpm=10)], tokens=0)
    assert caught.value.status == 503
    assert time.monotonic() - started < 1.5
    await state.close()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[tuple[str, Callable[[], None]]]:
    """A TCP proxy to the test Redis, and a function that drops every connection through it."""
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    open_writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        open_writers.extend([writer, up_writer])
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop() -> None:
        for w in open_writers:
            w.transport.abort()
        open_writers.clear()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    database = redis_url.rsplit("/", 1)[1]
    yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/{database}", drop
    drop()
    server.close()


async def test_a_dropped_connection_is_opened_again(
    proxy: tuple[str, Callable[[], None]], prefix: str
) -> None:
    url, drop = proxy
    state = RedisState(url, prefix=prefix)
    limiter = RateLimiter(state)
    spec = [LimitSpec("key", "k1", rpm=10)]
    assert (await limiter.check(spec, tokens=0)).allowed
    drop()
    await asyncio.sleep(0.05)  # the connection notices
    decision = await limiter.check(spec, tokens=0)
    assert ("x-ratelimit-remaining-requests", "8") in decision.headers
    await state.close()


async def test_the_url_gives_the_credentials_and_the_database(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
            writer.write(b"+OK\r\n" * data.count(b"*"))  # one reply per command

    url = await serve(record)
    link = Link(url.replace("//", "//keel:s3cr%40t@").replace("/0", "/3"), timeout=1)
    assert await link.call(pack((b"PING",))) == b"OK"
    assert b"".join(received) == b"".join(
        [pack((b"AUTH", "keel", "s3cr@t")), pack((b"SELECT", 3)), pack((b"PING",))]
    )
    await link.close()
