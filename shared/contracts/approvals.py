"""Director approval messages: requests from the OMS and the hedge service, the approval service's answers, and
the approval policy it mirrors to Redis.

`ApprovalRequested` travels on the requester's own topic (orders on `oms.order-events.v1`, hedge overrides on
`hedge.target-events.v1`); its `subject_type` names the variant. `ApprovalRequestOpened` and `ApprovalDecided`
are the approval service's (`hitl.request-events.v1`, `hitl.decisions.v1`); their `subject_type` is any subject
hitl accepts (REST requests name their own), so it is a checked name there, compared against `SubjectType`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import rfc8785
from pydantic import Field, StrictBool, model_validator

from shared.contracts.balances import AssetText
from shared.contracts.base import (
    Contract,
    DecimalText,
    Identifier,
    Message,
    MirrorValue,
    PositiveDecimal,
    PrincipalId,
    Text,
    Timestamp,
)
from shared.contracts.exits import ExitInstructions
from shared.contracts.orders import SymbolText
from shared.contracts.risk import RiskLimitsValue
from shared.domain import money
from shared.domain.types import OrderSide, OrderType, TimeInForce, TradingState
from shared.errors import rule_violation
from shared.web import JsonBounds, JsonInteger

# What an approval payload may hold (REST requests are checked against it before anything is stored; readers
# show a stored payload beyond it, one an older version let in, as an opaque marker): RFC 8785 hashes it.
APPROVAL_PAYLOAD_BOUNDS = JsonBounds(max_depth=6, max_entries=64, max_text=1_000, max_key=200, max_bytes=64 * 1024)

SubjectName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
SubjectId = Annotated[str, Field(min_length=1, max_length=128)]
PayloadHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Actor = Annotated[str, Field(min_length=1, max_length=256)]


class SubjectType(StrEnum):
    """Subjects whose requests only their owning service opens (`ApprovalRequested` events, or hitl itself for a
    policy change); a REST request may name none of them."""

    ORDER = "order"
    HEDGE_OVERRIDE = "hedge_override"
    POLICY_CHANGE = "policy_change"  # weakening an approval policy whose quorum is above 1 (hitl's own)
    LIMIT_RAISE = "limit_raise"  # the risk service: raising an account's limits
    TRADING_RESUME = "trading_resume"  # the risk service: an account leaving HALTED
    CAPITAL_TRANSFER = "capital_transfer"  # the reports service's allocator: a rebalancing transfer


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
    """The OMS holds an order for a director (`oms.order-events.v1`, aggregate = order id).

    Every field of the order that reaches the venue is here (all required, so a request states each one), hence
    under the hash the directors approve; at release the OMS checks the decision's hash against the payload it
    stored and the order it sends against these fields (`venue_fields`)."""

    TYPE = "ApprovalRequested"

    subject_type: Literal[SubjectType.ORDER]
    subject_id: Identifier  # the order id
    account_id: Identifier
    requested_by: Actor
    client_order_id: Identifier
    symbol: SymbolText
    side: OrderSide
    type: OrderType
    quantity: DecimalText
    limit_price: DecimalText | None
    trigger_price: DecimalText | None
    time_in_force: TimeInForce
    post_only: StrictBool
    exits: ExitInstructions | None
    notional: DecimalText
    reason: ApprovalReason
    reasons: Annotated[list[ApprovalReason], Field(min_length=1)]

    @model_validator(mode="after")
    def _reason_is_first(self) -> Self:
        if self.reason is not self.reasons[0]:
            raise ValueError("reason must be the first of reasons")
        return self

    def venue_fields(self) -> dict[str, object]:
        """The fields that reach the venue (the order as it will be sent), in their JSON form."""
        return self.model_dump(mode="json", include=set(VENUE_FIELDS))


# What of an order reaches the venue (or arms exits once it fills): the approval covers each of them.
VENUE_FIELDS = frozenset(
    {
        "account_id",
        "client_order_id",
        "symbol",
        "side",
        "type",
        "quantity",
        "limit_price",
        "trigger_price",
        "time_in_force",
        "post_only",
        "exits",
    }
)


def approval_payload_hash(payload: Mapping[str, Any]) -> str:
    """SHA-256 of the RFC 8785 canonical JSON of an approval payload, 64 lowercase hex digits: what a director
    approves and what the requester checks at release."""
    return hashlib.sha256(rfc8785.dumps(dict(payload))).hexdigest()


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


class LimitRaiseApprovalRequested(Message):
    """The risk service holds a raise of an account's limits for a director (`risk.trading-state-events.v1`,
    aggregate = account id): the limits asked for, the ones in force, and which of them are raised."""

    TYPE = "ApprovalRequested"

    subject_type: Literal[SubjectType.LIMIT_RAISE]
    subject_id: SubjectId  # limits:<account_id>:<uuid>
    account_id: Identifier
    requested_by: Actor
    limits: RiskLimitsValue
    previous: RiskLimitsValue | None
    raised: Annotated[list[Text], Field(min_length=1)]
    reason: Text


class TradingResumeApprovalRequested(Message):
    """The risk service holds an account's way out of HALTED for a director (`risk.trading-state-events.v1`,
    aggregate = account id)."""

    TYPE = "ApprovalRequested"

    subject_type: Literal[SubjectType.TRADING_RESUME]
    subject_id: SubjectId  # resume:<account_id>:<uuid>
    account_id: Identifier
    requested_by: Actor
    from_state: TradingState
    to_state: TradingState
    reason: Text


class CapitalTransferApprovalRequested(Message):
    """The capital allocator proposes moving money between two of the firm's accounts because an account's
    share of firm NAV left its band (`reports.allocation-events.v1`, aggregate = proposal id). The OMS holds
    the terms and moves the money, once, only on an `ApprovalDecided` approving exactly this payload's hash."""

    TYPE = "ApprovalRequested"

    subject_type: Literal[SubjectType.CAPITAL_TRANSFER]
    subject_id: Identifier  # the proposal id, the transfer's reference
    account_id: Identifier  # the source account: its approval policy (quorum, directors, expiry) applies
    requested_by: Actor
    to_account_id: Identifier
    asset: AssetText
    amount: PositiveDecimal
    drifted_account_id: Identifier
    share: DecimalText
    target_share: DecimalText
    band: DecimalText
    proposed_at: Timestamp


ApprovalRequested = Annotated[
    OrderApprovalRequested
    | HedgeOverrideApprovalRequested
    | LimitRaiseApprovalRequested
    | TradingResumeApprovalRequested
    | CapitalTransferApprovalRequested,
    Field(discriminator="subject_type"),
]
RiskApprovalRequested = LimitRaiseApprovalRequested | TradingResumeApprovalRequested


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


MAX_QUORUM = 10


class ApprovalPolicyRules(Contract):
    """One version of an account's approval policy: what needs a director, how many must approve, for how long.

    The one definition of the rules: hitl's REST body and stored versions (`services/hitl/policy.PolicyRules`)
    and, with the account, version and time, the Redis mirror value (`ApprovalPolicyValue`).
    """

    notional_threshold: money.PositiveDecimal | None = Field(
        default=None, description="orders with notional (quote) at or above this need approval; null: never"
    )
    new_instrument: StrictBool = Field(
        default=True, description="the first order of the account in a symbol needs approval"
    )
    hedge_override: StrictBool = Field(default=True, description="overriding a hedge recommendation needs approval")
    resume_from_halted: StrictBool = Field(default=True, description="resuming trading from HALTED needs approval")
    limit_raise: StrictBool = Field(default=True, description="raising a risk limit needs approval")
    model_confidence_min: money.Fraction | None = Field(
        default=None, description="model-driven orders below this confidence need approval; null: never"
    )
    quorum: Annotated[int, Field(ge=1, le=MAX_QUORUM), JsonInteger] = Field(
        default=1, description="N: approvals needed"
    )
    directors: list[PrincipalId] = Field(
        default_factory=list,
        max_length=50,
        description="M: the directors (user ids) who may vote; empty: every director granted the account",
    )
    expiry_s: Annotated[int, Field(ge=1, le=7 * 86_400), JsonInteger] = Field(
        default=3600, description="seconds a request waits before it expires"
    )

    @model_validator(mode="after")
    def _quorum_reachable(self) -> Self:
        if self.directors and self.quorum > len(set(self.directors)):
            raise rule_violation("quorum: larger than the number of listed directors")
        return self


class ApprovalPolicyValue(ApprovalPolicyRules, MirrorValue):
    """`hitl:policy:account:<id>`: an account's current approval policy version (the rules plus the account,
    version and time). A rule missing from an older version reads as its default, which holds more for a
    director, never less."""

    account_id: Identifier
    version: Annotated[int, Field(ge=1), JsonInteger]
    created_at: Timestamp
