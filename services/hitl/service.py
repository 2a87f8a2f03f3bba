"""What the hitl use cases share: their context, the request/vote values, and the one decision of a request.

Exactly one decision per request: every vote and the expiry worker lock the request row
(`SELECT ... FOR UPDATE`, the worker with `SKIP LOCKED`) and change it only while it is `pending`; the
decision row's primary key is the request id, so even a bug could not store a second decision.

The use cases: `policy_versions` (approval policies), `requests` (open and read requests), `voting` (votes,
and the expiry of requests past their time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.hitl.errors import FreshOtpRequired
from services.hitl.repository import HitlRepository, StoredDecision, StoredRequest, StoredVote
from shared.audit.log import append as audit_append
from shared.auth.tokens import Principal
from shared.clock import Clock
from shared.contracts.approvals import ApprovalDecided, ApprovalDecision
from shared.contracts.base import outbox_payload
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.events import EventTables, add_to_outbox
from shared.events.topics import HITL_CONTROLS, HITL_DECISIONS
from shared.observability.logging import get_logger

log = get_logger(__name__)

PRODUCER = "hitl"
OnCommit = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class HitlContext:
    """What every hitl use case shares: the database, the outbox tables, the clock and the relay's wake."""

    sessionmaker: async_sessionmaker[AsyncSession]
    tables: EventTables
    clock: Clock
    decisions_topic: str = HITL_DECISIONS
    on_commit: OnCommit | None = None
    controls_topic: str = HITL_CONTROLS  # approval policies for the OMS (compacted; shared/contracts/controls.py)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    def wake_after_commit(self, uow: UnitOfWork) -> None:
        """Wake the outbox relay once `uow` commits."""
        if self.on_commit is not None:
            uow.after_commit(self.on_commit)


@dataclass(frozen=True, slots=True)
class NewRequest:
    """What a producer asks the directors to approve."""

    subject_type: str
    subject_id: str
    account_id: str
    requested_by: str
    payload: dict[str, Any]
    source: str
    approvals_needed: int | None = None  # None: the account policy's quorum


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


def audit_chain(account_id: str) -> str:
    return f"hitl:{account_id}"


def ensure_fresh_otp(principal: Principal, now: datetime, max_age_s: int) -> None:
    """A TOTP proof (amr "otp") no older than `max_age_s` (step up at the accounts service): voting, and making
    an approval policy less strict."""
    auth_time = principal.auth_time
    if "otp" not in principal.amr or auth_time is None:
        raise FreshOtpRequired("this needs a login with a TOTP code (POST /auth/step-up)")
    age = now - auth_time
    if age > timedelta(seconds=max_age_s) or age < timedelta(seconds=-5):
        raise FreshOtpRequired(f"the TOTP proof is older than {max_age_s} s: step up again (POST /auth/step-up)")


# What an approval of a hitl-owned subject does, in the deciding transaction (a policy change is stored).
Applier = Callable[[AsyncSession, StoredRequest, list[str], datetime], Awaitable[None]]


@dataclass
class Decide:
    """Stores, publishes (outbox), notifies and audits the one decision of a locked pending request; an approval
    of a subject hitl owns itself (a policy change) is applied in the same transaction."""

    context: HitlContext
    appliers: Mapping[str, Applier] = field(default_factory=dict)

    async def __call__(
        self,
        session: AsyncSession,
        request: StoredRequest,
        decision: ApprovalDecision,
        reason: str | None,
        approvers: list[str],
        now: datetime,
    ) -> None:
        repo = HitlRepository(session)
        stored = StoredDecision(
            decision=decision.value,
            reason=reason,
            payload_hash=request.payload_hash,
            approvers=approvers,
            decided_at=now,
        )
        message = decision_message(request, decision, stored)
        envelope = new_envelope(message, producer=PRODUCER, aggregate_id=request.subject_id, now=now)
        await repo.set_status(request.request_id, decision.value, now)
        await repo.insert_decision(request.request_id, stored, str(envelope.event_id))
        await add_to_outbox(session, self.context.tables, topic=self.context.decisions_topic, envelope=envelope)
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
            actor="hitl:expiry" if decision is ApprovalDecision.EXPIRED else (approvers[-1] if approvers else "hitl"),
            action=f"hitl.request_{decision}",
            target=request.request_id,
            details=outbox_payload(message),
            chain=audit_chain(request.account_id),
            occurred_at=now,
        )
        applier = self.appliers.get(request.subject_type)
        if applier is not None and decision is ApprovalDecision.APPROVED:
            await applier(session, request, approvers, now)
        log.info("approval_decided", request_id=request.request_id, decision=decision)


def decision_message(request: StoredRequest, decision: ApprovalDecision, stored: StoredDecision) -> ApprovalDecided:
    """The `ApprovalDecided` message on hitl.decisions.v1 (also the audit entry's details)."""
    return ApprovalDecided(
        request_id=request.request_id,
        subject_type=request.subject_type,
        subject_id=request.subject_id,
        account_id=request.account_id,
        decision=decision,
        reason=stored.reason,
        payload_hash=stored.payload_hash,
        decided_at=stored.decided_at,
        approvers=list(stored.approvers),
    )
