"""HTTP routes of the hedge service (thin: auth, parse, call a use case, return)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from services.hedge.adapters import HedgeAdapters
from services.hedge.schemas import (
    HedgeInfo,
    HedgeStatus,
    OverrideClear,
    OverrideHistoryRead,
    OverrideSet,
    PolicyRead,
    PolicyWrite,
    RearmRequest,
    RecommendationRead,
)
from shared.app_factory import adapters_of
from shared.auth.dependencies import CurrentPrincipal, ensure_account_access
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.errors import COMMON_RESPONSES
from shared.service_kit import RuntimeDep, describe_service
from shared.web import AccountIdPath, HedgeReader, HedgeSteward, Limit, error_responses


def get_hedge(runtime: RuntimeDep) -> HedgeAdapters:
    return adapters_of(runtime, HedgeAdapters)


Hedge = Annotated[HedgeAdapters, Depends(get_hedge)]

router = APIRouter(prefix="/hedge", tags=["hedge"], responses=COMMON_RESPONSES)


def _visible(principal: Principal) -> list[str] | None:
    return None if ALL_ACCOUNTS in principal.accounts else sorted(principal.accounts)


def _actor(principal: Principal) -> str:
    return f"user:{principal.subject}"


@router.get("/info", response_model=HedgeInfo, summary="Describe the hedge service")
async def info(principal: CurrentPrincipal, runtime: RuntimeDep, hedge: Hedge) -> HedgeInfo:
    """Service name, version, environment, outbox backlog and the kill-switch recommendations in force."""
    base = await describe_service(runtime)
    active = await hedge.queries.active_recommendations(_visible(principal))
    return HedgeInfo(**base.model_dump(), active_recommendations=active)


@router.get("/status", response_model=list[HedgeStatus])
async def list_status(principal: HedgeReader, hedge: Hedge) -> list[HedgeStatus]:
    """Hedge status of every tracked account the caller may see."""
    return await hedge.queries.statuses(_visible(principal))


@router.get("/status/{account_id}", response_model=HedgeStatus, responses=error_responses(404))
async def get_status(account_id: AccountIdPath, principal: HedgeReader, hedge: Hedge) -> HedgeStatus:
    """Computed target and its inputs (volatility, drawdown, NAV, peak), override, effective target, open order."""
    ensure_account_access(principal, account_id)
    return await hedge.queries.status(account_id)


@router.put(
    "/overrides/{account_id}",
    response_model=HedgeStatus,
    responses={
        202: {"model": HedgeStatus, "description": "pending director approval"},
        **error_responses(404, 422, 503),
    },
)
async def set_override(
    account_id: AccountIdPath, body: OverrideSet, principal: HedgeSteward, hedge: Hedge, response: Response
) -> HedgeStatus:
    """Fix the account's target hedge fraction until `expires_at` (risk or director; audited, with history).

    When the account's hitl policy has `hedge_override` set, the override waits for a director instead: 202
    with `pending_override.status` "pending_approval"; the current override stays in force meanwhile."""
    ensure_account_access(principal, account_id)
    status, pending = await hedge.overrides.request_override(account_id, body, _actor(principal), principal.subject)
    if pending:
        response.status_code = 202
    return status


@router.delete("/overrides/{account_id}", response_model=HedgeStatus, responses=error_responses(404))
async def clear_override(
    account_id: AccountIdPath, body: OverrideClear, principal: HedgeSteward, hedge: Hedge
) -> HedgeStatus:
    """Remove the account's override with a reason (risk or director; audited, with history)."""
    ensure_account_access(principal, account_id)
    return await hedge.overrides.clear_override(account_id, body, _actor(principal))


@router.get("/overrides/{account_id}/history", response_model=list[OverrideHistoryRead])
async def override_history(
    account_id: AccountIdPath,
    principal: HedgeReader,
    hedge: Hedge,
    limit: Limit = 100,
) -> list[OverrideHistoryRead]:
    """Every override change of the account, newest first: who, when, why, the previous value."""
    ensure_account_access(principal, account_id)
    return await hedge.queries.override_history(account_id, limit)


@router.get("/recommendations", response_model=list[RecommendationRead])
async def list_recommendations(principal: HedgeReader, hedge: Hedge) -> list[RecommendationRead]:
    """Kill-switch recommendations raised and not re-armed, for the accounts the caller may see."""
    return await hedge.queries.active_recommendations(_visible(principal))


@router.post(
    "/recommendations/{account_id}/rearm", response_model=list[RecommendationRead], responses=error_responses(409)
)
async def rearm(
    account_id: AccountIdPath, body: RearmRequest, principal: HedgeSteward, hedge: Hedge
) -> list[RecommendationRead]:
    """Re-arm the account's raised recommendations so they can be raised again (risk or director; audited)."""
    ensure_account_access(principal, account_id)
    return await hedge.recommendations.rearm(account_id, body, _actor(principal))


@router.get("/policies/{account_id}", response_model=PolicyRead)
async def get_policy(account_id: AccountIdPath, principal: HedgeReader, hedge: Hedge) -> PolicyRead:
    """The account's hedge policy in force (version 0: the service default from the settings)."""
    ensure_account_access(principal, account_id)
    return await hedge.policies.get_policy(account_id)


@router.put("/policies/{account_id}", response_model=PolicyRead, responses=error_responses(422))
async def set_policy(account_id: AccountIdPath, body: PolicyWrite, principal: HedgeSteward, hedge: Hedge) -> PolicyRead:
    """A new version of the account's hedge policy (risk or director; audited; floor > cap and the like are 422)."""
    ensure_account_access(principal, account_id)
    return await hedge.policies.set_policy(account_id, body, _actor(principal))
