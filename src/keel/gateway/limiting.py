"""Gateway step: rate limits and budgets, before a call reaches a provider and after it.

Rate limits (requests and tokens per minute) apply to every chat request, cached or not;
budgets only to calls that go to a provider: the worst case (prompt tokens plus the output cap,
priced for the dearest target of the plan) is reserved atomically across the whole chain
(project -> key -> customer -> pipeline) before the call, and the actual cost settles it after,
so concurrent requests cannot overspend. Both live in Redis with several replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keel.costs.pricing import Pricer
from keel.gateway.call import Call
from keel.gateway.models import Target
from keel.limits import (
    BudgetLedger,
    BudgetSpec,
    LimitPolicies,
    LimitSpec,
    RateLimiter,
    Reservation,
    worst_case_cost,
)
from keel.providers.base import Usage

__all__ = ["Admission", "LimitStep"]

log = logging.getLogger(__name__)


def _prompt_tokens(messages: list[Any]) -> int:
    """A quick upper estimate of a prompt's tokens (a character per token would be far too
    high; English runs near four). Admission needs a bound now, not an exact count: the exact
    one would tokenize every request on the hot path."""
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return chars // 3 + 4 * len(messages) + 3


@dataclass(slots=True)
class Admission:
    rates: list[LimitSpec] = field(default_factory=list)
    budgets: list[BudgetSpec] = field(default_factory=list)
    prompt_tokens: int = 0
    reservation: Reservation | None = None


class LimitStep:
    def __init__(
        self,
        policies: LimitPolicies,
        rates: RateLimiter,
        budgets: BudgetLedger,
        pricer: Pricer,
        default_max_tokens: int,
    ) -> None:
        self.policies = policies
        self.rates = rates
        self.budgets = budgets
        self.pricer = pricer
        self.default_max_tokens = default_max_tokens

    async def check(self, call: Call, model: str) -> Admission | None:
        """Apply the rate limits (LimitError 429 when over); None when no limit applies."""
        record = call.record
        rates, budgets = self.policies.specs_for(
            call.principal, record.customer, record.pipeline, model
        )
        if not rates and not budgets:
            return None
        admission = Admission(rates, budgets)
        if budgets or any(spec.tpm for spec in rates):
            admission.prompt_tokens = _prompt_tokens(call.body.get("messages") or [])
        if rates:
            decision = await self.rates.check(rates, tokens=admission.prompt_tokens)
            if not decision.allowed:
                raise decision.error()
            call.headers_out += [(k.encode(), v.encode()) for k, v in decision.headers]
        return admission

    async def reserve(self, admission: Admission | None, call: Call, plan: list[Target]) -> None:
        """Hold the worst-case cost on every budget (BudgetExceeded 429 when it does not fit)."""
        if admission is None or not admission.budgets:
            return
        body = call.body
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            # Without a cap the output, and so the worst case, is unbounded: send one.
            cap = body["max_tokens"] = self.default_max_tokens
        amount = max(
            worst_case_cost(self._price(target), admission.prompt_tokens, cap) for target in plan
        )
        admission.reservation = await self.budgets.reserve(admission.budgets, amount)

    def _price(self, target: Target) -> Callable[[int, int], float | None]:
        provider_id = target.provider.price_provider_id()

        def cost(prompt: int, output: int) -> float | None:
            usage = Usage(input_tokens=prompt, output_tokens=output)
            return self.pricer.cost(usage, model=target.model, provider_id=provider_id).usd

        return cost

    async def settle(self, admission: Admission | None, call: Call, *, failed: bool) -> None:
        """Count the output tokens and settle the reservation; never raises, never cancelled.
        `failed`: the call ended in an error before an answer went out."""
        if admission is None:
            return
        try:
            await asyncio.shield(self._settle(admission, call, failed))
        except Exception:  # accounting must never fail the answer already given
            log.exception("could not settle limits for request %s", call.record.id)

    async def _settle(self, admission: Admission, call: Call, failed: bool) -> None:
        record = call.record
        if record.output_tokens and any(spec.tpm for spec in admission.rates):
            await self.rates.add_tokens(admission.rates, record.output_tokens)
        if admission.reservation is None:
            return
        # None (an unknown price) charges the reserved worst case; a call that failed before
        # any answer spent nothing.
        actual: float | None = record.cost_usd
        if failed and actual is None:
            actual = 0.0
        await self.budgets.settle(admission.reservation, actual)
