"""The contracts in shared/contracts: round trips of what the producers write, and refusals (unknown enum
values, extra fields, floats, unknown types and versions) that send a message to the dead-letter topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from shared.audit.anchors import sign_anchor
from shared.contracts.approvals import (
    ApprovalDecided,
    ApprovalDecision,
    ApprovalPolicyValue,
    HedgeOverrideApprovalRequested,
    OrderApprovalRequested,
)
from shared.contracts.audit import AuditAnchored
from shared.contracts.balances import BalanceChanged
from shared.contracts.base import ContractViolation, Message, outbox_payload
from shared.contracts.controls import ControlKind, RiskLimitsSet, TradingStateSet, control_key
from shared.contracts.hedge import KillSwitchRecommended
from shared.contracts.marketdata import LatestBook, Trade
from shared.contracts.mirror import decode_mirror, encode_mirror
from shared.contracts.orders import OrderAccepted, OrderCreate, OrderFilled, OrderInitialized, SubmitOrder
from shared.contracts.registry import CONTRACTS, new_envelope, parse_as, parse_message
from shared.contracts.risk import (
    ExitPolicyValue,
    TradingScope,
    TradingStateChanged,
)
from shared.domain import order_events as domain_events
from shared.domain.book import OrderBook
from shared.domain.money import InstrumentSpec, format_decimal
from shared.domain.order_requests import validate_request
from shared.domain.risk_limits import RiskLimits, limits_to_json
from shared.domain.types import (
    AccountId,
    ClientOrderId,
    Liquidity,
    OrderId,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    TradingState,
)
from shared.events.envelope import Envelope
from shared.events.topics import HITL_DECISIONS, OMS_COMMANDS, OMS_ORDER_EVENTS
from shared.mirror_keys import MIRROR_VALUES
from shared.venues.paper_feed import book_json

NOW = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


def _envelope(model: type[Message] | type[BaseModel], payload: dict[str, Any], **overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "type": getattr(model, "TYPE", model.__name__),
        "producer": "test",
        "aggregate_id": "agg-1",
        "payload": payload,
    }
    fields.update(overrides)
    return Envelope.new(**fields)


def _order_payload(event: domain_events.OrderEvent) -> dict[str, Any]:
    # What services/oms/service.py `order_payload` writes: the event, then the order's identity and exits.
    payload: dict[str, Any] = dict(event.to_payload())
    payload.update(
        account_id="acc-1", client_order_id="cid-1", symbol="BTC/USD", side="buy", status="accepted", exits=None
    )
    return payload


def _decided(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "request_id": "req-1",
        "subject_type": "order",
        "subject_id": "ord-1",
        "account_id": "acc-1",
        "decision": "approved",
        "reason": None,
        "payload_hash": "0" * 64,
        "decided_at": NOW.isoformat(),
        "approvers": ["director-1"],
    }
    payload.update(overrides)
    return payload


# --- round trips of what the producers write -------------------------------------------------------------


def test_order_events_written_by_the_domain_round_trip_exactly() -> None:
    initialized = domain_events.OrderInitialized(
        order_id=OrderId("ord-1"),
        occurred_at=NOW,
        version=1,
        account_id=AccountId("acc-1"),
        client_order_id=ClientOrderId("cid-1"),
        symbol=Symbol("BTC/USD"),
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.50"),
        limit_price=Decimal("30000.1"),
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=False,
        created_at=NOW,
    )
    filled = domain_events.OrderFilled(
        order_id=OrderId("ord-1"),
        occurred_at=NOW,
        version=3,
        account_id=AccountId("acc-1"),
        symbol=Symbol("BTC/USD"),
        side=OrderSide.BUY,
        trade_id=TradeId("t-1"),
        quantity=Decimal("0.25"),
        price=Decimal("30000"),
        fee=Decimal("1.5"),
        liquidity=Liquidity.MAKER,
        filled_quantity=Decimal("0.25"),
        leaves_quantity=Decimal("0.25"),
        is_final=False,
    )
    for event, model in ((initialized, OrderInitialized), (filled, OrderFilled)):
        payload = _order_payload(event)
        message = parse_message(_envelope(model, payload), OMS_ORDER_EVENTS)
        assert isinstance(message, model)
        assert outbox_payload(message) == payload
    parsed = parse_as(OrderFilled, _envelope(OrderFilled, _order_payload(filled)))
    assert parsed.price == Decimal(30000)
    assert parsed.liquidity is Liquidity.MAKER


def test_every_registered_order_event_type_is_a_domain_order_event() -> None:
    registered = {t for (topic, t), model in CONTRACTS.items() if topic == OMS_ORDER_EVENTS}
    assert set(domain_events.EVENT_TYPES) <= registered
    assert registered - set(domain_events.EVENT_TYPES) == {"CommandRejected", "ApprovalRequested"}


def test_submit_order_carries_the_one_order_body_and_feeds_the_domain_validation() -> None:
    body = {
        "account_id": "acc-1",
        "client_order_id": "hedge-acc-1-3",
        "symbol": "BTC/USD",
        "side": "sell",
        "type": "market",
        "quantity": "0.125",
    }
    command = parse_as(SubmitOrder, _envelope(SubmitOrder, {"order": body}))
    assert command.order == OrderCreate.model_validate(body)
    request = command.order.to_request(NOW)
    spec = InstrumentSpec(
        "BTC/USD",
        "BTC",
        "USD",
        Decimal("0.1"),
        Decimal("0.001"),
        Decimal("0.001"),
        base_step=Decimal("1e-10"),
        quote_step=Decimal("0.0001"),
    )
    assert validate_request(request, spec) == []
    limit_without_price = OrderCreate.model_validate({**body, "type": "limit"}).to_request(NOW)
    assert [problem.code for problem in validate_request(limit_without_price, spec)] == ["limit_price_required"]


def test_trading_state_changed_round_trips_and_ties_the_account_to_the_scope() -> None:
    payload = {
        "scope": "account",
        "account_id": "acc-1",
        "state": "halted",
        "previous": "active",
        "reason": "kill switch",
        "actor": "risk-officer",
        "version": 2,
        "changed_at": NOW.isoformat(),
    }
    message = parse_as(TradingStateChanged, _envelope(TradingStateChanged, payload))
    assert (message.scope, message.state) == (TradingScope.ACCOUNT, TradingState.HALTED)
    assert outbox_payload(message) == payload
    with pytest.raises(ContractViolation, match="account_id is required"):
        parse_message(_envelope(TradingStateChanged, {**payload, "scope": "global"}))


def test_approval_requested_is_told_apart_by_its_subject_type() -> None:
    order = {
        "subject_type": "order",
        "subject_id": "ord-1",
        "account_id": "acc-1",
        "requested_by": "operator-1",
        "client_order_id": "c-1",
        "symbol": "BTC/USD",
        "side": "buy",
        "type": "limit",
        "quantity": "1",
        "limit_price": "30000",
        "trigger_price": None,
        "time_in_force": "gtc",
        "post_only": False,
        "exits": None,
        "notional": "30000",
        "reason": "notional_above_threshold",
        "reasons": ["notional_above_threshold", "new_instrument"],
    }
    override = {
        "subject_type": "hedge_override",
        "subject_id": "hedge-override:acc-1:7",
        "account_id": "acc-1",
        "requested_by": "risk-1",
        "target_fraction": "0.5",
        "reason": "event risk",
        "expires_at": NOW.isoformat(),
        "previous_fraction": None,
        "requested_at": NOW.isoformat(),
    }
    assert isinstance(parse_message(_envelope(OrderApprovalRequested, order)), OrderApprovalRequested)
    assert isinstance(
        parse_message(_envelope(HedgeOverrideApprovalRequested, override)), HedgeOverrideApprovalRequested
    )
    with pytest.raises(ContractViolation):
        parse_message(_envelope(OrderApprovalRequested, {**order, "subject_type": "resume"}))
    with pytest.raises(ContractViolation, match="reason must be the first"):
        parse_message(_envelope(OrderApprovalRequested, {**order, "reason": "new_instrument"}))


def test_an_anchor_as_the_audit_log_publishes_it_fits_its_contract() -> None:
    anchor = sign_anchor(
        Ed25519PrivateKey.generate(), chain="oms:acc-1", length=3, head_hash="ab" * 32, anchored_at=NOW
    )
    message = parse_as(AuditAnchored, _envelope(AuditAnchored, anchor.as_payload()))
    assert outbox_payload(message) == anchor.as_payload()


# --- refusals ----------------------------------------------------------------------------------------------


def test_an_unknown_enum_value_is_a_violation_never_a_default() -> None:
    with pytest.raises(ContractViolation, match="decision: Input should be 'approved', 'rejected' or 'expired'"):
        parse_message(_envelope(ApprovalDecided, _decided(decision="maybe")), HITL_DECISIONS)
    assert parse_as(ApprovalDecided, _envelope(ApprovalDecided, _decided())).decision is ApprovalDecision.APPROVED
    kill = {
        "recommendation_id": "rec-1",
        "account_id": "acc-1",
        "level": "nuke",
        "drawdown": "0.2",
        "threshold": "0.1",
        "raised_at": NOW.isoformat(),
    }
    with pytest.raises(ContractViolation, match="level"):
        parse_message(_envelope(KillSwitchRecommended, kill))
    paused = {"scope": "global", "account_id": None, "state": "paused", "version": 1, "changed_at": NOW.isoformat()}
    with pytest.raises(ContractViolation, match="state"):
        parse_message(_envelope(TradingStateSet, paused))


def test_an_extra_field_is_refused_in_messages_and_mirror_values() -> None:
    with pytest.raises(ContractViolation, match="surprise: Extra inputs are not permitted"):
        parse_message(_envelope(ApprovalDecided, _decided(surprise=1)))
    limits = {"max_order_notional": "10", "max_leverage": "3"}
    with pytest.raises(ContractViolation, match="Extra inputs"):
        parse_message(_envelope(RiskLimitsSet, {"account_id": "a-1", "version": 1, "limits": limits}))


def test_decimals_stay_strings_and_floats_never_enter() -> None:
    payload = _order_payload(
        domain_events.OrderAccepted(
            order_id=OrderId("ord-1"), occurred_at=NOW, version=2, venue_order_id=None, implicit=True
        )
    )
    message = parse_message(_envelope(OrderAccepted, payload))
    assert outbox_payload(message)["occurred_at"] == NOW.isoformat()
    balance = {
        "account_id": "acc-1",
        "asset": "USD",
        "total": "100.10",
        "available": "100",
        "reserved": "0.10",
        "version": 4,
        "changed_at": NOW.isoformat(),
    }
    parsed = BalanceChanged.model_validate(balance)
    dumped = outbox_payload(parsed)
    assert (dumped["total"], dumped["available"], dumped["reserved"]) == ("100.1", "100", "0.1")
    assert all(isinstance(dumped[name], str) for name in ("total", "available", "reserved"))
    with pytest.raises(ValidationError, match="decimal string"):
        BalanceChanged.model_validate({**balance, "total": 100.1})
    with pytest.raises(ValidationError, match="decimal string"):
        BalanceChanged.model_validate({**balance, "available": 100})
    with pytest.raises(ValidationError, match="available \\+ reserved"):
        BalanceChanged.model_validate({**balance, "reserved": "0.2", "total": "100.1"})
    assert parsed.supersedes(None)
    assert parsed.supersedes(3)
    assert not parsed.supersedes(4)


def test_unknown_types_versions_and_topics_are_violations() -> None:
    with pytest.raises(ContractViolation, match="unknown message type 'OrderTeleported'"):
        parse_message(_envelope(ApprovalDecided, _decided(), type="OrderTeleported"))
    with pytest.raises(ContractViolation, match="schema_version 2 is not the supported 1"):
        parse_message(_envelope(ApprovalDecided, _decided(), schema_version=2))
    with pytest.raises(ContractViolation, match=r"not a message of oms\.commands\.v1"):
        parse_message(_envelope(ApprovalDecided, _decided()), OMS_COMMANDS)
    with pytest.raises(ContractViolation, match="is not a SubmitOrder"):
        parse_as(SubmitOrder, _envelope(ApprovalDecided, _decided()))


def test_new_envelope_takes_type_version_and_payload_from_the_model() -> None:
    decided = ApprovalDecided.model_validate(_decided())
    envelope = new_envelope(decided, producer="hitl", aggregate_id="ord-1", now=NOW)
    assert (envelope.type, envelope.schema_version, envelope.occurred_at) == ("ApprovalDecided", 1, NOW)
    assert envelope.payload == _decided()
    assert parse_message(envelope) == decided
    with pytest.raises(ContractViolation, match="not a registered message"):
        new_envelope(OrderCreate.model_validate({**_order_body()}), producer="oms", aggregate_id="x")


def _order_body() -> dict[str, Any]:
    return {"account_id": "a", "client_order_id": "c", "symbol": "BTC/USD", "side": "buy", "type": "market",
            "quantity": "1"}  # fmt: skip


# --- the registry --------------------------------------------------------------------------------------------


def test_every_registered_model_is_frozen_refuses_extras_and_carries_its_type() -> None:
    for (topic, message_type), model in CONTRACTS.items():
        assert model.model_config.get("frozen") is True, model
        assert model.model_config.get("extra") == "forbid", model
        assert getattr(model, "TYPE", None) == message_type, (topic, model)
        assert getattr(model, "SCHEMA_VERSION", None) == 1, model
    for model in MIRROR_VALUES.values():
        assert model.model_config.get("frozen") is True
        assert model.model_config.get("extra") == "forbid"


# --- mirror values -------------------------------------------------------------------------------------------


def test_controls_records_are_keyed_by_kind_and_account() -> None:
    halted = TradingStateSet(
        scope=TradingScope.ACCOUNT, account_id="a-1", state=TradingState.HALTED, version=3, changed_at=NOW
    )
    assert halted.key == control_key(ControlKind.TRADING_STATE, "a-1") == "trading_state:account:a-1"
    active = TradingStateSet(
        scope=TradingScope.GLOBAL, account_id=None, state=TradingState.ACTIVE, version=0, changed_at=NOW
    )
    assert active.key == "trading_state:global"
    with pytest.raises(ValueError, match="account_id"):
        TradingStateSet(
            scope=TradingScope.GLOBAL, account_id="a-1", state=TradingState.ACTIVE, version=1, changed_at=NOW
        )


def test_limits_as_the_risk_service_publishes_them_round_trip_to_the_domain() -> None:
    limits = RiskLimits(
        max_order_notional=Decimal("1000.50"),
        max_position_notional_by_symbol={"BTC/USD": Decimal(5000)},
        max_open_orders=0,
        allowed_symbols=frozenset({"BTC/USD"}),
    )
    payload = {"account_id": "a-1", "version": 2, "limits": limits_to_json(limits)}
    record = parse_message(_envelope(RiskLimitsSet, payload))
    assert isinstance(record, RiskLimitsSet)
    assert record.limits.to_domain() == limits
    assert record.key == "risk_limits:account:a-1"
    with pytest.raises(ContractViolation, match="max_order_notional"):
        parse_message(_envelope(RiskLimitsSet, {**payload, "limits": {"max_order_notional": "-1"}}))


def test_exit_and_approval_policies_round_trip_with_sorted_keys() -> None:
    exit_policy = {
        "version": 2,
        "stop_loss_pct": "2",
        "take_profit_pct": "4",
        "trailing_distance_pct": None,
        "trailing_activation_pct": None,
        "time_limit_s": None,
        "swap_band_pct": "0.5",
        "require_explicit_exits": True,
    }
    assert ExitPolicyValue.model_validate(exit_policy).model_dump(mode="json") == exit_policy
    # What services/hitl/mirror.py writes: the stored rules, account, version and time, sorted.
    policy = {
        "notional_threshold": "1000",
        "new_instrument": True,
        "hedge_override": False,
        "resume_from_halted": True,
        "limit_raise": True,
        "model_confidence_min": None,
        "quorum": 1,
        "directors": [],
        "expiry_s": 3600,
        "account_id": "acc-1",
        "version": 3,
        "created_at": NOW.isoformat(),
    }
    raw = json.dumps(policy, sort_keys=True)
    value = decode_mirror(ApprovalPolicyValue, raw)
    assert value.notional_threshold == Decimal(1000)
    assert encode_mirror(value) == raw
    older = decode_mirror(
        ApprovalPolicyValue, json.dumps({"account_id": "acc-1", "version": 1, "created_at": NOW.isoformat()})
    )
    assert older.hedge_override is True, "a rule an older version lacks holds for a director"
    with pytest.raises(ContractViolation, match="version"):
        decode_mirror(ApprovalPolicyValue, json.dumps({k: v for k, v in policy.items() if k != "version"}))


def test_the_latest_book_as_the_paper_feed_writes_it() -> None:
    book = OrderBook("BTC/USD")
    book.apply_snapshot([(Decimal(100), Decimal(1)), (Decimal(99), Decimal(2))], [(Decimal(101), Decimal("0.5"))], NOW)
    latest = decode_mirror(LatestBook, book_json(book))
    assert latest.mid() == Decimal("100.5")
    assert latest.sweep_price(OrderSide.SELL, Decimal("1.5")) == Decimal(99)
    assert latest.sweep_price(OrderSide.BUY, Decimal(3)) == Decimal(101)
    assert json.loads(encode_mirror(latest)) == json.loads(book_json(book))
    empty = LatestBook(symbol="BTC/USD", bids=[], asks=[])
    assert empty.mid() is None
    assert empty.sweep_price(OrderSide.BUY, Decimal(1)) is None
    trade = {
        "venue": "kraken",
        "symbol": "BTC/USD",
        "trade_id": "1",
        "price": "100",
        "qty": "0.1",
        "side": "buy",
        "ord_type": "market",
        "timestamp": "2026-01-02T03:04:05.600000Z",
    }
    assert json.loads(encode_mirror(decode_mirror(Trade, json.dumps(trade)))) == trade
    assert format_decimal(latest.bids[0].price) == "100"
