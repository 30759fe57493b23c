"""Checked by mypy --strict in test_tracing_typing.py (never imported by pytest as a test).

`assert_type` pins what @observe gives back; each `type: ignore[...]` is a call that must stay
an error (mypy's warn_unused_ignores fails the check if the decorated function accepted it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, assert_type

import keel.sdk
from keel.sdk import observe


@observe
def plain(a: int, b: str = "x") -> list[str]:
    return [b] * a


@observe(name="fetch", kind="retrieval", capture_output=False)
async def fetch(query: str, *, k: int = 3) -> list[str]:
    return [query] * k


@observe
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@observe(kind="tool")
async def tokens(text: str) -> AsyncIterator[str]:
    for word in text.split():
        yield word


class Service:
    @observe
    def handle(self, request: bytes) -> int:
        return len(request)

    @observe(kind="agent")
    async def plan(self, goal: str) -> str:
        return goal


async def use() -> None:
    assert_type(plain(2), list[str])
    assert_type(plain(2, b="y"), list[str])
    short: Callable[[int], list[str]] = plain  # the default for `b` survives
    full: Callable[[int, str], list[str]] = plain
    assert_type(await fetch("q", k=1), list[str])
    coro: Coroutine[Any, Any, list[str]] = fetch("q")
    coro.close()
    assert_type(list(numbers(3)), list[int])
    assert_type([t async for t in tokens("a b")], list[str])
    assert_type(Service().handle(b"abc"), int)
    plan: Callable[[str], Awaitable[str]] = Service().plan
    assert_type(await plan("win"), str)

    plain("2")  # type: ignore[arg-type]
    plain(1, c=3)  # type: ignore[call-arg]
    await fetch("q", 1)  # type: ignore[call-arg]
    Service().handle("text")  # type: ignore[arg-type]
    observe(kind="chain", bogus=True)  # type: ignore[call-overload]

    with keel.sdk.context(session_id="s", user_id="u", tags=["a"], metadata={"n": 1}):
        assert_type(keel.sdk.flush(), bool)
    keel.sdk.init("http://127.0.0.1:4000", "key", service_name="svc", sample_rate=0.5).flush()
    keel.sdk.shutdown()
    del short, full
