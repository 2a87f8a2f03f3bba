"""Director approval of risk changes the account's approval policy holds back (issue 12, item 8).

Raising a limit (`shared.domain.risk_limits.raised_limits`) and moving an account out of HALTED wait for a director
when the account's policy (the hitl mirror `hitl:policy:account:<id>`, `ApprovalPolicyValue`) has `limit_raise` /
`resume_from_halted`. No mirror, an unreadable one or Redis down: approval is required (absence is never
permission). The change is kept in `risk.pending_approvals` with the exact `ApprovalRequested` payload, published
through the outbox on `risk.trading-state-events.v1`, and applied when `ApprovalDecided` approves that payload's
hash; rejected, expired or another hash: nothing changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.repository import PendingRow, RiskRepository
from shared.audit import append as audit_append
from shared.contracts.approvals import (
    ApprovalPolicyValue,
    LimitRaiseApprovalRequested,
    RiskApprovalRequested,
    SubjectType,
    TradingResumeApprovalRequested,
    approval_payload_hash,
)
from shared.contracts.base import ContractViolation, outbox_payload
from shared.contracts.mirror import decode_mirror
from shared.contracts.registry import new_envelope
from shared.contracts.risk import RiskLimitsValue
from shared.domain.types import TradingState
from shared.events import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import RISK_TRADING_STATE_EVENTS
from shared.mirror_keys import approval_policy_key
from shared.observability.logging import get_logger

log = get_logger(__name__)

AUDIT_CHAIN = "risk"
Rule = Literal["limit_raise", "resume_from_halted"]


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A change held for a director: the request's subject id and the payload hash the directors will approve."""

    subject_id: str
    payload_hash: str


async def approval_needed(redis: Redis, account_id: str, rule: Rule) -> bool:
    """Whether the account's approval policy holds `rule` back; unknown (no or unreadable mirror) is yes."""
    try:
        raw = await redis.get(approval_policy_key(account_id))
    except RedisError as exc:
        log.warning("approval_policy_unavailable", account_id=account_id, error_type=type(exc).__name__)
        return True
    if raw is None:
        return True
    try:
        value = decode_mirror(ApprovalPolicyValue, raw)
    except ContractViolation:
        return True
    return value.account_id != account_id or bool(getattr(value, rule))


def limit_raise_request(
    account_id: str, limits: dict[str, object], previous: dict[str, object], raised: list[str], reason: str, actor: str
) -> LimitRaiseApprovalRequested:
    return LimitRaiseApprovalRequested(
        subject_type=SubjectType.LIMIT_RAISE,
        subject_id=f"limits:{account_id}:{uuid.uuid4().hex}",
        account_id=account_id,
        requested_by=actor,
        limits=RiskLimitsValue.model_validate(limits),
        previous=RiskLimitsValue.model_validate(previous),
        raised=raised,
        reason=reason,
    )


def resume_request(
    account_id: str, current: TradingState, target: TradingState, reason: str, actor: str
) -> TradingResumeApprovalRequested:
    return TradingResumeApprovalRequested(
        subject_type=SubjectType.TRADING_RESUME,
        subject_id=f"resume:{account_id}:{uuid.uuid4().hex}",
        account_id=account_id,
        requested_by=actor,
        from_state=current,
        to_state=target,
        reason=reason,
    )


async def hold_for_approval(
    session: AsyncSession, tables: EventTables, message: RiskApprovalRequested, now: datetime
) -> PendingApproval:
    """Keep the change, publish its `ApprovalRequested` (outbox) and audit it, in the caller's transaction."""
    payload = outbox_payload(message)
    digest = approval_payload_hash(payload)
    row = PendingRow(
        message.subject_id, message.subject_type.value, message.account_id, payload, digest, message.requested_by, None
    )
    await RiskRepository(session).insert_pending(row, now)
    envelope = new_envelope(message, producer="risk", aggregate_id=message.account_id, now=now)
    await add_to_outbox(session, tables, topic=RISK_TRADING_STATE_EVENTS, envelope=envelope, key=message.account_id)
    await audit_append(
        session,
        actor=message.requested_by,
        action=f"risk.{message.subject_type.value}_approval_requested",
        target=f"account:{message.account_id}",
        details={**payload, "payload_hash": digest},
        chain=AUDIT_CHAIN,
        occurred_at=now,
    )
    return PendingApproval(message.subject_id, digest)
