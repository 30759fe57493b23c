"""A small app with just the keys routes, as the real server mounts them (for API and CLI tests)."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.api.auth import ApiError, api_error_handler
from keel.api.keys import router
from keel.keys.auth import Authenticator


def build_keys_app(engine: AsyncEngine, authenticator: Authenticator) -> FastAPI:
    app = FastAPI(openapi_url="/api/v1/openapi.json")
    app.include_router(router, prefix="/api/v1")
    app.add_exception_handler(ApiError, api_error_handler)
    app.state.db_engine = engine
    app.state.authenticator = authenticator
    return app
