"""The prompt routes in a small app, as the real server mounts them, and a loopback server of it.

`build_prompts_app` is for ASGI tests; `serve_prompts` runs it under uvicorn on 127.0.0.1 for
the CLI and SDK tests, with a `Gate` that counts requests and can make the server answer 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.api.app import _validation_handler
from keel.api.auth import ApiError, api_error_handler
from keel.api.prompts import router
from keel.keys.auth import Authenticator
from keel.prompts.service import PromptService
from keel.storage.database import Database
from tests.cli.conftest import _serve


def build_prompts_app(db: Database, authenticator: Authenticator) -> FastAPI:
    app = FastAPI(openapi_url="/api/v1/openapi.json")
    app.include_router(router, prefix="/api/v1")
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.state.authenticator = authenticator
    app.state.prompts = PromptService(db)
    return app


@dataclass
class Gate:
    """Counts the requests a server saw (by path) and, while `failing`, answers them 503."""

    paths: list[str] = field(default_factory=list)
    failing: bool = False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.paths.append(scope["path"])
                if self.failing:
                    await send({"type": "http.response.start", "status": 503, "headers": []})
                    await send({"type": "http.response.body", "body": b"down for maintenance"})
                    return
            await app(scope, receive, send)

        return gated

    def hits(self, suffix: str) -> int:
        return sum(1 for p in self.paths if p.endswith(suffix))


def _app(database_url: str, admin_key: str | None, gate: Gate) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await Database.open(database_url)
        authenticator = Authenticator(db.engine, admin_key)
        await authenticator.start()
        app.mount("/", gate.wrap(build_prompts_app(db, authenticator)))
        yield
        await db.engine.dispose()

    return FastAPI(lifespan=lifespan)


@contextlib.contextmanager
def serve_prompts(
    database_url: str, admin_key: str | None, gate: Gate | None = None
) -> Iterator[str]:
    """The prompt routes on a real HTTP server on loopback; yields its URL."""
    with _serve(_app(database_url, admin_key, gate or Gate())) as url:
        yield url
