"""HTTP routes of the exit brackets (`/risk/exits`, `/risk/exit-policy`)."""

from __future__ import annotations

from fastapi import APIRouter

from services.risk.adapters import Adapters
from services.risk.exits.repository import StoredPolicy
from services.risk.exits.schemas import BracketRead, ExitOrderRead, ExitPolicyRead, ExitPolicyWrite, StopMove
from services.risk.exits.service import BracketNotFound, MoveStopRequest, policy_json
from shared.auth.dependencies import ensure_account_access
from shared.auth.roles import Role
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.domain.bracket_model import BracketStatus
from shared.errors import COMMON_RESPONSES
from shared.web import (
    AccountIdPath,
    AccountIdQuery,
    BracketIdPath,
    Limit,
    RiskOfficer,
    RiskReader,
    StopMover,
    error_responses,
)

router = APIRouter(responses=COMMON_RESPONSES, tags=["exits"])


def _visible_accounts(principal: Principal, account_id: str | None) -> list[str] | None:
    if account_id is not None:
        ensure_account_access(principal, account_id)
        return [account_id]
    if ALL_ACCOUNTS in principal.accounts:
        return None
    return sorted(principal.accounts)


def _ensure_visible(principal: Principal, bracket_id: str, account_id: str) -> None:
    # Another account's bracket answers exactly like a missing one: its existence is not revealed.
    if not principal.can_access_account(account_id):
        raise BracketNotFound(f"exit bracket {bracket_id} does not exist")


@router.get("/risk/exits", response_model=list[BracketRead])
async def list_exits(
    principal: RiskReader,
    adapters: Adapters,
    account_id: AccountIdQuery = None,
    status: BracketStatus | None = None,
    limit: Limit = 100,
) -> list[BracketRead]:
    """Exit brackets of the accounts you may see, newest first (filter by account and status)."""
    brackets = await adapters.exits.brackets.search(
        _visible_accounts(principal, account_id), None if status is None else status.value, limit
    )
    return [BracketRead.of(bracket) for bracket in brackets]


@router.get("/risk/exits/{bracket_id}", response_model=BracketRead, responses=error_responses(404))
async def get_exit(bracket_id: BracketIdPath, principal: RiskReader, adapters: Adapters) -> BracketRead:
    """One bracket with its legs and the exit orders it sent."""
    bracket, orders = await adapters.exits.brackets.get(bracket_id)
    _ensure_visible(principal, bracket_id, bracket.account_id)
    fields = ExitOrderRead.model_fields
    return BracketRead.of(bracket, [ExitOrderRead(**{name: order[name] for name in fields}) for order in orders])


@router.patch("/risk/exits/{bracket_id}", response_model=BracketRead, responses=error_responses(404, 409))
async def move_exit_stop(
    bracket_id: BracketIdPath, body: StopMove, principal: StopMover, adapters: Adapters
) -> BracketRead:
    """Move the stop-loss (audited; lowering it needs `allow_unfavourable: true` and the risk role) or re-arm a
    failed bracket (`rearm: true`, audited)."""
    bracket = await adapters.exits.amend(
        bracket_id,
        MoveStopRequest(body.stop_loss, body.allow_unfavourable, body.reason, body.rearm),
        actor=principal.subject,
        may_loosen=principal.has_any_role(Role.RISK),
        check=lambda account_id: _ensure_visible(principal, bracket_id, account_id),
    )
    return BracketRead.of(bracket)


def _policy_read(stored: StoredPolicy) -> ExitPolicyRead:
    return ExitPolicyRead(
        account_id=stored.account_id,
        version=stored.version,
        updated_by=stored.updated_by,
        updated_at=stored.updated_at,
        **policy_json(stored.policy),
    )


@router.get("/risk/exit-policy/{account_id}", response_model=ExitPolicyRead)
async def get_exit_policy(account_id: AccountIdPath, principal: RiskReader, adapters: Adapters) -> ExitPolicyRead:
    """The account's default exits (the built-in defaults, version 0, until one is set)."""
    ensure_account_access(principal, account_id)
    return _policy_read(await adapters.exits.policies.get(account_id))


@router.put("/risk/exit-policy/{account_id}", response_model=ExitPolicyRead)
async def put_exit_policy(
    account_id: AccountIdPath, body: ExitPolicyWrite, principal: RiskOfficer, adapters: Adapters
) -> ExitPolicyRead:
    """Replace the account's default exits (risk role; versioned and audited)."""
    ensure_account_access(principal, account_id)
    return _policy_read(await adapters.exits.policies.put(account_id, body.to_policy(), principal.subject))
