"""The order rules of an account's approval policy (the approval service publishes each version on
`hitl.controls.v1`; the OMS keeps its copy in `oms.controls`, services/oms/controls.py) and the pure rule deciding
which orders wait for a director. With a policy, it decides; without one (after hitl's snapshot says the account
has none), the OMS's own account `approval_threshold` decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.contracts.approvals import ApprovalReason

NOTIONAL_ABOVE_THRESHOLD = ApprovalReason.NOTIONAL_ABOVE_THRESHOLD
NEW_INSTRUMENT = ApprovalReason.NEW_INSTRUMENT
LOW_MODEL_CONFIDENCE = ApprovalReason.LOW_MODEL_CONFIDENCE


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The order rules of one hitl policy version (the other rules are not the OMS's business)."""

    version: int
    notional_threshold: Decimal | None
    new_instrument: bool
    model_confidence_min: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the approval rules look at in a new order."""

    notional: Decimal
    instrument_known: bool  # the account already has an order in the symbol that went to the venue
    reduces_held_position: bool  # a sell of at most the position held in the symbol
    model_confidence: Decimal | None = None  # a model-driven order's confidence (SubmitOrder.model_confidence)


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
    minimum = policy.model_confidence_min
    if minimum is not None and facts.model_confidence is not None and facts.model_confidence < minimum:
        reasons.append(LOW_MODEL_CONFIDENCE)
    return reasons


def threshold_reasons(threshold: Decimal | None, notional: Decimal) -> list[ApprovalReason]:
    """Without a hitl policy: the OMS account's own approval threshold (null: never)."""
    return [NOTIONAL_ABOVE_THRESHOLD] if threshold is not None and notional >= threshold else []
