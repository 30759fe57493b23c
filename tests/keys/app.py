"""A small app with the keys and limits routes, as the real server mounts them (for API and CLI
tests)."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.api import limits
from keel.api.auth import ApiError, api_error_handler
from keel.api.keys import router
from keel.keys.auth import Authenticator
from keel.keys.revocation import RevocationFeed
from keel.limits import BudgetLedger, LimitPolicies


def build_keys_app(
    engine: AsyncEngine,
    authenticator: Authenticator,
    *,
    policies: LimitPolicies | None = None,
    budgets: BudgetLedger | None = None,
    revocations: RevocationFeed | None = None,
) -> FastAPI:
    app = FastAPI(openapi_url="/api/v1/openapi.json")
    app.include_router(router, prefix="/api/v1")
    app.include_router(limits.router, prefix="/api/v1")
    app.add_exception_handler(ApiError, api_error_handler)
    app.state.db_engine = engine
    app.state.authenticator = authenticator
    if policies is not None:
        app.state.limit_policies = policies
    if budgets is not None:
        app.state.budgets = budgets
    if revocations is not None:
        app.state.revocations = revocations
    return app
