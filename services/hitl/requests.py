"""Use cases: open an approval request (REST or an `ApprovalRequested` event) and read requests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.hitl.errors import RequestNotFound, SubjectConflict
from services.hitl.policy import PolicyRules, canonical_payload, payload_hash
from services.hitl.repository import HitlRepository, RequestFilter, StoredRequest
from services.hitl.service import PRODUCER, HitlContext, NewRequest, RequestView, audit_chain
from shared.audit.log import append as audit_append
from shared.contracts.approvals import ApprovalRequestOpened
from shared.contracts.base import outbox_payload
from shared.contracts.registry import new_envelope
from shared.events import add_to_outbox
from shared.events.topics import HITL_REQUEST_EVENTS


def _notional(payload: dict[str, Any]) -> Decimal | None:
    raw = payload.get("notional")
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


class ReadRequests:
    """Requests with their votes and decisions, and a requester's notifications."""

    def __init__(self, context: HitlContext) -> None:
        self.context = context

    async def view(self, request_id: str) -> RequestView:
        async with self.context.uow() as uow:
            repo = HitlRepository(uow.session)
            request = await repo.get(request_id)
            if request is None:
                raise RequestNotFound(f"approval request {request_id} does not exist")
            return RequestView(request, await repo.votes_of(request_id), await repo.decision_of(request_id))

    async def search(self, filters: RequestFilter) -> list[RequestView]:
        async with self.context.uow() as uow:
            repo = HitlRepository(uow.session)
            return [
                RequestView(
                    request, await repo.votes_of(request.request_id), await repo.decision_of(request.request_id)
                )
                for request in await repo.list_requests(filters)
            ]

    async def notifications(self, recipient: str) -> list[dict[str, Any]]:
        """What happened to the recipient's own requests (decided, rejected, expired)."""
        async with self.context.uow() as uow:
            return await HitlRepository(uow.session).notifications_for(recipient)


class OpenRequest:
    """Opens a request; the same subject with the same payload is the same request."""

    def __init__(self, context: HitlContext, reads: ReadRequests) -> None:
        self.context = context
        self.reads = reads

    async def submit(self, new: NewRequest) -> tuple[RequestView, bool]:
        """Open a request in its own transaction (REST); returns the view and whether it was created."""
        async with self.context.uow() as uow:
            stored, created = await self.open_in(uow.session, new)
            self.context.wake_after_commit(uow)
        return await self.reads.view(stored.request_id), created

    async def open_in(self, session: AsyncSession, new: NewRequest) -> tuple[StoredRequest, bool]:
        """Open a request in the caller's transaction (the consumer's inbox transaction)."""
        repo = HitlRepository(session)
        digest = payload_hash(new.payload)
        existing = await repo.by_subject(new.subject_type, new.subject_id)
        if existing is not None:
            return _same_request(existing, digest), False
        policy = await repo.current_policy(new.account_id)
        rules = PolicyRules() if policy is None else PolicyRules.model_validate(policy.rules)
        now = self.context.clock()
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
            quorum=rules.quorum if new.approvals_needed is None else new.approvals_needed,
            eligible=sorted(set(rules.directors)),
            status="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=rules.expiry_s),
            decided_at=None,
        )
        if not await repo.insert_request(request):  # a concurrent producer opened it first
            existing = await repo.by_subject(new.subject_type, new.subject_id)
            assert existing is not None  # noqa: S101 - the conflicting row exists
            return _same_request(existing, digest), False
        await self._announce(session, request)
        return request, True

    async def _announce(self, session: AsyncSession, request: StoredRequest) -> None:
        message = ApprovalRequestOpened(
            request_id=request.request_id,
            subject_type=request.subject_type,
            subject_id=request.subject_id,
            account_id=request.account_id,
            requested_by=request.requested_by,
            payload_hash=request.payload_hash,
            quorum=request.quorum,
            expires_at=request.expires_at,
        )
        envelope = new_envelope(message, producer=PRODUCER, aggregate_id=request.request_id, now=request.created_at)
        await add_to_outbox(session, self.context.tables, topic=HITL_REQUEST_EVENTS, envelope=envelope)
        await audit_append(
            session,
            actor=request.requested_by,
            action="hitl.request_opened",
            target=request.request_id,
            details={**outbox_payload(message), "payload": request.payload},
            chain=audit_chain(request.account_id),
            occurred_at=request.created_at,
        )


def _same_request(existing: StoredRequest, digest: str) -> StoredRequest:
    if existing.payload_hash != digest:
        raise SubjectConflict(
            f"a request for {existing.subject_type} {existing.subject_id} exists with another payload",
            details={"request_id": existing.request_id},
        )
    return existing
