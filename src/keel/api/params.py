"""What the management API's routes share when decoding a request: the database, and times."""

from __future__ import annotations

from fastapi import Request

from keel.analytics.ranges import parse_time
from keel.api.auth import ApiError
from keel.storage.database import Database

__all__ = ["database", "unix_time"]


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def unix_time(value: str | None, name: str) -> float | None:
    """Unix seconds or an ISO 8601 time (without a zone: UTC); 400 otherwise."""
    try:
        return None if value is None else parse_time(value, name)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
