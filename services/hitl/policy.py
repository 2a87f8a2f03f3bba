"""Approval policy of one account, and the pure rules deciding whether a request needs a director.

No I/O here: the service loads the account's current policy version and asks `needs_approval`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, StrictBool

from shared.contracts.approvals import MAX_QUORUM, ApprovalPolicyRules, ApprovalReason, approval_payload_hash
from shared.domain.money import Fraction, NonNegativeDecimal

__all__ = [
    "MAX_QUORUM",
    "ApprovalFacts",
    "PolicyRules",
    "RequestKind",
    "canonical_payload",
    "needs_approval",
    "payload_hash",
    "weakened_rules",
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


_SWITCHES = ("new_instrument", "hedge_override", "resume_from_halted", "limit_raise")


def weakened_rules(current: PolicyRules, proposed: PolicyRules) -> list[str]:
    """The rules `proposed` makes less strict than `current` (empty: as strict or stricter).

    Less strict: the notional threshold raised or removed, the model confidence minimum lowered or removed, a
    rule switched off, the quorum lowered, the expiry made longer, and any change of the directors list (fewer
    directors concentrate the vote, more let others in, and an empty list lets every granted director vote)."""
    weakened = [name for name in _SWITCHES if getattr(current, name) and not getattr(proposed, name)]
    old, new = current.notional_threshold, proposed.notional_threshold
    if old is not None and (new is None or new > old):
        weakened.append("notional_threshold")
    low, lower = current.model_confidence_min, proposed.model_confidence_min
    if low is not None and (lower is None or lower < low):
        weakened.append("model_confidence_min")
    if proposed.quorum < current.quorum:
        weakened.append("quorum")
    if sorted(set(proposed.directors)) != sorted(set(current.directors)):
        weakened.append("directors")
    if proposed.expiry_s > current.expiry_s:
        weakened.append("expiry_s")
    return weakened


def canonical_payload(payload: dict[str, Any]) -> str:
    """The RFC 8785 (JCS) canonical JSON text of `payload`."""
    return rfc8785.dumps(payload).decode()


# SHA-256 of the RFC 8785 canonical JSON of a payload: the contracts' one definition (the OMS checks it at release).
payload_hash = approval_payload_hash
