"""The alert routes in a small app, as the real server mounts them, for ASGI and CLI tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from keel.alerts.notify import Sender
from keel.alerts.service import AlertService
from keel.api.alerts import router
from keel.api.app import _validation_handler
from keel.api.auth import ApiError, api_error_handler
from keel.keys.auth import Authenticator
from keel.storage.database import Database
from tests.cli.conftest import _serve


def build_alerts_app(db: Database, authenticator: Authenticator, alerts: AlertService) -> FastAPI:
    app = FastAPI(openapi_url="/api/v1/openapi.json")
    app.include_router(router, prefix="/api/v1")
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.state.db = db
    app.state.authenticator = authenticator
    app.state.alerts = alerts
    return app


def alert_service(db: Database) -> AlertService:
    """Alerts whose evaluator does not run (tests drive what they need)."""
    return AlertService(db, Sender(attempts=1, timeout_s=2), interval_s=0, enabled=False)


def _app(database_url: str, admin_key: str | None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await Database.open(database_url)
        authenticator = Authenticator(db.engine, admin_key)
        await authenticator.start()
        alerts = alert_service(db)
        app.mount("/", build_alerts_app(db, authenticator, alerts))
        yield
        await alerts.stop()
        await db.close()

    return FastAPI(lifespan=lifespan)


@contextlib.contextmanager
def serve_alerts(database_url: str, admin_key: str | None) -> Iterator[str]:
    """The alert routes on a real HTTP server on loopback; yields its URL."""
    with _serve(_app(database_url, admin_key)) as url:
        yield url
