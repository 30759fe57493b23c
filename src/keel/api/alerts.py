"""Routes for alert rules and their history, under `/api/v1/alerts`. Admin only.

Rules are named by id or by name in paths. Channel URLs are write-only: answers show them
redacted to `scheme://host/…` (a Slack webhook's path is its secret). Uses `app.state.db` and,
to send a test notification, `app.state.alerts` (the runtime's `AlertService`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from keel.alerts import store
from keel.alerts.rules import Rule, RuleError
from keel.alerts.service import AlertService
from keel.api.auth import ApiError, require_admin
from keel.api.params import database

__all__ = [
    "ChannelIn",
    "CreateRuleRequest",
    "EventList",
    "EventOut",
    "RuleList",
    "RuleOut",
    "TestOut",
    "UpdateRuleRequest",
    "router",
]

router = APIRouter(prefix="/alerts", tags=["alerts"], dependencies=[Depends(require_admin)])

Comparator = Literal[">", ">=", "<", "<="]


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook", "slack"] = Field(description="webhook: JSON; slack: {text, blocks}.")
    url: str = Field(
        min_length=1, max_length=2048, description="http(s) URL; answers show it redacted."
    )


class ChannelOut(BaseModel):
    type: str
    url: str = Field(description="Redacted: scheme://host/…")


class _RuleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="A metric of GET /api/v1/metrics: error_rate, latency_p95…")
    filters: dict[str, str | None] = Field(
        default_factory=dict,
        description="model, provider, pipeline, customer, key_id, prompt, tag, source.",
    )
    window_s: int = Field(description="The metric is computed over the last window_s seconds.")
    comparator: Comparator
    threshold: float = Field(allow_inf_nan=False)
    for_s: int = Field(0, description="How long the condition holds before the rule fires.")
    channels: list[ChannelIn] = Field(default_factory=list)
    enabled: bool = True


class CreateRuleRequest(_RuleFields):
    name: str = Field(description="Unique; letters, digits, '.', '_', ':', '-'.")


class UpdateRuleRequest(BaseModel):
    """The fields to change; `channels` replaces the whole list."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    metric: str | None = None
    filters: dict[str, str | None] | None = None
    window_s: int | None = None
    comparator: Comparator | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    for_s: int | None = None
    channels: list[ChannelIn] | None = None
    enabled: bool | None = None


class RuleOut(BaseModel):
    id: str
    name: str
    metric: str
    filters: dict[str, str]
    window_s: int
    comparator: str
    threshold: float
    for_s: int
    channels: list[ChannelOut]
    enabled: bool
    state: Literal["ok", "pending", "firing"]
    state_since: float | None = Field(description="Unix seconds the rule entered its state.")
    last_value: float | None
    last_evaluated_at: float | None
    created_at: float
    updated_at: float


class RuleList(BaseModel):
    data: list[RuleOut]


class DeliveryOut(BaseModel):
    channel: str
    type: str | None = None
    status: Literal["sent", "failed"]
    attempts: int
    error: str | None


class EventOut(BaseModel):
    id: str
    rule_id: str | None
    rule_name: str
    kind: str = Field(description="firing, resolved or budget_threshold.")
    at: float
    value: float | None
    threshold: float | None
    message: str
    deliveries: list[DeliveryOut]


class EventList(BaseModel):
    data: list[EventOut]


class TestOut(BaseModel):
    rule: str
    deliveries: list[DeliveryOut]


def _out(rule: Rule) -> RuleOut:
    return RuleOut.model_validate(rule.to_dict())


async def _rule(request: Request, ref: str) -> Rule:
    rule = await store.get_rule(database(request), ref)
    if rule is None:
        raise ApiError(404, f"no alert rule {ref!r}")
    return rule


def _bad(exc: RuleError) -> ApiError:
    return ApiError(409 if isinstance(exc, store.RuleExists) else 400, str(exc))


@router.post("/rules", status_code=201, response_model=RuleOut)
async def create_rule(body: CreateRuleRequest, request: Request) -> RuleOut:
    """Create a rule (state ok); it is evaluated from the next tick."""
    fields = body.model_dump()
    try:
        rule = await store.create_rule(database(request), **fields)
    except RuleError as exc:
        raise _bad(exc) from None
    return _out(rule)


@router.get("/rules", response_model=RuleList)
async def list_rules(request: Request) -> RuleList:
    """Every rule, by name, with its state and last value."""
    return RuleList(
        data=[RuleOut.model_validate(r) for r in await store.list_rules(database(request))]
    )


@router.get("/rules/{ref}", response_model=RuleOut)
async def get_rule(ref: str, request: Request) -> RuleOut:
    """One rule, by id or name."""
    return _out(await _rule(request, ref))


@router.patch("/rules/{ref}", response_model=RuleOut)
async def update_rule(ref: str, body: UpdateRuleRequest, request: Request) -> RuleOut:
    """Change some fields of a rule; disabling it puts it back to ok without notifying."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in changes.items() if v is None)
    if nulls:
        raise ApiError(400, f"{', '.join(nulls)} cannot be null")
    try:
        rule = await store.update_rule(database(request), ref, changes)
    except RuleError as exc:
        raise _bad(exc) from None
    if rule is None:
        raise ApiError(404, f"no alert rule {ref!r}")
    return _out(rule)


@router.delete("/rules/{ref}", response_model=RuleOut)
async def delete_rule(ref: str, request: Request) -> RuleOut:
    """Delete a rule; answers the deleted rule. Its history stays."""
    rule = await store.delete_rule(database(request), ref)
    if rule is None:
        raise ApiError(404, f"no alert rule {ref!r}")
    return _out(rule)


@router.post("/rules/{ref}/test", response_model=TestOut)
async def test_rule(ref: str, request: Request) -> TestOut:
    """Send a test notification to each channel of the rule now (not recorded)."""
    rule = await _rule(request, ref)
    alerts: AlertService | None = getattr(request.app.state, "alerts", None)
    if alerts is None:
        raise ApiError(503, "alerts are not running in this Keel")
    deliveries = await alerts.test_rule(rule, time.time())
    return TestOut(
        rule=rule.name, deliveries=[DeliveryOut.model_validate(d.to_dict()) for d in deliveries]
    )


@router.get("/events", response_model=EventList)
async def list_events(
    request: Request,
    rule: str | None = Query(None, description="A rule's id or name (a deleted rule: its id)."),
    limit: int = Query(100, ge=1, le=store.MAX_EVENTS),
) -> EventList:
    """The history of firing, resolved and budget threshold events, latest first."""
    rule_id = None
    if rule is not None:
        found = await store.get_rule(database(request), rule)
        rule_id = found.id if found is not None else rule
    events = await store.list_events(database(request), rule_id=rule_id, limit=limit)
    return EventList(data=[EventOut.model_validate(e) for e in events])
