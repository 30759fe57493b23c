"""Routes for the limits of customers, pipelines, models and the project, under `/api/v1`.

Admin only. Policies set here are stored (`limits.store`) and replace the config file's policy
of the same subject. Uses `app.state.db_engine`, `app.state.limit_policies` (the runtime's
`LimitPolicies`, told about every change so it applies in this process at once; other replicas
see it at their next refresh) and, for spend, `app.state.budgets` (the `BudgetLedger`) and
`app.state.limit_policies` again for the budget to read.
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.api.auth import ApiError, require_admin
from keel.keys import store as key_store
from keel.limits import store
from keel.limits.budgets import BudgetLedger, BudgetSpec
from keel.limits.config import LimitPolicies, Limits, Policy
from keel.limits.ratelimit import LimitError

__all__ = ["PolicyList", "PolicyOut", "SetPolicyRequest", "SpendOut", "router"]

router = APIRouter(tags=["limits"], dependencies=[Depends(require_admin)])

PeriodName = Literal["day", "month", "total"]


class SetPolicyRequest(BaseModel):
    """The limits of one subject; null or absent: no limit of that kind."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens (prompt and completion) per minute.")
    budget_usd: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Spend allowed per budget_period, in USD."
    )
    budget_period: PeriodName | None = Field(
        None, description="day or month (UTC calendar), or total; required with budget_usd."
    )

    @model_validator(mode="after")
    def _budget_with_period(self) -> SetPolicyRequest:
        if (self.budget_usd is None) != (self.budget_period is None):
            raise ValueError("budget_usd and budget_period go together: give both or neither")
        return self


class PolicyOut(BaseModel):
    scope: Literal["project", "customer", "pipeline", "model"]
    subject: str
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: PeriodName | None
    source: Literal["config", "api"] = Field(description="Where the policy in force comes from.")
    updated_at: float | None = Field(description="Unix seconds of the last set (API policies).")


class PolicyList(BaseModel):
    data: list[PolicyOut]


class SpendOut(BaseModel):
    scope: str
    subject: str
    budget_usd: float
    budget_period: PeriodName
    spent_usd: float = Field(description="Settled spend in the current period.")
    reserved_usd: float = Field(description="Worst-case cost held by requests in flight.")
    remaining_usd: float


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.db_engine
    return engine


def _policies(request: Request) -> LimitPolicies | None:
    policies: LimitPolicies | None = getattr(request.app.state, "limit_policies", None)
    return policies


def _check(scope: str, subject: str) -> None:
    try:
        store.check_subject(scope, subject)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _not_found(scope: str, subject: str) -> ApiError:
    return ApiError(404, f"no limits for {scope} {subject!r}")


async def _in_force(request: Request, scope: str, subject: str) -> Policy | None:
    policies = _policies(request)
    if policies is not None:
        return policies.get(scope, subject)
    stored = await store.load_policies(_engine(request))
    return next((p for p in stored if (p.scope, p.subject) == (scope, subject)), None)


@router.get("/limits", response_model=PolicyList)
async def list_policies(request: Request) -> PolicyList:
    """The policies in force: the config file's, replaced subject by subject by the API's."""
    policies = _policies(request)
    items = policies.all() if policies is not None else await store.load_policies(_engine(request))
    return PolicyList(data=[PolicyOut(**p.to_dict()) for p in items])


@router.get("/limits/{scope}/{subject}", response_model=PolicyOut)
async def get_policy(scope: str, subject: str, request: Request) -> PolicyOut:
    """The policy in force for one subject."""
    _check(scope, subject)
    policy = await _in_force(request, scope, subject)
    if policy is None:
        raise _not_found(scope, subject)
    return PolicyOut(**policy.to_dict())


@router.put("/limits/{scope}/{subject}", response_model=PolicyOut)
async def set_policy(
    scope: str, subject: str, body: SetPolicyRequest, request: Request
) -> PolicyOut:
    """Set a subject's limits, replacing its config policy; all null lifts its limits."""
    _check(scope, subject)
    try:
        limits = Limits(body.rpm, body.tpm, body.budget_usd, body.budget_period)
        policy = await store.set_policy(_engine(request), scope, subject, limits)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    policies = _policies(request)
    if policies is not None:
        policies.put(policy)
    return PolicyOut(**policy.to_dict())


@router.delete("/limits/{scope}/{subject}", response_model=PolicyOut)
async def delete_policy(scope: str, subject: str, request: Request) -> PolicyOut:
    """Delete a subject's API policy; answers the deleted one. The config's applies again."""
    _check(scope, subject)
    policies = _policies(request)
    deleted = await _in_force(request, scope, subject)
    if not await store.delete_policy(_engine(request), scope, subject):
        raise _not_found(scope, subject)
    if policies is not None:
        policies.drop(scope, subject)
    if deleted is None or deleted.source != "api":  # another replica set it since our refresh
        deleted = Policy(scope, subject, Limits(), "api", time.time())  # type: ignore[arg-type]
    return PolicyOut(**deleted.to_dict())


async def _budget(request: Request, scope: str, subject: str) -> BudgetSpec | None:
    if scope == "key":
        row = await key_store.get_key(_engine(request), subject)
        if row is None or row.budget_usd is None or row.budget_period is None:
            return None
        return BudgetSpec("key", subject, row.budget_usd, row.budget_period)
    _check(scope, subject)
    policy = await _in_force(request, scope, subject)
    return None if policy is None else policy.limits.budget(scope, subject)


@router.get("/limits/{scope}/{subject}/spend", response_model=SpendOut)
async def get_spend(scope: str, subject: str, request: Request) -> SpendOut:
    """Spend and reservations of a subject's budget in its current period (`key` scope too)."""
    ledger: BudgetLedger | None = getattr(request.app.state, "budgets", None)
    if ledger is None:
        raise ApiError(503, "budgets are not tracked by this Keel")
    spec = await _budget(request, scope, subject)
    if spec is None:
        raise ApiError(404, f"no budget for {scope} {subject!r}")
    try:
        spent, reserved = await ledger.spend(spec)
    except LimitError as exc:
        raise ApiError(exc.status, exc.message) from None
    return SpendOut(
        scope=scope,
        subject=subject,
        budget_usd=spec.limit_usd,
        budget_period=spec.period,
        spent_usd=spent,
        reserved_usd=reserved,
        remaining_usd=max(0.0, spec.limit_usd - spent - reserved),
    )
