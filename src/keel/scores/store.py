"""Reads and writes of scores (the `scores` table), with the validation of a new score.

A score may arrive before its trace: spans reach the database asynchronously (the record
pipeline), so a score for a trace id not stored yet is accepted, not refused.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from keel.records.model import new_id
from keel.storage.database import Database
from keel.storage.tables import scores

__all__ = [
    "DATA_TYPES",
    "FIELDS",
    "MAX_LIMIT",
    "SOURCES",
    "ScoreError",
    "add_score",
    "list_scores",
    "score_json",
]

MAX_LIMIT = 1000
DATA_TYPES = ("numeric", "boolean", "categorical")
SOURCES = ("human", "rule", "model")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
FIELDS = frozenset(
    {"trace_id", "span_id", "name", "data_type", "value", "label", "source", "comment", "author"}
)
_MAX_NAME = 128
_MAX_LABEL = 256
_MAX_AUTHOR = 256
_MAX_COMMENT = 10_000


class ScoreError(ValueError):
    """A score that cannot be stored as given; the message says which field and why."""


def _text(fields: dict[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = fields.get(name)
    if value is None:
        if required:
            raise ScoreError(f"`{name}` is required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ScoreError(f"`{name}` must be a non-empty string")
    if len(value) > limit:
        raise ScoreError(f"`{name}` must be at most {limit} characters")
    return value


def _validate(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise ScoreError(f"unknown field(s): {', '.join(unknown)}")
    trace_id = fields.get("trace_id")
    if not isinstance(trace_id, str) or not _TRACE_ID.fullmatch(trace_id):
        raise ScoreError("`trace_id` must be 32 lower-case hex digits")
    span_id = fields.get("span_id")
    if span_id is not None and (not isinstance(span_id, str) or not _SPAN_ID.fullmatch(span_id)):
        raise ScoreError("`span_id` must be 16 lower-case hex digits (or absent for the trace)")
    name = _text(fields, "name", _MAX_NAME, required=True)
    data_type = fields.get("data_type")
    if data_type not in DATA_TYPES:
        raise ScoreError(f"`data_type` must be one of: {', '.join(DATA_TYPES)}")
    source = fields.get("source", "human")
    if source not in SOURCES:
        raise ScoreError(f"`source` must be one of: {', '.join(SOURCES)}")
    value, label = _value_and_label(data_type, fields.get("value"), fields.get("label"))
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "name": name,
        "data_type": data_type,
        "value": value,
        "label": label,
        "source": source,
        "comment": _text(fields, "comment", _MAX_COMMENT, required=False),
        "author": _text(fields, "author", _MAX_AUTHOR, required=False),
    }


def _value_and_label(data_type: str, value: Any, label: Any) -> tuple[float | None, str | None]:
    if data_type == "categorical":
        if value is not None:
            raise ScoreError("a categorical score has a `label`, not a `value`")
        if not isinstance(label, str) or not label.strip():
            raise ScoreError("a categorical score needs a non-empty string `label`")
        if len(label) > _MAX_LABEL:
            raise ScoreError(f"`label` must be at most {_MAX_LABEL} characters")
        return None, label
    if label is not None:
        raise ScoreError(f"a {data_type} score has a `value`, not a `label`")
    if data_type == "boolean":
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return float(bool(value)), None
        raise ScoreError("a boolean score needs `value` true or false (or 1 or 0)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScoreError("a numeric score needs a finite number `value`")
    return float(value), None


async def add_score(db: Database, **fields: Any) -> dict[str, Any]:
    """Validate and store a score; returns it as stored. ScoreError (a ValueError) if invalid."""
    values = _validate(fields)
    row = {"id": new_id(), **values, "created_at": time.time()}
    async with db.engine.begin() as conn:
        await conn.execute(scores.insert().values(row))
    return score_json(row)


async def list_scores(
    db: Database,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    name: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Scores newest first, filtered by trace, span and name."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    query = select(scores).order_by(scores.c.created_at.desc(), scores.c.id.desc())
    if trace_id is not None:
        query = query.where(scores.c.trace_id == trace_id)
    if span_id is not None:
        query = query.where(scores.c.span_id == span_id)
    if name is not None:
        query = query.where(scores.c.name == name)
    async with db.engine.connect() as conn:
        rows = await conn.execute(query.limit(min(limit, MAX_LIMIT)))
        return [score_json(r._mapping) for r in rows]


def score_json(row: Any) -> dict[str, Any]:
    """A `scores` row (mapping) as JSON: boolean values as true/false, time in ISO 8601."""
    value = row["value"]
    if row["data_type"] == "boolean" and value is not None:
        value = bool(value)
    moment = datetime.fromtimestamp(row["created_at"], UTC)
    return {
        "id": row["id"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "name": row["name"],
        "data_type": row["data_type"],
        "value": value,
        "label": row["label"],
        "source": row["source"],
        "comment": row["comment"],
        "author": row["author"],
        "created_at": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
    }
