"""Approval policies as the approval service mirrors them in Redis (source of truth: `hitl.policies`), and the
pure rule deciding which orders wait for a director.

Key `hitl:policy:account:<account_id>`, value `ApprovalPolicyValue` (services/hitl/mirror.py). Present: the hitl
policy decides. Absent: the account has no hitl policy and the OMS's own account `approval_threshold` decides, as
before. Redis unreachable or a value that breaks the contract is a 503, never "no policy".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.oms.errors import ApprovalPolicyUnavailable
from shared.contracts.approvals import ApprovalPolicyValue, ApprovalReason
from shared.contracts.base import ContractViolation
from shared.contracts.mirror import decode_mirror
from shared.mirror_keys import approval_policy_key

NOTIONAL_ABOVE_THRESHOLD = ApprovalReason.NOTIONAL_ABOVE_THRESHOLD
NEW_INSTRUMENT = ApprovalReason.NEW_INSTRUMENT


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The order rules of one hitl policy version (the other rules are not the OMS's business)."""

    version: int
    notional_threshold: Decimal | None
    new_instrument: bool


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the approval rules look at in a new order."""

    notional: Decimal
    instrument_known: bool  # the account already has an order in the symbol that went to the venue
    reduces_held_position: bool  # a sell of at most the position held in the symbol


def approval_reasons(policy: ApprovalPolicy, facts: OrderFacts) -> list[ApprovalReason]:
    """Why the order waits for a director under `policy` (empty: it goes on).

    A sell that only reduces a held position is never held back as a new instrument (exits and
    de-risking must not wait for a first-trade approval); the notional rule applies to every order.
    """
    reasons: list[ApprovalReason] = []
    if policy.notional_threshold is not None and facts.notional >= policy.notional_threshold:
        reasons.append(NOTIONAL_ABOVE_THRESHOLD)
    if policy.new_instrument and not facts.instrument_known and not facts.reduces_held_position:
        reasons.append(NEW_INSTRUMENT)
    return reasons


def threshold_reasons(threshold: Decimal | None, notional: Decimal) -> list[ApprovalReason]:
    """Without a hitl policy: the OMS account's own approval threshold (null: never)."""
    return [NOTIONAL_ABOVE_THRESHOLD] if threshold is not None and notional >= threshold else []


class ApprovalPolicyReader:
    """An account's current approval policy; no key means none (the account threshold applies)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, account_id: str) -> ApprovalPolicy | None:
        """The account's policy (its order rules), None when hitl mirrors none; unreadable or another
        account's value is `ApprovalPolicyUnavailable` (503)."""
        try:
            raw = await self.redis.get(approval_policy_key(account_id))
        except RedisError as exc:
            raise ApprovalPolicyUnavailable(f"approval policy unavailable: {type(exc).__name__}") from None
        if raw is None:
            return None
        try:
            value = decode_mirror(ApprovalPolicyValue, raw)
        except ContractViolation as exc:
            raise ApprovalPolicyUnavailable(f"approval policy of {account_id} is unreadable: {exc.reason}") from None
        if value.account_id != account_id:
            raise ApprovalPolicyUnavailable(f"approval policy under {account_id} names account {value.account_id}")
        return ApprovalPolicy(value.version, value.notional_threshold, value.new_instrument)
