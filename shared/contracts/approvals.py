"""Director approval messages: requests from the OMS and the hedge service, the approval service's answers, and
the approval policy it mirrors to Redis.

`ApprovalRequested` travels on the requester's own topic (orders on `oms.order-events.v1`, hedge overrides on
`hedge.target-events.v1`); its `subject_type` names the variant. `ApprovalRequestOpened` and `ApprovalDecided`
are the approval service's (`hitl.request-events.v1`, `hitl.decisions.v1`); their `subject_type` is any subject
hitl accepts (REST requests name their own), so it is a checked name there, compared against `SubjectType`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from shared.contracts.base import (
    DecimalText,
    Fraction,
    Identifier,
    Message,
    MirrorValue,
    PositiveDecimal,
    Text,
    Timestamp,
)
from shared.contracts.orders import SymbolText
from shared.domain.types import OrderSide, OrderType

SubjectName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
SubjectId = Annotated[str, Field(min_length=1, max_length=128)]
PayloadHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Actor = Annotated[str, Field(min_length=1, max_length=256)]


class SubjectType(StrEnum):
    """Subjects whose requests come only from their owning service's `ApprovalRequested` events."""

    ORDER = "order"
    HEDGE_OVERRIDE = "hedge_override"


class ApprovalDecision(StrEnum):
    """How a request ended."""

    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class ApprovalReason(StrEnum):
    """Why a policy sends a request to the directors."""

    NOTIONAL_ABOVE_THRESHOLD = "notional_above_threshold"
    NEW_INSTRUMENT = "new_instrument"
    HEDGE_OVERRIDE = "hedge_override"
    RESUME_FROM_HALTED = "resume_from_halted"
    LIMIT_RAISE = "limit_raise"
    LOW_MODEL_CONFIDENCE = "low_model_confidence"


class OrderApprovalRequested(Message):
    """The OMS holds an order for a director (`oms.order-events.v1`, aggregate = order id)."""

    TYPE = "ApprovalRequested"

    subject_type: Literal[SubjectType.ORDER]
    subject_id: Identifier  # the order id
    account_id: Identifier
    requested_by: Actor
    symbol: SymbolText
    side: OrderSide
    type: OrderType
    quantity: DecimalText
    limit_price: DecimalText | None
    notional: DecimalText
    reason: ApprovalReason
    reasons: Annotated[list[ApprovalReason], Field(min_length=1)]

    @model_validator(mode="after")
    def _reason_is_first(self) -> Self:
        if self.reason is not self.reasons[0]:
            raise ValueError("reason must be the first of reasons")
        return self


class HedgeOverrideApprovalRequested(Message):
    """The hedge service holds an override for a director (`hedge.target-events.v1`, aggregate = account id)."""

    TYPE = "ApprovalRequested"

    subject_type: Literal[SubjectType.HEDGE_OVERRIDE]
    subject_id: SubjectId  # hedge-override:<account_id>:<history row id>
    account_id: Identifier
    requested_by: Actor
    target_fraction: DecimalText
    reason: Text
    expires_at: Timestamp
    previous_fraction: DecimalText | None
    requested_at: Timestamp


ApprovalRequested = Annotated[
    OrderApprovalRequested | HedgeOverrideApprovalRequested, Field(discriminator="subject_type")
]


class ApprovalRequestOpened(Message):
    """The approval service opened a request (`hitl.request-events.v1`, aggregate = request id)."""

    TYPE = "ApprovalRequestOpened"

    request_id: Identifier
    subject_type: SubjectName
    subject_id: SubjectId
    account_id: Identifier
    requested_by: Actor
    payload_hash: PayloadHash
    quorum: Annotated[int, Field(ge=1, le=10)]
    expires_at: Timestamp


class ApprovalDecided(Message):
    """The one decision of a request (`hitl.decisions.v1`, aggregate = subject id)."""

    TYPE = "ApprovalDecided"

    request_id: Identifier
    subject_type: SubjectName
    subject_id: SubjectId
    account_id: Identifier
    decision: ApprovalDecision
    reason: Text | None
    payload_hash: PayloadHash
    decided_at: Timestamp
    approvers: list[Actor]


class ApprovalPolicyValue(MirrorValue):
    """`hitl:policy:account:<id>`: an account's current approval policy version (hitl's `PolicyRules` plus the
    account, version and time). A rule missing from an older version reads as its default, which holds more
    for a director, never less."""

    notional_threshold: PositiveDecimal | None = None
    new_instrument: bool = True
    hedge_override: bool = True
    resume_from_halted: bool = True
    limit_raise: bool = True
    model_confidence_min: Fraction | None = None
    quorum: Annotated[int, Field(ge=1, le=10)] = 1
    directors: list[str] = Field(default_factory=list, max_length=50)
    expiry_s: Annotated[int, Field(ge=1, le=7 * 86_400)] = 3600
    account_id: Identifier
    version: Annotated[int, Field(ge=1)]
    created_at: Timestamp
