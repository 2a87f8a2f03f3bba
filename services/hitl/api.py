"""HTTP routes of the hitl service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from services.hitl.adapters import Adapters, HitlAdapters
from services.hitl.errors import RequestNotFound
from services.hitl.policy import ApprovalFacts, PolicyRules, needs_approval
from services.hitl.policy_versions import PolicyChangePending, PolicyProposal
from services.hitl.repository import RequestFilter, StoredPolicy
from services.hitl.schemas import (
    DecisionRead,
    PolicyRead,
    RejectCreate,
    RequestCreate,
    RequestPage,
    RequestRead,
    VoteCreate,
    VoteRead,
)
from services.hitl.service import NewRequest, RequestView, Vote, ensure_fresh_otp
from shared.auth.dependencies import ensure_account_access
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.contracts.approvals import ApprovalReason
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router
from shared.web import (
    AccountIdPath,
    AccountIdQuery,
    Anyone,
    ApprovalReader,
    Director,
    Limit,
    PolicyReader,
    PolicyWriter,
    Requester,
    RequestIdPath,
    error_responses,
)

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("hitl"))


def _policy_read(account_id: str, policy: StoredPolicy | None) -> PolicyRead:
    if policy is None:
        return PolicyRead(account_id=account_id, version=0, rules=PolicyRules(), created_by=None, created_at=None)
    return PolicyRead(
        account_id=account_id,
        version=policy.version,
        rules=PolicyRules.model_validate(policy.rules),
        created_by=policy.created_by,
        created_at=policy.created_at,
    )


def request_read(view: RequestView) -> RequestRead:
    """The wire form of a request with its votes and decision."""
    request, decision = view.request, view.decision
    return RequestRead(
        request_id=request.request_id,
        subject_type=request.subject_type,
        subject_id=request.subject_id,
        account_id=request.account_id,
        requested_by=request.requested_by,
        source="event" if request.source == "event" else "rest",
        payload=request.payload,
        payload_hash=request.payload_hash,
        notional=request.notional,
        status=request.status,
        quorum=request.quorum,
        eligible_directors=request.eligible,
        policy_version=request.policy_version,
        created_at=request.created_at,
        expires_at=request.expires_at,
        decided_at=request.decided_at,
        votes=[VoteRead(voter=v.voter, vote=v.vote, reason=v.reason, voted_at=v.voted_at) for v in view.votes],
        decision=None
        if decision is None
        else DecisionRead(
            decision=decision.decision,
            reason=decision.reason,
            payload_hash=decision.payload_hash,
            approvers=decision.approvers,
            decided_at=decision.decided_at,
        ),
    )


def visible_accounts(principal: Principal) -> list[str] | None:
    """Accounts whose requests the principal may see (None: every account)."""
    return None if ALL_ACCOUNTS in principal.accounts else sorted(principal.accounts)


@router.get("/hitl/policies/{account_id}", response_model=PolicyRead, tags=["policies"])
async def get_policy(account_id: AccountIdPath, principal: PolicyReader, hitl: Adapters) -> PolicyRead:
    """The account's current approval policy (version 0 with the defaults when none is stored)."""
    ensure_account_access(principal, account_id)
    return _policy_read(account_id, await hitl.policies.current(account_id))


@router.put(
    "/hitl/policies/{account_id}",
    response_model=PolicyRead,
    tags=["policies"],
    responses={
        202: {"model": RequestRead, "description": "A weakening that waits for other directors: its request"},
        **error_responses(403),
    },
)
async def put_policy(
    account_id: AccountIdPath, body: PolicyRules, principal: PolicyWriter, hitl: Adapters
) -> PolicyRead | JSONResponse:
    """Store a new version of the account's approval policy (audited; older versions are kept). Making it less
    strict needs a director with a fresh TOTP proof, and (quorum above 1) other directors' approval: 202."""
    ensure_account_access(principal, account_id)
    proposal = PolicyProposal(account_id, body, principal, hitl.settings.otp_max_age_s)
    outcome = await hitl.policies.put(proposal)
    if isinstance(outcome, PolicyChangePending):
        view = await hitl.requests.view(outcome.request.request_id)
        return JSONResponse(request_read(view).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    return _policy_read(account_id, outcome)


@router.post("/hitl/policies/{account_id}/evaluate", response_model=list[ApprovalReason], tags=["policies"])
async def evaluate_policy(
    account_id: AccountIdPath, body: ApprovalFacts, principal: Requester, hitl: Adapters
) -> list[ApprovalReason]:
    """Why (if at all) a request with these facts needs director approval under the account's current policy."""
    ensure_account_access(principal, account_id)
    policy = await hitl.policies.current(account_id)
    return needs_approval(_policy_read(account_id, policy).rules, body)


@router.post(
    "/hitl/requests",
    response_model=RequestRead,
    status_code=status.HTTP_201_CREATED,
    tags=["requests"],
    responses={
        200: {"model": RequestRead, "description": "Same subject and payload: the existing request"},
        **error_responses(409),
    },
)
async def create_request(body: RequestCreate, principal: Requester, hitl: Adapters, response: Response) -> RequestRead:
    """Ask the directors to approve `payload`; the request binds the payload's RFC 8785 SHA-256."""
    ensure_account_access(principal, body.account_id)
    new = NewRequest(
        subject_type=body.subject_type,
        subject_id=body.subject_id,
        account_id=body.account_id,
        requested_by=principal.subject,
        payload=body.payload,
        source="rest",
    )
    view, created = await hitl.open_request.submit(new)
    if not created:
        response.status_code = status.HTTP_200_OK
    return request_read(view)


@router.get("/hitl/requests", response_model=RequestPage, tags=["requests"])
async def list_requests(
    principal: ApprovalReader,
    hitl: Adapters,
    status_filter: Annotated[
        Literal["pending", "decided", "approved", "rejected", "expired"] | None,
        Query(alias="status", description="pending, decided (history), or one decision"),
    ] = None,
    account_id: AccountIdQuery = None,
    limit: Limit = 100,
) -> RequestPage:
    """Requests visible to the caller, newest first."""
    accounts = visible_accounts(principal)
    if account_id is not None:
        ensure_account_access(principal, account_id)
        accounts = [account_id]
    views = await hitl.requests.search(RequestFilter(status=status_filter, accounts=accounts, limit=limit))
    return RequestPage(items=[request_read(view) for view in views])


async def _visible(hitl: HitlAdapters, principal: Principal, request_id: str) -> RequestView:
    view = await hitl.requests.view(request_id)
    if not principal.can_access_account(view.request.account_id):
        raise RequestNotFound(f"approval request {request_id} does not exist")
    return view


@router.get(
    "/hitl/requests/{request_id}", response_model=RequestRead, tags=["requests"], responses=error_responses(404)
)
async def get_request(request_id: RequestIdPath, principal: ApprovalReader, hitl: Adapters) -> RequestRead:
    """One request with its exact payload, hash, votes and decision."""
    return request_read(await _visible(hitl, principal, request_id))


@router.post(
    "/hitl/requests/{request_id}/approve",
    response_model=RequestRead,
    tags=["requests"],
    responses=error_responses(403, 404, 409),
)
async def approve_request(
    request_id: RequestIdPath, body: VoteCreate, principal: Director, hitl: Adapters
) -> RequestRead:
    """Approve what the caller saw (payload_hash); needs role director and a TOTP proof of the last 120 s."""
    ensure_fresh_otp(principal, hitl.context.clock(), hitl.settings.otp_max_age_s)
    vote = Vote(approve=True, payload_hash=body.payload_hash, reason=body.reason)
    return request_read(await hitl.vote(request_id, principal, vote))


@router.post(
    "/hitl/requests/{request_id}/reject",
    response_model=RequestRead,
    tags=["requests"],
    responses=error_responses(403, 404, 409),
)
async def reject_request(
    request_id: RequestIdPath, body: RejectCreate, principal: Director, hitl: Adapters
) -> RequestRead:
    """Reject with a reason (required); one rejection decides the request."""
    ensure_fresh_otp(principal, hitl.context.clock(), hitl.settings.otp_max_age_s)
    vote = Vote(approve=False, payload_hash=body.payload_hash, reason=body.reason)
    return request_read(await hitl.vote(request_id, principal, vote))


@router.get("/hitl/notifications", tags=["requests"])
async def my_notifications(principal: Anyone, hitl: Adapters) -> list[dict[str, Any]]:
    """What happened to the caller's own requests (decided, rejected, expired)."""
    rows = await hitl.requests.notifications(principal.subject)
    return [
        {
            "request_id": row["request_id"],
            "kind": row["kind"],
            "message": row["message"],
            "created_at": row["created_at"].isoformat(),
        }
        for row in rows
    ]
