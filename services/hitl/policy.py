"""Approval policy of one account, and the pure rules deciding whether a request needs a director.

No I/O here: the service loads the account's current policy version and asks `needs_approval`.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.approvals import ApprovalReason

MAX_QUORUM = 10


class RequestKind(StrEnum):
    """What a request asks a director to allow."""

    ORDER = "order"
    HEDGE_OVERRIDE = "hedge_override"
    RESUME = "resume"
    LIMITS = "limits"


class PolicyRules(BaseModel):
    """One version of an account's approval policy (what needs approval, by how many directors, for how long)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notional_threshold: Decimal | None = Field(
        default=None, gt=0, description="orders with notional (quote) at or above this need approval; null: never"
    )
    new_instrument: bool = Field(default=True, description="the first order of the account in a symbol needs approval")
    hedge_override: bool = Field(default=True, description="overriding a hedge recommendation needs approval")
    resume_from_halted: bool = Field(default=True, description="resuming trading from HALTED needs approval")
    limit_raise: bool = Field(default=True, description="raising a risk limit needs approval")
    model_confidence_min: Decimal | None = Field(
        default=None, ge=0, le=1, description="model-driven orders below this confidence need approval; null: never"
    )
    quorum: int = Field(default=1, ge=1, le=MAX_QUORUM, description="N: approvals needed")
    directors: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="M: the directors (user ids) who may vote; empty: every director granted the account",
    )
    expiry_s: int = Field(default=3600, ge=1, le=7 * 86_400, description="seconds a request waits before it expires")

    @model_validator(mode="after")
    def _quorum_reachable(self) -> Self:
        if self.directors and self.quorum > len(set(self.directors)):
            raise ValueError("quorum: larger than the number of listed directors")
        return self


class ApprovalFacts(BaseModel):
    """What the policy looks at in a request (absent facts never trigger a rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RequestKind
    notional: Decimal | None = Field(default=None, ge=0)
    instrument_known: bool | None = None
    model_confidence: Decimal | None = Field(default=None, ge=0, le=1)
    from_state: str | None = None
    limit_raised: bool | None = None


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
