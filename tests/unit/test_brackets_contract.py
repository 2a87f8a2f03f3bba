"""The exit engine's messages against the OMS's own models: commands it sends, payloads it reads, ids it derives."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.oms.schemas import OrderCreate
from services.risk.exits.order_events import exit_input
from services.risk.exits.schemas import ExitPolicyWrite
from services.risk.exits.service import (
    bracket_id_for,
    bracket_id_of_exit,
    exit_event,
    exit_order,
    levels_from_instructions,
)
from shared.contracts.base import ContractViolation
from shared.contracts.exits import EXIT_EVENTS, ExitInstructions
from shared.contracts.orders import (
    ORDER_EVENTS,
    OrderAccepted,
    OrderApprovalRequested,
    OrderCanceled,
    OrderCancelRejected,
    OrderCancelRequested,
    OrderDenied,
    OrderEventMessage,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderRejected,
    OrderSubmitted,
)
from shared.contracts.registry import new_envelope, parse_message
from shared.domain.bracket_model import (
    Bracket,
    BracketEvent,
    BracketInput,
    BracketStatus,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitLevels,
    ExitOutcome,
    ExitPolicy,
    LegKind,
    PriceTick,
    Step,
    SubmitExit,
    exit_client_order_id,
)
from shared.domain.brackets import move_stop, open_bracket, rearm, step
from shared.events.topics import RISK_EXIT_EVENTS

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


@pytest.mark.parametrize("limit_price", [Decimal("62400.1"), None])
def test_exit_orders_are_valid_oms_order_creates(limit_price: Decimal | None) -> None:
    bracket_id = bracket_id_for("desk-1", "3f2c0d1e-0000-4000-8000-000000000001")
    client_order_id = exit_client_order_id(bracket_id, LegKind.TAKE_PROFIT, 12_345)
    decision = SubmitExit(
        bracket_id, "desk-1", "BTC/USD", client_order_id, LegKind.TAKE_PROFIT, Decimal("0.1"), limit_price
    )
    order = OrderCreate.model_validate(exit_order(decision).model_dump(mode="json"))
    assert order.side.value == "sell"
    assert order.type.value == ("market" if limit_price is None else "limit")
    assert order.quantity == Decimal("0.1")
    assert order.limit_price == limit_price
    assert len(client_order_id) <= 64
    assert IDENTIFIER.match(client_order_id)


def test_exit_ids_lead_back_to_their_bracket_and_entries_do_not() -> None:
    bracket_id = bracket_id_for("desk-1", "order-9")
    assert bracket_id == bracket_id_for("desk-1", "order-9")  # derived, not random
    assert bracket_id != bracket_id_for("desk-2", "order-9")
    for leg in LegKind:
        assert bracket_id_of_exit(exit_client_order_id(bracket_id, leg, 1)) == bracket_id
    assert bracket_id_of_exit("buy-1") is None
    assert bracket_id_of_exit("x-short") is None
    assert bracket_id_of_exit(f"x-{bracket_id}-my-own-buy") is None


def test_exit_instructions_become_absolute_levels() -> None:
    exits = ExitInstructions.model_validate(
        {"stop_loss": "58000", "take_profit": "65000", "trailing": {"distance": "500", "activation_price": "61000"}}
    )
    assert levels_from_instructions(exits) == ExitLevels(
        stop_loss=Decimal(58000),
        take_profit=Decimal(65000),
        trailing_distance=Decimal(500),
        trailing_activation=Decimal(61000),
        time_limit_s=None,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stop_loss_pct": "-1"}, "stop_loss_pct"),
        ({"stop_loss_pct": "100"}, "stop_loss_pct"),
        ({"take_profit_pct": "0"}, "take_profit_pct"),
        ({"trailing_distance_pct": "-0.5"}, "trailing_distance_pct"),
        ({"swap_band_pct": "-0.1"}, "swap_band_pct"),
        ({"trailing_distance_pct": None}, "trailing_activation_pct"),
        ({"stop_loss_pct": None, "trailing_distance_pct": None, "trailing_activation_pct": None}, "stop_loss_pct"),
        ({"stop_loss": "2"}, "stop_loss"),
    ],
)
def test_contradicting_policies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        ExitPolicyWrite.model_validate(body)
    first = error.value.errors()[0]
    assert field in ".".join(str(part) for part in first["loc"]) or str(first["msg"]).split(", ")[-1].startswith(field)


# --- exit events on risk.exit-events.v1 and the OMS events the engine reads --------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BID = "0123456789abcdef0123456789abcdef"


def _opened(levels: ExitLevels) -> Step:
    return open_bracket(
        bracket_id=BID,
        account_id="acc-1",
        symbol="BTC/USD",
        entry_order_id="order-1",
        levels=levels,
        from_policy=False,
        swap_band_pct=Decimal("0.5"),
        price_increment=Decimal("0.1"),
        fill=EntryFilled(Decimal(1), Decimal(100)),
        now=T0,
    )


def _lifecycles() -> list[tuple[Bracket, BracketEvent]]:
    """(bracket after the step, event) for every event two brackets' lives emit, as BracketWriter pairs them."""
    seen: list[tuple[Bracket, BracketEvent]] = []

    def keep(result: Step) -> Bracket:
        seen.extend((result.bracket, d) for d in result.decisions if isinstance(d, BracketEvent))
        return result.bracket

    at = T0 + timedelta(seconds=1)
    # Armed with every leg: the trailing stop activates and ratchets, the stop moves, it triggers, an exit fills.
    b = keep(_opened(ExitPolicy().levels_for(Decimal(100), Decimal("0.1"))))
    b = keep(step(b, PriceTick(Decimal("101.5")), at))
    b = keep(step(b, PriceTick(Decimal(102)), at))
    b = keep(move_stop(b, Decimal(99), "ops", at))
    b = keep(step(b, EntryFilled(Decimal(1), Decimal(100)), at))
    b = keep(step(b, PriceTick(Decimal(99)), at))
    keep(step(b, ExitFilled(exit_client_order_id(BID, LegKind.STOP_LOSS, 9), Decimal(2), Decimal(99)), at))
    # Refused three times: failed, then re-armed by an operator.
    b = keep(_opened(ExitLevels(stop_loss=Decimal(95))))
    b = keep(step(b, PriceTick(Decimal(94)), at))
    while b.status is BracketStatus.EXITING and b.working is not None:
        b = keep(step(b, ExitEnded(b.working.client_order_id, ExitOutcome.REJECTED), at))
    keep(rearm(b, "ops", at))
    return seen


def test_every_bracket_event_goes_out_as_its_contract_model_and_reads_back() -> None:
    events = _lifecycles()
    note = BracketEvent(BID, "ExplicitExitsReplaced", {"field": "stop_loss", "reason": "must be below the entry"})
    events.append((events[0][0], note))
    assert {event.type for _, event in events} == {model.TYPE for model in EXIT_EVENTS}
    for bracket, event in events:
        message = exit_event(bracket, event)
        assert (message.TYPE, message.bracket_id, message.version) == (event.type, BID, bracket.version)
        envelope = new_envelope(message, producer="risk", aggregate_id=BID)
        assert parse_message(envelope, RISK_EXIT_EVENTS) == message
        assert envelope.payload == {**envelope.payload, **event.details}, "the domain's details, unchanged"


def test_a_bracket_event_without_a_contract_model_is_refused() -> None:
    bracket = _opened(ExitLevels(stop_loss=Decimal(95))).bracket
    with pytest.raises(ContractViolation, match="no contract model"):
        exit_event(bracket, BracketEvent(BID, "BracketTeleported", {}))
    with pytest.raises(ContractViolation, match="leg"):
        exit_event(bracket, BracketEvent(BID, "ExitTriggered", {"leg": "sideways", "price": "1", "stop": None}))


def _order_fields(model: type[OrderEventMessage]) -> dict[str, object]:
    extra: dict[type[OrderEventMessage], dict[str, object]] = {
        OrderAccepted: {"venue_order_id": "v-1", "implicit": False},
        OrderFilled: {
            "trade_id": "t-1",
            "quantity": "0.4",
            "price": "99.5",
            "fee": "0",
            "liquidity": "taker",
            "filled_quantity": "0.4",
            "leaves_quantity": "0.6",
            "is_final": False,
        },
        OrderCanceled: {"reason": None},
        OrderRejected: {"reason": "no"},
        OrderDenied: {"reason": "no"},
    }
    return {
        "order_id": "o-1",
        "occurred_at": T0,
        "version": 2,
        "account_id": "acc-1",
        "client_order_id": exit_client_order_id(BID, LegKind.STOP_LOSS, 1),
        "symbol": "BTC/USD",
        "side": "sell",
        "status": "accepted",
        **extra.get(model, {}),
    }


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (OrderAccepted, ExitAccepted(exit_client_order_id(BID, LegKind.STOP_LOSS, 1))),
        (OrderFilled, ExitFilled(exit_client_order_id(BID, LegKind.STOP_LOSS, 1), Decimal("0.4"), Decimal("99.5"))),
        (OrderCanceled, ExitEnded(exit_client_order_id(BID, LegKind.STOP_LOSS, 1), ExitOutcome.CANCELED)),
        (OrderExpired, ExitEnded(exit_client_order_id(BID, LegKind.STOP_LOSS, 1), ExitOutcome.EXPIRED)),
        (OrderRejected, ExitEnded(exit_client_order_id(BID, LegKind.STOP_LOSS, 1), ExitOutcome.REJECTED)),
        (OrderDenied, ExitEnded(exit_client_order_id(BID, LegKind.STOP_LOSS, 1), ExitOutcome.DENIED)),
        (OrderSubmitted, None),
        (OrderCancelRequested, None),
    ],
)
def test_oms_events_about_an_exit_order_become_bracket_inputs(
    model: type[OrderEventMessage], expected: BracketInput | None
) -> None:
    fields = _order_fields(model)
    if model is OrderSubmitted:
        fields["approved"] = False
    if model is OrderCancelRequested:
        fields["status"] = "pending_cancel"
    assert exit_input(model.model_validate(fields)) == expected


def test_every_oms_order_event_has_an_exit_rule() -> None:
    # exit_input refuses (ContractViolation) an order event it has no rule for: none of today's may be one.
    handled = {OrderAccepted, OrderFilled, OrderCanceled, OrderExpired, OrderRejected, OrderDenied}
    ignored = {OrderInitialized, OrderApprovalRequested, OrderSubmitted, OrderCancelRequested, OrderCancelRejected}
    assert handled | ignored == set(ORDER_EVENTS)
