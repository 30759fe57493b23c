"""Turn arbitrary Python values into bounded JSON text for span payloads, without ever raising.

Spans carry what a function was given and what it returned. Those values can be anything (a
dataclass, a pydantic model, bytes, a cyclic graph, a million-row list), so they are walked
with a budget of characters (the work done is proportional to the text kept, not to the
value), limits on depth, items and repr length, and the final text is cut at `limit`
characters with a marker saying how much was dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_LIMIT", "jsonable", "to_json", "truncate"]

DEFAULT_LIMIT = 16_000  # characters of one payload attribute
_MAX_DEPTH = 8
_MAX_ITEMS = 200
_MAX_REPR = 500


def to_json(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """`value` as JSON (a string stays as it is), at most `limit` characters plus a marker."""
    if isinstance(value, str):
        return truncate(value, limit)
    walk = _Walk(limit + 1)
    text = json.dumps(walk.value(value, 0), ensure_ascii=False)
    if walk.cut and len(text) > limit:  # how much the walk left out is unknown: say so
        return f"{text[:limit]}…[truncated]"
    return truncate(text, limit)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def jsonable(value: Any, budget: int = DEFAULT_LIMIT) -> Any:
    """A JSON-ready copy of `value`, walked until about `budget` characters of it are kept."""
    return _Walk(budget).value(value, 0)


class _Walk:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.cut = False  # True once the budget left something out

    def value(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | int):
            self.budget -= 6
            return value
        if isinstance(value, float):
            self.budget -= 12
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return self.text(value)
        if depth >= _MAX_DEPTH:
            return self.text(f"<{type(value).__name__}: too deep>")
        if isinstance(value, bytes | bytearray | memoryview):
            return self.text(f"<{len(value)} bytes>")
        if isinstance(value, Mapping):
            return self.mapping(value, depth)
        if isinstance(value, list | tuple | set | frozenset):
            return self.sequence(value, depth)
        return self.obj(value, depth)

    def text(self, text: str) -> str:
        kept = text[: max(self.budget, 0)]
        self.budget -= len(kept) + 2
        if len(kept) == len(text):
            return kept
        self.cut = True
        return kept + "…"

    def mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= _MAX_ITEMS or self.budget <= 0:
                self.cut = self.cut or self.budget <= 0
                out["…"] = f"{len(value) - i} more"
                break
            name = self.text(str(key))
            out[name] = self.value(item, depth + 1)
        return out

    def sequence(self, value: Any, depth: int) -> list[Any]:
        out: list[Any] = []
        for i, item in enumerate(value):
            if i >= _MAX_ITEMS or self.budget <= 0:
                self.cut = self.cut or self.budget <= 0
                out.append(f"… {len(value) - i} more")
                break
            out.append(self.value(item, depth + 1))
        return out

    def obj(self, value: Any, depth: int) -> Any:
        dump = getattr(value, "model_dump", None)  # pydantic v2 models (the openai SDK's too)
        if callable(dump):
            try:
                dumped = dump(mode="json")
            except Exception:  # a broken model must not break the traced call
                dumped = None
            if dumped is not None:
                return self.value(dumped, depth + 1)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
            return self.value(fields, depth + 1)
        try:
            text = repr(value)
        except Exception:  # a failing __repr__ is the caller's bug, not the trace's
            text = f"<{type(value).__name__}>"
        return self.text(truncate(text, _MAX_REPR))
