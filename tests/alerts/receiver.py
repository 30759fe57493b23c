"""A webhook receiver on 127.0.0.1 for alert tests: records each POST, answers as scripted.

`script(path, *replies)` queues the answers of the next POSTs to `path`: a status code, `"hang"`
(answer after `hang_s`, beyond a client's timeout) or `"redirect"` (302 to another path of the
receiver, which records anything that follows it). Unscripted POSTs get 200.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class Receiver:
    hang_s: float = 2.0
    received: list[Received] = field(default_factory=list)
    base_url: str = ""
    _replies: dict[str, list[int | str]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def script(self, path: str, *replies: int | str) -> None:
        self._replies.setdefault(path, []).extend(replies)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.received.append(Received(request.path, body, dict(request.headers)))
        self._arrived.set()
        queue = self._replies.get(request.path) or []
        reply = queue.pop(0) if queue else 200
        if reply == "hang":
            await asyncio.sleep(self.hang_s)
            return web.Response(status=200)
        if reply == "redirect":
            raise web.HTTPFound(location=f"{request.path}/followed")
        assert isinstance(reply, int)
        return web.Response(status=reply, text="scripted")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, path: str, count: int, timeout: float) -> list[Received]:
        """The POSTs to `path` once there are `count` of them (AssertionError after `timeout`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.at(path)) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(
                    f"{path}: {len(self.at(path))} of {count} notifications in {timeout}s"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))
        return self.at(path)
