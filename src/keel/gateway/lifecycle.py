"""Model lifecycle: the config's deprecation table, applied to each request's model name.

Before a model's sunset date it is served as asked, with an `x-keel-deprecated` header naming the
replacement. From the sunset date on (UTC), policy `route` serves the replacement instead (still
with the header) and policy `refuse` answers 410 naming the replacement. Every use of a listed
model is counted in `keel_deprecated_model_requests_total{model}`.

A client may name the model directly (`gpt-4-0613`) or through a provider (`up/gpt-4-0613`); the
second form is routed to `up/<replacement>`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from keel.config import DeprecationConfig
from keel.gateway.errors import GatewayError

__all__ = ["DEPRECATION_HEADER", "Deprecation", "Lifecycle"]

DEPRECATION_HEADER = b"x-keel-deprecated"


def _today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True, slots=True)
class Deprecation:
    """What the gateway does with a request for a deprecated model."""

    requested: str  # the model the client named
    serve: str  # the model to serve: `requested` before sunset, the replacement after
    replacement: str
    sunset: date
    retired: bool  # the sunset date has come

    @property
    def header(self) -> str:
        """The `x-keel-deprecated` value: `model=gpt-4-0613; replacement=gpt-4o; sunset=...`."""
        return f"model={self.requested}; replacement={self.replacement}; sunset={self.sunset}"


class Lifecycle:
    """The deprecation table. `count` is called with the requested model on every listed use."""

    def __init__(
        self,
        table: Iterable[DeprecationConfig],
        *,
        count: Callable[[str], None] | None = None,
        today: Callable[[], date] = _today,
    ) -> None:
        self._table = {d.model: d for d in table}
        self._count = count
        self._today = today

    def __bool__(self) -> bool:
        return bool(self._table)

    def _entry(self, model: str) -> tuple[DeprecationConfig, str] | None:
        """The table entry for `model` and the `provider/` prefix it was named with."""
        entry = self._table.get(model)
        if entry is not None:
            return entry, ""
        prefix, sep, rest = model.partition("/")
        entry = self._table.get(rest) if sep else None
        return None if entry is None else (entry, f"{prefix}/")

    def check(self, model: str) -> Deprecation | None:
        """None for a model not in the table; GatewayError 410 for a refused retired model."""
        found = self._entry(model)
        if found is None:
            return None
        entry, prefix = found
        if self._count is not None:
            self._count(model)
        replacement = prefix + entry.replacement
        retired = self._today() >= entry.sunset
        if not retired:
            return Deprecation(model, model, replacement, entry.sunset, retired=False)
        if entry.policy == "refuse":
            raise GatewayError(
                410,
                f"The model {model!r} was retired on {entry.sunset}; use {replacement!r} instead.",
                type="invalid_request_error",
                code="model_retired",
                param="model",
            )
        return Deprecation(model, self._final(replacement), replacement, entry.sunset, True)

    def _final(self, model: str) -> str:
        """Follow routes through replacements that are themselves retired (config has no cycles);
        a retired replacement whose policy is `refuse` answers 410."""
        for _ in range(len(self._table)):
            found = self._entry(model)
            if found is None or self._today() < found[0].sunset:
                return model
            entry, prefix = found
            if entry.policy == "refuse":
                raise GatewayError(
                    410,
                    f"The model {model!r} was retired on {entry.sunset}.",
                    type="invalid_request_error",
                    code="model_retired",
                    param="model",
                )
            model = prefix + entry.replacement
        return model
