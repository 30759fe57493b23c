"""GET /api/v1/circuits: the state of every target's circuit breaker in this process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from keel.api.auth import require_admin

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require_admin)], tags=["routing"])


@router.get("/circuits")
async def list_circuits(request: Request) -> dict[str, Any]:
    return {"data": request.app.state.routing.breakers.snapshot()}
