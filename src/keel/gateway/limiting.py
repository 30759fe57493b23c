"""Gateway step: rate limits and budgets, before a call reaches a provider and after it.

Rate limits (requests and tokens per minute) apply to every chat request, cached or not;
budgets only to calls that go to a provider: the worst case (prompt tokens plus the output cap,
priced for the dearest target of the plan) is reserved atomically across the whole chain
(project -> key -> customer -> pipeline) before the call, and the actual cost settles it after,
so concurrent requests cannot overspend. Both live in Redis with several replicas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from keel.alerts.notices import deliver_budget_notices
from keel.costs.pricing import Pricer
from keel.gateway.call import Call
from keel.gateway.models import Target
from keel.limits import (
    BudgetExceeded,
    BudgetLedger,
    BudgetSpec,
    LimitPolicies,
    LimitSpec,
    RateCheck,
    RateLimiter,
    Reservation,
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
    rate_check: RateCheck | None = None  # when the rate limits went with the reservation


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

    async def check(
        self, call: Call, model: str, plan: list[Target] | None = None
    ) -> Admission | None:
        """Apply the rate limits (LimitError 429 when over); None when no limit applies.

        With `plan`, the budgets' worst case is reserved in the same atomic step (BudgetExceeded
        429), so a request refused by either counts on neither; `reserve` then has nothing left
        to do. Give it when every admitted request goes on to call a provider (no cache).
        """
        record = call.record
        rates, budgets = self.policies.specs_for(
            call.principal, record.customer, record.pipeline, model
        )
        if not rates and not budgets:
            return None
        admission = Admission(rates, budgets)
        if budgets or any(spec.tpm for spec in rates):
            admission.prompt_tokens = _prompt_tokens(call.body.get("messages") or [])
        decision = None
        if plan is not None and budgets:
            admission.rate_check = self.rates.prepare(rates, tokens=admission.prompt_tokens)
            admission.reservation = await self._reserve(
                budgets, self._worst_case(admission, call, plan), admission.rate_check
            )
            decision = admission.reservation.decision
        elif rates:
            decision = await self.rates.check(rates, tokens=admission.prompt_tokens)
            if not decision.allowed:
                raise decision.error()
        if decision is not None:
            call.headers_out += [(k.encode(), v.encode()) for k, v in decision.headers]
        return admission

    async def reserve(self, admission: Admission | None, call: Call, plan: list[Target]) -> None:
        """Hold the worst-case cost on every budget (BudgetExceeded 429 when it does not fit)."""
        if admission is None or not admission.budgets or admission.reservation is not None:
            return
        amount = self._worst_case(admission, call, plan)
        admission.reservation = await self._reserve(admission.budgets, amount, None)

    async def _reserve(
        self, budgets: list[BudgetSpec], amount: float, rates: RateCheck | None
    ) -> Reservation:
        try:
            return await self.budgets.reserve(budgets, amount, rates=rates)
        except BudgetExceeded as exc:  # the 100% notice: a budget refused a request
            deliver_budget_notices(exc.notices)
            raise

    def _worst_case(self, admission: Admission, call: Call, plan: list[Target]) -> float:
        """The most the call can cost: prompt and output cap priced on its dearest target."""
        body = call.body
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            # Without a cap the output, and so the worst case, is unbounded: send one.
            cap = body["max_tokens"] = self.default_max_tokens
        usage = Usage(input_tokens=admission.prompt_tokens, output_tokens=cap)
        return max(self._cost(usage, target) for target in plan)

    def _cost(self, usage: Usage, target: Target) -> float:
        # As `worst_case_cost`: a model without a price costs nothing.
        provider_id = target.provider.price_provider_id()
        usd = self.pricer.cost(usage, model=target.model, provider_id=provider_id).usd
        return 0.0 if usd is None else max(0.0, usd)

    async def settle(self, admission: Admission | None, call: Call, *, failed: bool) -> None:
        """Count the output tokens and settle the reservation, in one step; never raises.
        `failed`: the call ended in an error before an answer went out.

        A request cancelled meanwhile (its client went away) still settles, without a shield
        (a task per request): the state sends the update before it first waits for anything
        (`keel.limits.wire.Link.call`), so the cancellation only loses the reply."""
        if admission is None:
            return
        try:
            await self._settle(admission, call, failed)
        except Exception:  # accounting must never fail the answer already given
            log.exception("could not settle limits for request %s", call.record.id)

    async def _settle(self, admission: Admission, call: Call, failed: bool) -> None:
        record = call.record
        output_tokens = record.output_tokens or 0
        if admission.reservation is None:
            await self.rates.add_tokens(admission.rates, output_tokens)
            return
        # None (an unknown price) charges the reserved worst case; a call that failed before
        # any answer spent nothing.
        actual: float | None = record.cost_usd
        if failed and actual is None:
            actual = 0.0
        tokens = self.rates.tokens(admission.rates, output_tokens, check=admission.rate_check)
        settlement = await self.budgets.settle(admission.reservation, actual, tokens=tokens)
        deliver_budget_notices(settlement.notices)  # thresholds crossed (80%, 100%, ...)
