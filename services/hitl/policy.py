"""Approval policy of one account, and the pure rules deciding whether a request needs a director.

No I/O here: the service loads the account's current policy version and asks `needs_approval`.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, StrictBool

from shared.contracts.approvals import MAX_QUORUM, ApprovalPolicyRules, ApprovalReason
from shared.domain.money import Fraction, NonNegativeDecimal

__all__ = [
    "MAX_QUORUM",
    "ApprovalFacts",
    "PolicyRules",
    "RequestKind",
    "canonical_payload",
    "needs_approval",
    "payload_hash",
]


class RequestKind(StrEnum):
    """What a request asks a director to allow."""

    ORDER = "order"
    HEDGE_OVERRIDE = "hedge_override"
    RESUME = "resume"
    LIMITS = "limits"


# One version of an account's approval policy: the contract's definition, the one the Redis mirror value
# (`ApprovalPolicyValue`) extends with the account, version and time.
PolicyRules = ApprovalPolicyRules


class ApprovalFacts(BaseModel):
    """What the policy looks at in a request (absent facts never trigger a rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RequestKind
    notional: NonNegativeDecimal | None = None
    instrument_known: StrictBool | None = None
    model_confidence: Fraction | None = None
    from_state: str | None = None
    limit_raised: StrictBool | None = None


def needs_approval(rules: PolicyRules, facts: ApprovalFacts) -> list[ApprovalReason]:
    """The reasons (possibly none) why `facts` need director approval under `rules`."""
    if facts.kind is RequestKind.ORDER:
        return _order_reasons(rules, facts)
    if facts.kind is RequestKind.HEDGE_OVERRIDE:
        return [ApprovalReason.HEDGE_OVERRIDE] if rules.hedge_override else []
    if facts.kind is RequestKind.RESUME:
        halted = (facts.from_state or "").lower() == "halted"
        return [ApprovalReason.RESUME_FROM_HALTED] if rules.resume_from_halted and halted else []
    return [ApprovalReason.LIMIT_RAISE] if rules.limit_raise and facts.limit_raised else []


def _order_reasons(rules: PolicyRules, facts: ApprovalFacts) -> list[ApprovalReason]:
    reasons: list[ApprovalReason] = []
    threshold = rules.notional_threshold
    if threshold is not None and facts.notional is not None and facts.notional >= threshold:
        reasons.append(ApprovalReason.NOTIONAL_ABOVE_THRESHOLD)
    if rules.new_instrument and facts.instrument_known is False:
        reasons.append(ApprovalReason.NEW_INSTRUMENT)
    minimum = rules.model_confidence_min
    if minimum is not None and facts.model_confidence is not None and facts.model_confidence < minimum:
        reasons.append(ApprovalReason.LOW_MODEL_CONFIDENCE)
    return reasons


def canonical_payload(payload: dict[str, Any]) -> str:
    """The RFC 8785 (JCS) canonical JSON text of `payload`."""
    return rfc8785.dumps(payload).decode()


def payload_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the RFC 8785 canonical JSON of `payload`, 64 lowercase hex digits."""
    return hashlib.sha256(rfc8785.dumps(payload)).hexdigest()
