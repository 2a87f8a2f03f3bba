"""Every Kafka message type, by topic: `(topic, envelope type) -> model`, and the one way to read a payload.

`parse_message(envelope)` returns the typed message or raises `ContractViolation` (unknown type, unknown schema
version, a payload that breaks the model, an unknown enum value); the consumer loop dead-letters such a record
with the reason. `new_envelope(message, ...)` is the producer's side: the envelope `type` and `schema_version`
come from the model, the payload from `outbox_payload`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.contracts import (
    accounts,
    analytics,
    approvals,
    audit,
    balances,
    cashflows,
    controls,
    exits,
    features,
    hedge,
    orders,
    risk,
    signals,
)
from shared.contracts.base import ContractViolation, Message, outbox_payload
from shared.contracts.marketdata import BookDelta, BookSnapshot, Trade
from shared.events.envelope import Envelope
from shared.events.topics import (
    ANALYTICS_ANOMALY_EVENTS,
    ANALYTICS_FEATURE_EVENTS,
    AUDIT_ANCHORS,
    HEDGE_RECOMMENDATION_EVENTS,
    HEDGE_TARGET_EVENTS,
    HITL_CONTROLS,
    HITL_DECISIONS,
    HITL_REQUEST_EVENTS,
    ML_SIGNALS,
    OMS_BALANCE_EVENTS,
    OMS_CASHFLOW_EVENTS,
    OMS_COMMANDS,
    OMS_ORDER_EVENTS,
    REPORTS_ALLOCATION_EVENTS,
    RISK_CONTROLS,
    RISK_EXIT_EVENTS,
    RISK_TRADING_STATE_EVENTS,
    entity_events,
)

ACCOUNT_EVENTS = entity_events("accounts", "account")
BOOK_EVENTS = "marketdata.book-events.v1"
TRADE_EVENTS = "marketdata.trade-events.v1"

ModelT = TypeVar("ModelT", bound=BaseModel)
MessageModel = type[BaseModel]


def _by_type(*models: type[Any]) -> dict[str, MessageModel]:
    return {model.TYPE: model for model in models}


CONTRACTS: Mapping[tuple[str, str], MessageModel] = MappingProxyType(
    {
        **{(OMS_COMMANDS, t): m for t, m in _by_type(orders.SubmitOrder, orders.CancelOrder).items()},
        **{
            (OMS_ORDER_EVENTS, t): m
            for t, m in _by_type(*orders.ORDER_EVENTS, orders.CommandRejected, approvals.OrderApprovalRequested).items()
        },
        (OMS_BALANCE_EVENTS, balances.BalanceChanged.TYPE): balances.BalanceChanged,
        (OMS_CASHFLOW_EVENTS, cashflows.CashFlowRecorded.TYPE): cashflows.CashFlowRecorded,
        (RISK_TRADING_STATE_EVENTS, risk.TradingStateChanged.TYPE): risk.TradingStateChanged,
        # Limit raises and resumes from HALTED waiting for a director (one of the `ApprovalRequested` variants).
        (RISK_TRADING_STATE_EVENTS, "ApprovalRequested"): approvals.LimitRaiseApprovalRequested,
        **{(RISK_EXIT_EVENTS, t): m for t, m in _by_type(*exits.EXIT_EVENTS).items()},
        **{
            (RISK_CONTROLS, t): m
            for t, m in _by_type(
                controls.TradingStateSet,
                controls.RiskLimitsSet,
                controls.ExitPolicySet,
                controls.ControlsSnapshotPublished,
            ).items()
        },
        **{
            (HITL_CONTROLS, t): m
            for t, m in _by_type(controls.ApprovalPolicySet, controls.ControlsSnapshotPublished).items()
        },
        **{
            (HEDGE_RECOMMENDATION_EVENTS, t): m
            for t, m in _by_type(hedge.KillSwitchRecommended, hedge.RecommendationRearmed).items()
        },
        **{
            (HEDGE_TARGET_EVENTS, t): m
            for t, m in _by_type(hedge.HedgeRebalanceRequested, approvals.HedgeOverrideApprovalRequested).items()
        },
        (REPORTS_ALLOCATION_EVENTS, "ApprovalRequested"): approvals.CapitalTransferApprovalRequested,
        (HITL_REQUEST_EVENTS, approvals.ApprovalRequestOpened.TYPE): approvals.ApprovalRequestOpened,
        (HITL_DECISIONS, approvals.ApprovalDecided.TYPE): approvals.ApprovalDecided,
        **{(ACCOUNT_EVENTS, t): m for t, m in _by_type(*accounts.ACCOUNT_EVENTS).items()},
        (AUDIT_ANCHORS, audit.AuditAnchored.TYPE): audit.AuditAnchored,
        **{(BOOK_EVENTS, t): m for t, m in _by_type(BookSnapshot, BookDelta).items()},
        (TRADE_EVENTS, Trade.TYPE): Trade,
        (ANALYTICS_ANOMALY_EVENTS, analytics.AnomalyDetected.TYPE): analytics.AnomalyDetected,
        (ANALYTICS_FEATURE_EVENTS, features.FeaturesComputed.TYPE): features.FeaturesComputed,
        (ML_SIGNALS, signals.SignalPublished.TYPE): signals.SignalPublished,
    }
)

# One envelope type, one shape, whatever the topic; `ApprovalRequested` is told apart by its `subject_type`.
_APPROVAL_REQUESTED: TypeAdapter[
    approvals.OrderApprovalRequested
    | approvals.HedgeOverrideApprovalRequested
    | approvals.LimitRaiseApprovalRequested
    | approvals.TradingResumeApprovalRequested
    | approvals.CapitalTransferApprovalRequested
] = TypeAdapter(approvals.ApprovalRequested)
_BY_TYPE: Mapping[str, MessageModel] = MappingProxyType(
    {message_type: model for (_, message_type), model in CONTRACTS.items() if message_type != "ApprovalRequested"}
)
MESSAGE_TYPES: frozenset[str] = frozenset(message_type for _, message_type in CONTRACTS)
TOPICS: frozenset[str] = frozenset(topic for topic, _ in CONTRACTS)


def schema_version_of(message_type: str) -> int:
    """The schema version the contracts define for an envelope type (ContractViolation when unknown)."""
    if message_type not in MESSAGE_TYPES:
        raise ContractViolation(f"unknown message type {message_type!r}")
    versions = {getattr(model, "SCHEMA_VERSION", 1) for (_, t), model in CONTRACTS.items() if t == message_type}
    return max(versions)


def parse_message(envelope: Envelope, topic: str | None = None) -> BaseModel:
    """The typed payload of `envelope`; ContractViolation with the reason when it breaks its contract.

    With `topic` (a platform topic of the registry), the type must be one that topic carries.
    """
    message_type = envelope.type
    if topic is not None and topic in TOPICS and (topic, message_type) not in CONTRACTS:
        raise ContractViolation(f"{message_type!r} is not a message of {topic}")
    if message_type not in MESSAGE_TYPES:
        raise ContractViolation(f"unknown message type {message_type!r}")
    expected = schema_version_of(message_type)
    if envelope.schema_version != expected:
        raise ContractViolation(
            f"{message_type} schema_version {envelope.schema_version} is not the supported {expected}"
        )
    try:
        if message_type == "ApprovalRequested":
            return _APPROVAL_REQUESTED.validate_python(envelope.payload)
        return _BY_TYPE[message_type].model_validate(envelope.payload)
    except ValidationError as exc:
        raise ContractViolation.from_validation(f"{message_type} {envelope.event_id}", exc) from None


def parse_as(model: type[ModelT], envelope: Envelope) -> ModelT:
    """`parse_message` for a consumer that expects one model: ContractViolation for any other type."""
    message = parse_message(envelope)
    if not isinstance(message, model):
        raise ContractViolation(f"{envelope.type} is not a {model.__name__}")
    return message


def new_envelope(
    message: Message | BaseModel,
    *,
    producer: str,
    aggregate_id: str,
    now: datetime | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_id: uuid.UUID | None = None,
) -> Envelope:
    """The envelope of `message`: type and schema version from the model, payload from `outbox_payload`."""
    message_type: str = getattr(message, "TYPE", "")
    if message_type not in MESSAGE_TYPES:
        raise ContractViolation(f"{type(message).__name__} is not a registered message")
    return Envelope.new(
        type=message_type,
        producer=producer,
        aggregate_id=aggregate_id,
        payload=outbox_payload(message),
        schema_version=getattr(message, "SCHEMA_VERSION", 1),
        correlation_id=correlation_id,
        causation_id=causation_id,
        now=now,
        event_id=event_id,
    )


def follow_up_envelope(cause: Envelope, message: Message, *, producer: str, aggregate_id: str) -> Envelope:
    """An envelope for `message` caused by `cause` (same correlation id, causation id = its event id)."""
    return new_envelope(
        message,
        producer=producer,
        aggregate_id=aggregate_id,
        correlation_id=cause.correlation_id,
        causation_id=str(cause.event_id),
    )
