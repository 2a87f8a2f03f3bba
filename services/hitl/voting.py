"""Use cases: a director's vote on a request, and the expiry of requests past their time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.hitl.errors import (
    AlreadyVoted,
    NotAnEligibleDirector,
    PayloadHashMismatch,
    RequestAlreadyDecided,
    RequestExpired,
    RequestNotFound,
    SelfApproval,
)
from services.hitl.repository import HitlRepository, StoredRequest, StoredVote
from services.hitl.requests import ReadRequests
from services.hitl.service import Decide, HitlContext, RequestView, Vote, audit_chain
from shared.audit.log import append as audit_append
from shared.auth.tokens import Principal
from shared.contracts.approvals import ApprovalDecision

EXPIRED_REASON = "expired before a decision"


class CastVote:
    """Records one director's vote under the request's row lock; decides on quorum or the first rejection."""

    def __init__(self, context: HitlContext, decide: Decide, reads: ReadRequests) -> None:
        self.context = context
        self.decide = decide
        self.reads = reads

    async def __call__(self, request_id: str, voter: Principal, vote: Vote) -> RequestView:
        """A request found past its expiry is expired in this transaction, and the vote is refused afterwards."""
        expired = False
        async with self.context.uow() as uow:
            repo = HitlRepository(uow.session)
            request = await repo.get(request_id, lock=True)
            if request is None or not voter.can_access_account(request.account_id):
                raise RequestNotFound(f"approval request {request_id} does not exist")
            if request.status != "pending":
                raise RequestAlreadyDecided(f"approval request {request_id} is already {request.status}")
            now = self.context.clock()
            if now >= request.expires_at:
                await self.decide(uow.session, request, ApprovalDecision.EXPIRED, EXPIRED_REASON, [], now)
                expired = True
            else:
                await self._record(uow.session, request, voter.subject, vote, now)
            self.context.wake_after_commit(uow)
        if expired:
            raise RequestExpired(f"approval request {request_id} expired")
        return await self.reads.view(request_id)

    async def _record(
        self, session: AsyncSession, request: StoredRequest, voter: str, vote: Vote, now: datetime
    ) -> None:
        _check_voter(request, voter, vote)
        repo = HitlRepository(session)
        stored = StoredVote(
            voter=voter,
            vote="approve" if vote.approve else "reject",
            reason=vote.reason,
            payload_hash=vote.payload_hash,
            voted_at=now,
        )
        if not await repo.insert_vote(request.request_id, stored):
            raise AlreadyVoted("this director has already voted on the request")
        await audit_append(
            session,
            actor=voter,
            action=f"hitl.vote_{stored.vote}",
            target=request.request_id,
            details={"payload_hash": vote.payload_hash, "reason": vote.reason, "subject_id": request.subject_id},
            chain=audit_chain(request.account_id),
            occurred_at=now,
        )
        if not vote.approve:
            await self.decide(session, request, ApprovalDecision.REJECTED, vote.reason, [], now)
            return
        approvers = [v.voter for v in await repo.votes_of(request.request_id) if v.vote == "approve"]
        if len(approvers) >= request.quorum:
            await self.decide(session, request, ApprovalDecision.APPROVED, vote.reason, approvers, now)


class ExpireDue:
    """Expires pending requests past their expiry (rows another replica has locked are skipped)."""

    def __init__(self, context: HitlContext, decide: Decide) -> None:
        self.context = context
        self.decide = decide

    async def __call__(self, limit: int = 100) -> int:
        """The number of requests expired."""
        async with self.context.uow() as uow:
            repo = HitlRepository(uow.session)
            now = self.context.clock()
            due = await repo.due_for_expiry(now, limit)
            for request in due:
                await self.decide(uow.session, request, ApprovalDecision.EXPIRED, EXPIRED_REASON, [], now)
            if due:
                self.context.wake_after_commit(uow)
        return len(due)


def _check_voter(request: StoredRequest, voter: str, vote: Vote) -> None:
    if voter == request.requested_by:
        raise SelfApproval("the requester of a request cannot vote on it")
    if request.eligible and voter not in request.eligible:
        raise NotAnEligibleDirector("this director is not one of the request's eligible directors")
    if vote.payload_hash != request.payload_hash:
        raise PayloadHashMismatch(
            "the payload changed since it was shown: reload the request and check it again",
            details={"payload_hash": request.payload_hash},
        )
