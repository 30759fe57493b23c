"""The ASGI application: gateway routes dispatched directly, everything else through Starlette.

The gateway's endpoints skip the framework's routing and middleware on purpose: they are the hot
path, and each microsecond there is paid on every call of every user.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from keel import __version__
from keel.api.app import bind_runtime, build_api
from keel.gateway.asgi import Receive, Scope, Send, send_error
from keel.gateway.errors import GatewayError
from keel.runtime import Runtime
from keel.traces.ingest import TraceIngest
from keel.ui import ui_routes

__all__ = ["KeelApp", "build_app"]


class KeelApp:
    def __init__(self, runtime: Runtime, fallback: Starlette) -> None:
        self.runtime = runtime
        self.fallback = fallback
        self.traces = TraceIngest(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.runtime.gateway
        if scope["type"] == "http" and gateway is not None:
            path = scope["path"]
            if path.startswith("/v1/"):
                if path.rstrip("/") == "/v1/traces":
                    await self.traces(scope, receive, send)
                    return
                handler = {
                    "/v1/chat/completions": ("POST", gateway.chat),
                    "/v1/embeddings": ("POST", gateway.embeddings),
                    "/v1/models": ("GET", gateway.models),
                }.get(path.rstrip("/"))
                if handler is None:
                    await send_error(send, GatewayError(404, f"unknown route {path}"))
                elif scope["method"] != handler[0]:
                    await send_error(
                        send,
                        GatewayError(
                            405, f"{path} takes {handler[0]}", type="invalid_request_error"
                        ),
                    )
                else:
                    await handler[1](scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def build_app(runtime: Runtime) -> KeelApp:
    api = build_api(runtime)
    runtime.metrics.bind_spans(
        lambda: runtime.pipeline.pending_spans if runtime.pipeline is not None else 0
    )

    async def healthz(request: Request) -> Response:
        p = runtime.pipeline
        body = {
            "status": "ok",
            "version": __version__,
            "database": "up" if p is not None and p.db_up else "down",
            "records_pending": p.pending_records if p is not None else None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(
            runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {
                "error": {
                    "message": f"unknown route {request.url.path}",
                    "type": "not_found_error",
                    "param": None,
                    "code": None,
                }
            },
            status_code=404,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        bind_runtime(api, runtime)
        try:
            yield
        finally:
            await runtime.stop()

    fallback = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Mount("/api/v1", app=api),
            *ui_routes(runtime),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found},
    )
    return KeelApp(runtime, fallback)
