"""Rate limits and budgets, global across replicas when their state lives in Redis.

`RateLimiter` counts requests and tokens per minute for any (scope, id); `BudgetLedger`
reserves worst-case cost on a chain of budgets before a call and settles the actual cost after.
Both keep their counters in a `SharedState`: `MemoryState` for one process, `RedisState` for
replicas. `LimitPolicies` holds who is limited how (the `limits:` config section and the
policies set through the API) and turns a request into its specs. See docs/limits.md.
"""

from keel.limits.budgets import (
    BudgetExceeded,
    BudgetLedger,
    BudgetSpec,
    Notice,
    Period,
    Reservation,
    Settlement,
    worst_case_cost,
)
from keel.limits.config import LimitPolicies, Limits, Policy, check_limits, parse_limits
from keel.limits.ratelimit import Decision, LimitError, LimitSpec, RateCheck, RateLimiter, Tokens
from keel.limits.state import MemoryState, RedisState, SharedState, StateUnavailable

__all__ = [
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetSpec",
    "Decision",
    "LimitError",
    "LimitPolicies",
    "LimitSpec",
    "Limits",
    "MemoryState",
    "Notice",
    "Period",
    "Policy",
    "RateCheck",
    "RateLimiter",
    "RedisState",
    "Reservation",
    "Settlement",
    "SharedState",
    "StateUnavailable",
    "Tokens",
    "check_limits",
    "parse_limits",
    "worst_case_cost",
]
