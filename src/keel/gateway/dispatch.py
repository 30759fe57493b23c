"""Gateway step: which targets serve a model, and running one call along them.

Deprecations first (a retired model may be refused or routed to its replacement), then the
routing plan (strategy, fallbacks), then the run itself (retries, circuit breakers, one
deadline). The record learns which target answered and, when anything went wrong on the way,
the whole chain of attempts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from keel.gateway.errors import GatewayError
from keel.gateway.lifecycle import DEPRECATION_HEADER, Lifecycle
from keel.gateway.models import Target
from keel.gateway.routing import Attempt, Router, RoutingError
from keel.records.model import RequestRecord

__all__ = ["Dispatch"]

T = TypeVar("T")


def _chain(attempts: list[Attempt]) -> list[dict[str, Any]] | None:
    # A first target that answered is the common case and says nothing worth storing.
    if len(attempts) == 1 and attempts[0].outcome == "ok":
        return None
    return [a.as_dict() for a in attempts] or None


@dataclass(frozen=True, slots=True)
class Dispatch:
    routing: Router
    lifecycle: Lifecycle
    deadline_s: float

    def plan(
        self, model: str, record: RequestRecord, headers: list[tuple[bytes, bytes]]
    ) -> list[Target]:
        """The targets for `model`, after its deprecation (GatewayError 410 if refused)."""
        if self.lifecycle:
            try:
                deprecation = self.lifecycle.check(model)
            except GatewayError:  # retired and refused: the record still says what was asked
                record.deprecated_model = model
                raise
            if deprecation is not None:
                record.deprecated_model = model
                headers.append((DEPRECATION_HEADER, deprecation.header.encode()))
                model = deprecation.serve
        return self.routing.plan(model)

    async def run(
        self,
        plan: list[Target],
        record: RequestRecord,
        attempt: Callable[[Target, float], Awaitable[T]],
    ) -> tuple[T, Target]:
        try:
            result, target, attempts = await self.routing.run(
                plan, attempt, deadline=self.deadline_s
            )
        except RoutingError as exc:
            record.fallbacks = _chain(exc.attempts)
            tried = [a for a in exc.attempts if a.outcome != "skipped_open"]
            if tried:
                record.provider, record.provider_model = tried[-1].provider, tried[-1].model
            raise
        record.fallbacks = _chain(attempts)
        record.provider, record.provider_model = target.provider_name, target.model
        return result, target
