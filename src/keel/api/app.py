"""The management API under /api/v1 (JSON; OpenAPI at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from keel import __version__
from keel.api import (
    alerts,
    circuits,
    costs,
    keys,
    limits,
    metrics,
    prompts,
    requests,
    scores,
    traces,
)
from keel.api.auth import ApiError, api_error_handler
from keel.gateway.errors import error_body
from keel.runtime import Runtime

__all__ = ["bind_runtime", "build_api"]


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
    return Response(
        error_body(message, "invalid_request_error"), status_code=400, media_type="application/json"
    )


def build_api(runtime: Runtime) -> FastAPI:
    api = FastAPI(
        title="Keel management API",
        version=__version__,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    api.include_router(keys.router)
    api.include_router(requests.router)
    api.include_router(prompts.router)
    api.include_router(limits.router)
    api.include_router(circuits.router)
    api.include_router(alerts.router)
    api.include_router(traces.router)
    api.include_router(scores.router)
    api.include_router(metrics.router)
    api.include_router(costs.router)
    api.add_exception_handler(ApiError, api_error_handler)
    api.add_exception_handler(RequestValidationError, _validation_handler)

    return api


def bind_runtime(api: FastAPI, runtime: Runtime) -> None:
    """Hand the started runtime's parts to the routes (called once the lifespan started it)."""
    api.state.db = runtime.db
    api.state.db_engine = runtime.db.engine if runtime.db else None
    api.state.authenticator = runtime.authenticator
    api.state.prompts = runtime.prompts
    api.state.routing = runtime.routing
    api.state.limit_policies = runtime.controls.policies
    api.state.budgets = runtime.controls.budgets
    api.state.revocations = runtime.controls.revocations
    api.state.alerts = runtime.alerts
