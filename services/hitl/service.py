"""Use cases of the hitl service: repositories, the policy rules and the outbox inside one unit of work.

Exactly one decision per request: every vote and the expiry worker lock the request row
(`SELECT ... FOR UPDATE`, the worker with `SKIP LOCKED`) and change it only while it is `pending`; the
decision row's primary key is the request id, so even a bug could not store a second decision.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from pydantic import JsonValue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.hitl.errors import (
    AlreadyVoted,
    NotAnEligibleDirector,
    PayloadHashMismatch,
    RequestAlreadyDecided,
    RequestExpired,
    RequestNotFound,
    SelfApproval,
    SubjectConflict,
)
from services.hitl.mirror import PolicyMirror
from services.hitl.policy import PolicyRules, canonical_payload, payload_hash
from services.hitl.repository import (
    HitlRepository,
    RequestFilter,
    StoredDecision,
    StoredPolicy,
    StoredRequest,
    StoredVote,
)
from shared.audit.log import append as audit_append
from shared.auth.tokens import Principal
from shared.db import UnitOfWork
from shared.events import Envelope, EventTables, add_to_outbox
from shared.events.topics import HITL_DECISIONS, HITL_REQUEST_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]
OnCommit = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class NewRequest:
    """What a producer asks the directors to approve."""

    subject_type: str
    subject_id: str
    account_id: str
    requested_by: str
    payload: dict[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request with its votes and decision, as the API and the page show it."""

    request: StoredRequest
    votes: list[StoredVote]
    decision: StoredDecision | None


@dataclass(frozen=True, slots=True)
class Vote:
    """One director's vote as the caller submitted it."""

    approve: bool
    payload_hash: str
    reason: str | None


def _audit_chain(account_id: str) -> str:
    return f"hitl:{account_id}"


def _notional(payload: dict[str, Any]) -> Decimal | None:
    raw = payload.get("notional")
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


class HitlService:
    """Policies, requests, votes, decisions and expiry of director approvals."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        clock: Clock,
        decisions_topic: str = HITL_DECISIONS,
        on_commit: OnCommit | None = None,
        mirror: PolicyMirror | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.tables = tables
        self.clock = clock
        self.decisions_topic = decisions_topic
        self.on_commit = on_commit
        self.mirror = mirror  # writes committed policy versions to Redis for the OMS (None: not mirrored)

    def _uow(self) -> UnitOfWork:
        uow = UnitOfWork(self.sessionmaker)
        return uow

    def _wake_relay(self, uow: UnitOfWork) -> None:
        if self.on_commit is not None:
            uow.after_commit(self.on_commit)

    # --- policies ---------------------------------------------------------------------------------------------

    async def policy(self, account_id: str) -> StoredPolicy | None:
        """The current policy version of `account_id` (None: none stored, the defaults apply)."""
        async with self._uow() as uow:
            return await HitlRepository(uow.session).current_policy(account_id)

    async def put_policy(self, account_id: str, rules: PolicyRules, actor: str) -> StoredPolicy:
        """Store a new version of the account's policy (versions are never overwritten), audited, then mirror it
        to Redis (a failed write is retried by the mirror loop; the stored version stands)."""
        async with self._uow() as uow:
            if self.mirror is not None:
                uow.after_commit(partial(self._mirror_after_commit, self.mirror, account_id))
            repo = HitlRepository(uow.session)
            await repo.lock_policy_versions(account_id)
            current = await repo.current_policy(account_id)
            policy = StoredPolicy(
                account_id=account_id,
                version=1 if current is None else current.version + 1,
                rules=rules.model_dump(mode="json"),
                created_by=actor,
                created_at=self.clock(),
            )
            await repo.insert_policy(policy)
            await audit_append(
                uow.session,
                actor=actor,
                action="hitl.policy_changed",
                target=account_id,
                details={
                    "version": policy.version,
                    "rules": policy.rules,
                    "previous": None if current is None else current.rules,
                },
                chain=_audit_chain(account_id),
                occurred_at=policy.created_at,
            )
        return policy

    @staticmethod
    async def _mirror_after_commit(mirror: PolicyMirror, account_id: str) -> None:
        await mirror.mirror_account(account_id)  # a failure is logged and retried by the mirror loop

    # --- requests ---------------------------------------------------------------------------------------------

    async def submit(self, new: NewRequest) -> tuple[RequestView, bool]:
        """Open a request in its own transaction (REST); returns the view and whether it was created."""
        async with self._uow() as uow:
            stored, created = await self.open_request(uow.session, new)
            self._wake_relay(uow)
        return await self.view(stored.request_id), created

    async def open_request(self, session: AsyncSession, new: NewRequest) -> tuple[StoredRequest, bool]:
        """Open a request in the caller's transaction; the same subject with the same payload is the same request."""
        repo = HitlRepository(session)
        digest = payload_hash(new.payload)
        existing = await repo.by_subject(new.subject_type, new.subject_id)
        if existing is not None:
            return self._same_request(existing, digest), False
        policy = await repo.current_policy(new.account_id)
        rules = PolicyRules() if policy is None else PolicyRules.model_validate(policy.rules)
        now = self.clock()
        request = StoredRequest(
            request_id=str(uuid.uuid4()),
            subject_type=new.subject_type,
            subject_id=new.subject_id,
            account_id=new.account_id,
            requested_by=new.requested_by,
            source=new.source,
            payload_json=canonical_payload(new.payload),
            payload_hash=digest,
            notional=_notional(new.payload),
            policy_version=None if policy is None else policy.version,
            quorum=rules.quorum,
            eligible=sorted(set(rules.directors)),
            status="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=rules.expiry_s),
            decided_at=None,
        )
        if not await repo.insert_request(request):  # a concurrent producer opened it first
            existing = await repo.by_subject(new.subject_type, new.subject_id)
            assert existing is not None  # noqa: S101 - the conflicting row exists
            return self._same_request(existing, digest), False
        await self._announce_request(session, request)
        return request, True

    @staticmethod
    def _same_request(existing: StoredRequest, digest: str) -> StoredRequest:
        if existing.payload_hash != digest:
            raise SubjectConflict(
                f"a request for {existing.subject_type} {existing.subject_id} exists with another payload",
                details={"request_id": existing.request_id},
            )
        return existing

    async def _announce_request(self, session: AsyncSession, request: StoredRequest) -> None:
        payload: dict[str, JsonValue] = {
            "request_id": request.request_id,
            "subject_type": request.subject_type,
            "subject_id": request.subject_id,
            "account_id": request.account_id,
            "requested_by": request.requested_by,
            "payload_hash": request.payload_hash,
            "quorum": request.quorum,
            "expires_at": request.expires_at.isoformat(),
        }
        envelope = Envelope.new(
            type="ApprovalRequestOpened",
            producer="hitl",
            aggregate_id=request.request_id,
            payload=payload,
            now=request.created_at,
        )
        await add_to_outbox(session, self.tables, topic=HITL_REQUEST_EVENTS, envelope=envelope)
        await audit_append(
            session,
            actor=request.requested_by,
            action="hitl.request_opened",
            target=request.request_id,
            details={**payload, "payload": request.payload},
            chain=_audit_chain(request.account_id),
            occurred_at=request.created_at,
        )

    # --- reading ----------------------------------------------------------------------------------------------

    async def view(self, request_id: str) -> RequestView:
        async with self._uow() as uow:
            repo = HitlRepository(uow.session)
            request = await repo.get(request_id)
            if request is None:
                raise RequestNotFound(f"approval request {request_id} does not exist")
            return RequestView(request, await repo.votes_of(request_id), await repo.decision_of(request_id))

    async def list_requests(self, filters: RequestFilter) -> list[RequestView]:
        async with self._uow() as uow:
            repo = HitlRepository(uow.session)
            return [
                RequestView(
                    request, await repo.votes_of(request.request_id), await repo.decision_of(request.request_id)
                )
                for request in await repo.list_requests(filters)
            ]

    # --- voting -----------------------------------------------------------------------------------------------

    async def vote(self, request_id: str, voter: Principal, vote: Vote) -> RequestView:
        """Record one director's vote under the request's row lock; decide when quorum or a rejection is reached.

        A request found past its expiry is expired in this transaction, and the vote is refused afterwards.
        """
        expired = False
        async with self._uow() as uow:
            repo = HitlRepository(uow.session)
            request = await repo.get(request_id, lock=True)
            if request is None or not voter.can_access_account(request.account_id):
                raise RequestNotFound(f"approval request {request_id} does not exist")
            if request.status != "pending":
                raise RequestAlreadyDecided(f"approval request {request_id} is already {request.status}")
            now = self.clock()
            if now >= request.expires_at:
                await self._decide(uow.session, request, "expired", "expired before a decision", [], now)
                self._wake_relay(uow)
                expired = True
            else:
                await self._record_vote(uow.session, request, voter.subject, vote, now)
                self._wake_relay(uow)
        if expired:
            raise RequestExpired(f"approval request {request_id} expired")
        return await self.view(request_id)

    async def _record_vote(
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
            chain=_audit_chain(request.account_id),
            occurred_at=now,
        )
        if not vote.approve:
            await self._decide(session, request, "rejected", vote.reason, [], now)
            return
        approvers = [v.voter for v in await repo.votes_of(request.request_id) if v.vote == "approve"]
        if len(approvers) >= request.quorum:
            await self._decide(session, request, "approved", vote.reason, approvers, now)

    async def _decide(
        self,
        session: AsyncSession,
        request: StoredRequest,
        decision: str,
        reason: str | None,
        approvers: list[str],
        now: datetime,
    ) -> None:
        """Store, publish (outbox), notify and audit the one decision of a locked pending request."""
        repo = HitlRepository(session)
        stored = StoredDecision(
            decision=decision, reason=reason, payload_hash=request.payload_hash, approvers=approvers, decided_at=now
        )
        envelope = Envelope.new(
            type="ApprovalDecided",
            producer="hitl",
            aggregate_id=request.subject_id,
            payload=decision_payload(request, stored),
            now=now,
        )
        await repo.set_status(request.request_id, decision, now)
        await repo.insert_decision(request.request_id, stored, str(envelope.event_id))
        await add_to_outbox(session, self.tables, topic=self.decisions_topic, envelope=envelope)
        await repo.notify(
            request.requested_by,
            request.request_id,
            f"request_{decision}",
            f"Your approval request for {request.subject_type} {request.subject_id} was {decision}"
            + (f": {reason}" if reason else ""),
            now,
        )
        await audit_append(
            session,
            actor="hitl:expiry" if decision == "expired" else (approvers[-1] if approvers else "hitl"),
            action=f"hitl.request_{decision}",
            target=request.request_id,
            details=decision_payload(request, stored),
            chain=_audit_chain(request.account_id),
            occurred_at=now,
        )
        log.info("approval_decided", request_id=request.request_id, decision=decision)

    # --- expiry -----------------------------------------------------------------------------------------------

    async def expire_due(self, limit: int = 100) -> int:
        """Expire pending requests past their expiry (rows another replica has locked are skipped)."""
        async with self._uow() as uow:
            repo = HitlRepository(uow.session)
            now = self.clock()
            due = await repo.due_for_expiry(now, limit)
            for request in due:
                await self._decide(uow.session, request, "expired", "expired before a decision", [], now)
            if due:
                self._wake_relay(uow)
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


def decision_payload(request: StoredRequest, decision: StoredDecision) -> dict[str, Any]:
    """The `ApprovalDecided` payload on hitl.decisions.v1 (contract), plus the account id."""
    return {
        "request_id": request.request_id,
        "subject_type": request.subject_type,
        "subject_id": request.subject_id,
        "account_id": request.account_id,
        "decision": decision.decision,
        "reason": decision.reason,
        "payload_hash": decision.payload_hash,
        "decided_at": decision.decided_at.isoformat(),
        "approvers": list(decision.approvers),
    }
