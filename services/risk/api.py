"""HTTP routes of the risk service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from fastapi.responses import JSONResponse

from services.risk.adapters import Adapters
from services.risk.approvals import PendingApproval
from services.risk.exits.api import router as exits_router
from services.risk.repository import StoredLimits, StoredState
from services.risk.schemas import (
    ApprovalPending,
    LimitsRead,
    LimitsUpdate,
    TradingStateChange,
    TradingStateCommand,
    TradingStateOverview,
    TradingStateRead,
)
from services.risk.service import RiskService, StateChange
from shared.auth.dependencies import ensure_account_access
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.domain.types import TradingState
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router
from shared.web import AccountIdPath, RiskOfficer, RiskReader, StateSteward, error_responses


def get_risk_service(adapters: Adapters) -> RiskService:
    return adapters.risk


Risk = Annotated[RiskService, Depends(get_risk_service)]

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("risk"))
router.include_router(exits_router)


def _limits_read(account_id: str, stored: StoredLimits | None) -> LimitsRead:
    if stored is None:
        return LimitsRead(account_id=account_id, version=0, actor=None, reason=None, created_at=None)
    return LimitsRead.model_validate(
        {
            **stored.values,
            "account_id": account_id,
            "version": stored.version,
            "actor": stored.actor,
            "reason": stored.reason,
            "created_at": stored.created_at,
        }
    )


def _state_read(state: StoredState) -> TradingStateRead:
    never = state.version == 0
    return TradingStateRead(
        scope="global" if state.scope == "global" else "account",
        account_id=state.account_id,
        state=state.state,
        version=state.version,
        reason=None if never else state.reason,
        actor=None if never else state.actor,
        changed_at=None if never else state.changed_at,
    )


def _change_read(change: StateChange) -> TradingStateChange:
    read = _state_read(change.state)
    return TradingStateChange(**read.model_dump(), previous=change.previous, changed=change.changed)


@router.get("/risk/limits/{account_id}", response_model=LimitsRead, tags=["limits"])
async def get_limits(account_id: AccountIdPath, principal: RiskReader, risk: Risk) -> LimitsRead:
    """The account's current pre-trade limits (version 0 and nulls: none configured)."""
    ensure_account_access(principal, account_id)
    return _limits_read(account_id, await risk.limits(account_id))


PENDING: dict[int | str, dict[str, Any]] = {
    202: {"model": ApprovalPending, "description": "held for a director by the account's approval policy"}
}


def _pending(pending: PendingApproval) -> JSONResponse:
    body = ApprovalPending(subject_id=pending.subject_id, payload_hash=pending.payload_hash)
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.put(
    "/risk/limits/{account_id}",
    response_model=LimitsRead,
    tags=["limits"],
    responses={**PENDING, **error_responses(409, 422)},
)
async def put_limits(
    account_id: AccountIdPath, body: LimitsUpdate, principal: RiskOfficer, risk: Risk
) -> LimitsRead | JSONResponse:
    """Replace the account's limits with a new version (role `risk`, audited, published for the OMS); a raise waits
    for a director (202) when the account's approval policy has `limit_raise` or cannot be read."""
    ensure_account_access(principal, account_id)
    stored = await risk.put_limits(account_id, body, body.reason, principal.subject)
    if isinstance(stored, PendingApproval):
        return _pending(stored)
    return _limits_read(account_id, stored)


@router.get("/risk/trading-state", response_model=TradingStateOverview, tags=["trading-state"])
async def get_trading_state(principal: RiskReader, risk: Risk) -> TradingStateOverview:
    """The global trading state and every account state that was ever set (of the accounts you may see)."""
    visible = None if ALL_ACCOUNTS in principal.accounts else sorted(principal.accounts)
    global_state, accounts = await risk.states(visible)
    return TradingStateOverview.model_validate(
        {"global": _state_read(global_state), "accounts": [_state_read(row) for row in accounts]}
    )


async def _change(
    body: TradingStateCommand, principal: Principal, risk: RiskService, target: TradingState
) -> TradingStateChange | JSONResponse:
    if body.scope == "account" and body.account_id is not None:
        ensure_account_access(principal, body.account_id)
    change = await risk.change_state(
        body.scope, body.account_id, target, body.reason, principal.subject, principal.roles
    )
    if change.pending is not None:
        return _pending(change.pending)
    return _change_read(change)


@router.post(
    "/risk/kill-switch", response_model=TradingStateChange, tags=["trading-state"], responses=error_responses(403)
)
async def kill_switch(
    body: TradingStateCommand, principal: StateSteward, risk: Risk
) -> TradingStateChange | JSONResponse:
    """HALTED: new orders denied, cancels pass (roles risk or director; audited, published for the OMS)."""
    return await _change(body, principal, risk, TradingState.HALTED)


@router.post(
    "/risk/safe-mode",
    response_model=TradingStateChange,
    tags=["trading-state"],
    responses={**PENDING, **error_responses(403)},
)
async def safe_mode(
    body: TradingStateCommand, principal: StateSteward, risk: Risk
) -> TradingStateChange | JSONResponse:
    """REDUCING: only exposure-reducing orders pass (risk or director; from HALTED a director)."""
    return await _change(body, principal, risk, TradingState.REDUCING)


@router.post(
    "/risk/resume",
    response_model=TradingStateChange,
    tags=["trading-state"],
    responses={**PENDING, **error_responses(403)},
)
async def resume(body: TradingStateCommand, principal: StateSteward, risk: Risk) -> TradingStateChange | JSONResponse:
    """ACTIVE again: from HALTED needs `director`, from REDUCING `risk` or `director`; an account leaving HALTED
    also waits for a second director (202) when its approval policy has `resume_from_halted` or cannot be read."""
    return await _change(body, principal, risk, TradingState.ACTIVE)
