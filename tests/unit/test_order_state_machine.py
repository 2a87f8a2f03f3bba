"""The order aggregate: the issue's transition table, fill arithmetic, venue races and request validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.domain.money import InstrumentSpec
from shared.domain.order_events import (
    EVENT_TYPES,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    event_from_payload,
)
from shared.domain.order_requests import OrderRequest, validate_request
from shared.domain.order_rules import (
    ORDER_TRANSITIONS,
    IllegalTransition,
    InvalidEventPayload,
    InvalidEventSequence,
    InvalidFill,
    Overfill,
)
from shared.domain.orders import Order, Outcome
from shared.domain.types import (
    TERMINAL_STATUSES,
    AccountId,
    ClientOrderId,
    Liquidity,
    OrderId,
    OrderSide,
    OrderStatus,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    VenueOrderId,
)

S = OrderStatus
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BTC_USD = InstrumentSpec(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    price_increment=Decimal("0.1"),
    quantity_increment=Decimal("0.00000001"),
    min_quantity=Decimal("0.0001"),
    min_notional=Decimal(5),
    base_step=Decimal("1e-10"),
    quote_step=Decimal("0.0001"),
)

# The issue's table, written out here independently of the module.
ISSUE_TABLE: dict[OrderStatus, set[OrderStatus]] = {
    S.INITIALIZED: {S.DENIED, S.PENDING_APPROVAL, S.SUBMITTED},
    S.PENDING_APPROVAL: {S.SUBMITTED, S.DENIED, S.CANCELED, S.EXPIRED},
    S.SUBMITTED: {S.ACCEPTED, S.REJECTED},
    S.ACCEPTED: {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED},
    S.PARTIALLY_FILLED: {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED},
    S.PENDING_CANCEL: {S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.ACCEPTED},
    S.DENIED: set(),
    S.REJECTED: set(),
    S.FILLED: set(),
    S.CANCELED: set(),
    S.EXPIRED: set(),
}


def make_request(**changes: object) -> OrderRequest:
    request = OrderRequest(
        account_id=AccountId("acct-1"),
        client_order_id=ClientOrderId("cli-1"),
        symbol=Symbol("BTC/USD"),
        side=OrderSide.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(1),
        limit_price=Decimal("100.0"),
        created_at=T0,
    )
    return replace(request, **changes)  # type: ignore[arg-type]


class History:
    """An order and every event it emitted, built step by step."""

    def __init__(self, request: OrderRequest | None = None) -> None:
        self.order, self.events = Order.create(OrderId("ord-1"), request or make_request(), T0)
        self.clock = T0
        self.trades = 0

    def now(self) -> datetime:
        self.clock += timedelta(milliseconds=1)
        return self.clock

    def do(self, command: Callable[[Order, datetime], Outcome]) -> list[OrderEvent]:
        self.order, events = command(self.order, self.now())
        self.events += events
        return events

    def fill(self, quantity: str, price: str = "100.0", fee: str = "0.01") -> list[OrderEvent]:
        self.trades += 1
        trade_id = TradeId(f"trade-{self.trades}")
        return self.do(lambda o, now: o.fill(trade_id, Decimal(quantity), Decimal(price), Decimal(fee), TAKER, now))


TAKER = Liquidity.TAKER


def history_in(status: OrderStatus) -> History:
    """A fresh order of quantity 1 brought to `status` by legal commands."""
    history = History()
    paths: dict[OrderStatus, list[Callable[[History], object]]] = {
        S.INITIALIZED: [],
        S.DENIED: [lambda h: h.do(lambda o, now: o.deny("limit breached", now))],
        S.PENDING_APPROVAL: [lambda h: h.do(Order.request_approval)],
        S.SUBMITTED: [lambda h: h.do(Order.submit)],
        S.REJECTED: [lambda h: h.do(Order.submit), lambda h: h.do(lambda o, now: o.reject("no funds", now))],
    }
    accepted: list[Callable[[History], object]] = [
        lambda h: h.do(Order.submit),
        lambda h: h.do(lambda o, now: o.accept(VenueOrderId("V-1"), now)),
    ]
    paths |= {
        S.ACCEPTED: accepted,
        S.PARTIALLY_FILLED: [*accepted, lambda h: h.fill("0.1")],
        S.FILLED: [*accepted, lambda h: h.fill("1")],
        S.PENDING_CANCEL: [*accepted, lambda h: h.do(Order.request_cancel)],
        S.CANCELED: [*accepted, lambda h: h.do(lambda o, now: o.cancel("user", now))],
        S.EXPIRED: [*accepted, lambda h: h.do(Order.expire)],
    }
    for step in paths[status]:
        step(history)
    assert history.order.status is status
    return history


def _fill_partial(order: Order, now: datetime) -> Outcome:
    return order.fill(TradeId("x-partial"), Decimal("0.1"), Decimal("100.0"), Decimal(0), TAKER, now)


def _fill_full(order: Order, now: datetime) -> Outcome:
    leaves = order.quantity - order.filled_quantity
    return order.fill(TradeId("x-full"), leaves, Decimal("100.0"), Decimal(0), TAKER, now)


COMMANDS: dict[str, Callable[[Order, datetime], Outcome]] = {
    "deny": lambda o, now: o.deny("refused", now),
    "request_approval": Order.request_approval,
    "approve": Order.approve,
    "submit": Order.submit,
    "accept": lambda o, now: o.accept(VenueOrderId("V-9"), now),
    "reject": lambda o, now: o.reject("refused", now),
    "fill_partial": _fill_partial,
    "fill_full": _fill_full,
    "request_cancel": Order.request_cancel,
    "cancel": lambda o, now: o.cancel("done", now),
    "cancel_rejected": Order.cancel_rejected,
    "expire": Order.expire,
}

# Expected outcome of every legal (command, status) pair; every other pair must raise IllegalTransition.
LEGAL: dict[str, dict[OrderStatus, OrderStatus]] = {
    "deny": {S.INITIALIZED: S.DENIED, S.PENDING_APPROVAL: S.DENIED},
    "request_approval": {S.INITIALIZED: S.PENDING_APPROVAL},
    "approve": {S.PENDING_APPROVAL: S.SUBMITTED},
    "submit": {S.INITIALIZED: S.SUBMITTED},
    "accept": {S.SUBMITTED: S.ACCEPTED},
    "reject": {S.SUBMITTED: S.REJECTED},
    "fill_partial": {
        S.SUBMITTED: S.PARTIALLY_FILLED,  # implicit accept first
        S.ACCEPTED: S.PARTIALLY_FILLED,
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.PENDING_CANCEL: S.PARTIALLY_FILLED,
    },
    "fill_full": {
        S.SUBMITTED: S.FILLED,
        S.ACCEPTED: S.FILLED,
        S.PARTIALLY_FILLED: S.FILLED,
        S.PENDING_CANCEL: S.FILLED,
    },
    "request_cancel": {S.ACCEPTED: S.PENDING_CANCEL, S.PARTIALLY_FILLED: S.PENDING_CANCEL},
    "cancel": {
        S.PENDING_APPROVAL: S.CANCELED,  # approval withdrawn
        S.SUBMITTED: S.CANCELED,  # implicit accept first
        S.ACCEPTED: S.CANCELED,
        S.PARTIALLY_FILLED: S.CANCELED,
        S.PENDING_CANCEL: S.CANCELED,
    },
    "cancel_rejected": {S.PENDING_CANCEL: S.ACCEPTED},
    "expire": {
        S.PENDING_APPROVAL: S.EXPIRED,
        S.SUBMITTED: S.EXPIRED,
        S.ACCEPTED: S.EXPIRED,
        S.PARTIALLY_FILLED: S.EXPIRED,
    },
}
CROSS_PRODUCT = [(command, status) for command in COMMANDS for status in OrderStatus]


def test_module_table_is_the_issue_table() -> None:
    assert {status: set(targets) for status, targets in ORDER_TRANSITIONS.items()} == ISSUE_TABLE
    assert {status for status, targets in ISSUE_TABLE.items() if not targets} == set(TERMINAL_STATUSES)


@pytest.mark.parametrize(("command", "status"), CROSS_PRODUCT, ids=[f"{c}-{s.value}" for c, s in CROSS_PRODUCT])
def test_every_command_in_every_status_follows_the_table(command: str, status: OrderStatus) -> None:
    before = history_in(status).order
    expected = LEGAL[command].get(status)
    if expected is None:
        with pytest.raises(IllegalTransition) as raised:
            COMMANDS[command](before, T0 + timedelta(hours=1))
        assert raised.value.code == "illegal_transition"
        assert raised.value.status is status
        return
    after, events = COMMANDS[command](before, T0 + timedelta(hours=1))
    assert after.status is expected
    # One event per transition, each a table edge, versions consecutive.
    walked = before
    for event in events:
        step = walked.apply(event)
        assert step.status in ISSUE_TABLE[walked.status]
        assert event.version == walked.version + 1
        walked = step
    assert walked == after
    assert after.version == before.version + len(events)
    implicit = status is S.SUBMITTED and command in {"fill_partial", "fill_full", "cancel", "expire"}
    assert len(events) == (2 if implicit else 1)


def test_the_commands_take_every_edge_of_the_table() -> None:
    taken: set[tuple[OrderStatus, OrderStatus]] = set()
    for command, status in CROSS_PRODUCT:
        if status not in LEGAL[command]:
            continue
        walked = history_in(status).order
        _, events = COMMANDS[command](walked, T0 + timedelta(hours=1))
        for event in events:
            step = walked.apply(event)
            taken.add((walked.status, step.status))
            walked = step
    # PENDING_CANCEL -> PARTIALLY_FILLED also comes from a cancel rejected after a partial fill (tested below).
    assert taken == {(source, target) for source, targets in ISSUE_TABLE.items() for target in targets}


def test_terminal_statuses_absorb_every_command() -> None:
    for status in TERMINAL_STATUSES:
        order = history_in(status).order
        for command in COMMANDS.values():
            with pytest.raises(IllegalTransition):
                command(order, T0 + timedelta(hours=1))


def test_fill_arithmetic_hand_computed() -> None:
    history = history_in(S.ACCEPTED)
    history.fill("0.3", "100.0", "0.03")
    history.fill("0.5", "101.5", "0.05")
    events = history.fill("0.2", "99.0", "0.02")
    order = history.order
    # notional = 0.3*100.0 + 0.5*101.5 + 0.2*99.0 = 30.00 + 50.75 + 19.80 = 100.55 over 1.0 filled
    assert order.filled_quantity == Decimal("1.0")
    assert order.filled_notional == Decimal("100.55")
    assert order.average_fill_price == Decimal("100.55")
    assert order.fees_paid == Decimal("0.10")  # 0.03 + 0.05 + 0.02
    assert order.status is S.FILLED
    assert order.leaves_quantity == 0
    (filled,) = events
    assert isinstance(filled, OrderFilled)
    assert (filled.filled_quantity, filled.leaves_quantity, filled.is_final) == (Decimal(1), Decimal(0), True)


def test_average_price_that_does_not_terminate_is_rounded_to_18_places() -> None:
    history = history_in(S.ACCEPTED)
    history.fill("0.25", "1.0")
    history.fill("0.25", "1.0")
    history.fill("0.25", "2.0")
    # (0.25 + 0.25 + 0.5) / 0.75 = 4/3 = 1.333... -> 18 places, half-even
    assert history.order.average_fill_price == Decimal("1.333333333333333333")
    assert history.order.leaves_quantity == Decimal("0.25")
    assert history.order.status is S.PARTIALLY_FILLED


def test_a_replayed_fill_is_applied_once() -> None:
    history = history_in(S.ACCEPTED)
    history.fill("0.4")
    first = history.order
    again, events = first.fill(TradeId("trade-1"), Decimal("0.4"), Decimal("100.0"), Decimal("0.01"), TAKER, T0)
    assert again is first
    assert events == []
    history.fill("0.6")
    assert history.order.status is S.FILLED
    # Still a no-op once terminal: no error, no change.
    final, events = history.order.fill(TradeId("trade-2"), Decimal("0.6"), Decimal("100.0"), Decimal(0), TAKER, T0)
    assert (final, events) == (history.order, [])


def test_overfill_raises_and_changes_nothing() -> None:
    history = history_in(S.SUBMITTED)
    with pytest.raises(Overfill) as raised:
        history.fill("1.00000001")
    assert raised.value.code == "overfill"
    assert history.order.status is S.SUBMITTED  # no implicit accept either
    history.fill("0.7")
    with pytest.raises(Overfill):
        history.fill("0.4")  # 0.7 + 0.4 = 1.1 > 1
    assert history.order.filled_quantity == Decimal("0.7")


@pytest.mark.parametrize(
    ("quantity", "price", "fee"),
    [("0", "100", "0"), ("-0.1", "100", "0"), ("0.1", "0", "0"), ("0.1", "100", "-0.01"), ("0.1", "100", "1E-19")],
)
def test_invalid_fill_values_are_refused(quantity: str, price: str, fee: str) -> None:
    order = history_in(S.ACCEPTED).order
    with pytest.raises(InvalidFill) as raised:
        order.fill(TradeId("t"), Decimal(quantity), Decimal(price), Decimal(fee), TAKER, T0)
    assert raised.value.code == "invalid_fill"


def test_a_fill_racing_a_cancel_wins() -> None:
    history = history_in(S.PENDING_CANCEL)
    history.fill("1")
    assert history.order.status is S.FILLED
    with pytest.raises(IllegalTransition):
        history.do(lambda o, now: o.cancel("late confirmation", now))
    with pytest.raises(IllegalTransition):
        history.do(Order.cancel_rejected)


def test_a_partial_fill_racing_a_cancel_then_the_cancel_confirms() -> None:
    history = history_in(S.PENDING_CANCEL)
    history.fill("0.3")
    assert history.order.status is S.PARTIALLY_FILLED
    history.do(lambda o, now: o.cancel("user", now))
    assert history.order.status is S.CANCELED
    assert history.order.filled_quantity == Decimal("0.3")
    assert history.order.leaves_quantity == 0
    assert history.order.reason == "user"


def test_a_rejected_cancel_returns_to_the_status_before() -> None:
    history = history_in(S.PARTIALLY_FILLED)
    history.do(Order.request_cancel)
    history.do(lambda o, now: o.cancel_rejected(now, "too late"))
    assert history.order.status is S.PARTIALLY_FILLED
    plain = history_in(S.PENDING_CANCEL)
    plain.do(Order.cancel_rejected)
    assert plain.order.status is S.ACCEPTED


def test_a_fill_before_the_ack_accepts_implicitly() -> None:
    history = history_in(S.SUBMITTED)
    events = history.fill("0.5")
    accepted, filled = events
    assert isinstance(accepted, OrderAccepted)
    assert accepted.implicit
    assert accepted.venue_order_id is None
    assert isinstance(filled, OrderFilled)
    assert (accepted.version, filled.version) == (3, 4)  # initialized 1, submitted 2
    assert history.order.status is S.PARTIALLY_FILLED
    with pytest.raises(IllegalTransition):  # the late ack is stale now
        history.do(lambda o, now: o.accept(VenueOrderId("V-1"), now))


def test_a_cancel_before_the_ack_accepts_implicitly() -> None:
    history = history_in(S.SUBMITTED)
    events = history.do(lambda o, now: o.cancel("ioc remainder", now))
    assert [event.event_type for event in events] == ["OrderAccepted", "OrderCanceled"]
    assert history.order.status is S.CANCELED


def test_version_counts_events_and_history_rebuilds_through_json() -> None:
    history = history_in(S.PARTIALLY_FILLED)
    history.do(Order.request_cancel)
    history.fill("0.2")
    history.do(lambda o, now: o.cancel(None, now))
    assert history.order.version == len(history.events) == 7
    wire = json.loads(json.dumps([[e.event_type, e.to_payload()] for e in history.events]))
    rebuilt = Order.from_events(event_from_payload(event_type, payload) for event_type, payload in wire)
    assert rebuilt == history.order
    assert rebuilt.applied_trade_ids == {TradeId("trade-1"), TradeId("trade-2")}


def test_payloads_hold_only_flat_json_values_and_decimal_strings() -> None:
    history = history_in(S.PARTIALLY_FILLED)
    seen = set()
    for event in history.events:
        payload = event.to_payload()
        seen.add(event.event_type)
        assert payload["order_id"] == "ord-1"
        assert all(isinstance(value, str | int | bool | type(None)) for value in payload.values())
        assert event_from_payload(event.event_type, payload) == event
    fill_payload = history.events[-1].to_payload()
    assert (fill_payload["quantity"], fill_payload["price"], fill_payload["liquidity"]) == ("0.1", "100", "taker")
    assert seen == {"OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"}
    assert set(EVENT_TYPES) >= seen


def test_histories_that_do_not_continue_are_refused() -> None:
    history = history_in(S.PARTIALLY_FILLED)
    with pytest.raises(InvalidEventSequence):
        Order.from_events(history.events[1:])  # no OrderInitialized
    with pytest.raises(InvalidEventSequence):
        Order.from_events([*history.events[:2], *history.events[3:]])  # version gap
    fill = history.events[-1]
    assert isinstance(fill, OrderFilled)
    with pytest.raises(InvalidEventSequence):
        Order.from_events([*history.events[:-1], replace(fill, filled_quantity=Decimal("0.2"))])
    with pytest.raises(InvalidEventPayload):
        event_from_payload("OrderExploded", {})
    with pytest.raises(InvalidEventPayload):
        event_from_payload("OrderCanceled", {"order_id": "o", "occurred_at": T0.isoformat(), "version": "2"})


def test_naive_timestamps_are_refused() -> None:
    order = history_in(S.INITIALIZED).order
    with pytest.raises(ValueError, match="timezone-aware"):
        order.submit(datetime(2025, 3, 1))  # noqa: DTZ001 - the naive value under test


def test_status_helpers() -> None:
    expectations = {
        # status: (is_open, is_in_flight, can_cancel)
        S.INITIALIZED: (False, False, False),
        S.PENDING_APPROVAL: (False, False, True),
        S.SUBMITTED: (False, True, False),
        S.ACCEPTED: (True, False, True),
        S.PARTIALLY_FILLED: (True, False, True),
        S.PENDING_CANCEL: (True, True, False),
    }
    for status in OrderStatus:
        order = history_in(status).order
        assert order.is_terminal == (status in TERMINAL_STATUSES)
        assert (order.is_open, order.is_in_flight, order.can_cancel) == expectations.get(status, (False,) * 3)
    assert history_in(S.PARTIALLY_FILLED).order.leaves_quantity == Decimal("0.9")
    assert history_in(S.CANCELED).order.leaves_quantity == 0


def test_cancel_and_reject_reasons_are_kept() -> None:
    assert history_in(S.REJECTED).order.reason == "no funds"
    assert history_in(S.DENIED).order.reason == "limit breached"
    canceled = history_in(S.CANCELED)
    assert isinstance(canceled.events[-1], OrderCanceled)
    assert canceled.order.reason == "user"
    assert canceled.order.venue_order_id == VenueOrderId("V-1")


# --- request validation --------------------------------------------------------------------------------------

NAN = Decimal("NaN")
BAD_REQUESTS: list[tuple[str, dict[str, object], str, str]] = [
    # (id, changes to a valid limit buy of 1 BTC at 100.0, expected code, field)
    ("mismatch", {"symbol": Symbol("ETH/USD")}, "instrument_mismatch", "symbol"),
    ("qty-zero", {"quantity": Decimal(0)}, "quantity_not_positive", "quantity"),
    ("qty-negative", {"quantity": Decimal("-1")}, "quantity_not_positive", "quantity"),
    ("qty-nan", {"quantity": NAN}, "not_a_number", "quantity"),
    ("qty-precise", {"quantity": Decimal("0.123456789")}, "quantity_too_precise", "quantity"),
    (
        "qty-small",
        {"quantity": Decimal("0.00005"), "limit_price": Decimal(200_000)},
        "quantity_below_minimum",
        "quantity",
    ),
    ("market-price", {"type": OrderType.MARKET}, "price_not_allowed", "limit_price"),
    ("stop-price", {"type": OrderType.STOP_LOSS, "trigger_price": Decimal(90)}, "price_not_allowed", "limit_price"),
    ("limit-no-price", {"limit_price": None}, "limit_price_required", "limit_price"),
    (
        "sll-no-price",
        {"type": OrderType.STOP_LOSS_LIMIT, "limit_price": None, "trigger_price": Decimal(90)},
        "limit_price_required",
        "limit_price",
    ),
    ("stop-no-trigger", {"type": OrderType.STOP_LOSS, "limit_price": None}, "trigger_price_required", "trigger_price"),
    ("tp-no-trigger", {"type": OrderType.TAKE_PROFIT, "limit_price": None}, "trigger_price_required", "trigger_price"),
    ("sll-no-trigger", {"type": OrderType.STOP_LOSS_LIMIT}, "trigger_price_required", "trigger_price"),
    ("limit-trigger", {"trigger_price": Decimal(90)}, "trigger_price_not_allowed", "trigger_price"),
    ("price-zero", {"limit_price": Decimal(0)}, "price_not_positive", "limit_price"),
    (
        "trigger-negative",
        {"type": OrderType.STOP_LOSS_LIMIT, "trigger_price": Decimal(-90)},
        "price_not_positive",
        "trigger_price",
    ),
    ("price-precise", {"limit_price": Decimal("100.05")}, "price_too_precise", "limit_price"),
    (
        "trigger-precise",
        {"type": OrderType.TAKE_PROFIT, "limit_price": None, "trigger_price": Decimal("90.01")},
        "price_too_precise",
        "trigger_price",
    ),
    (
        "post-only-market",
        {"type": OrderType.MARKET, "limit_price": None, "post_only": True},
        "post_only_requires_limit",
        "post_only",
    ),
    (
        "post-only-ioc",
        {"post_only": True, "time_in_force": TimeInForce.IOC},
        "post_only_with_ioc_or_fok",
        "time_in_force",
    ),
    (
        "post-only-fok",
        {"post_only": True, "time_in_force": TimeInForce.FOK},
        "post_only_with_ioc_or_fok",
        "time_in_force",
    ),
    # 0.001 BTC x 100.0 = 0.1 USD < 5 USD minimum
    ("small-notional", {"quantity": Decimal("0.001")}, "below_min_notional", "quantity"),
    ("no-client-id", {"client_order_id": ClientOrderId(" ")}, "client_order_id_required", "client_order_id"),
    ("no-account", {"account_id": AccountId("")}, "account_id_required", "account_id"),
    ("naive", {"created_at": datetime(2025, 3, 1)}, "naive_timestamp", "created_at"),  # noqa: DTZ001
]


@pytest.mark.parametrize(("changes", "code", "field"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_each_bad_request_has_its_code(changes: dict[str, object], code: str, field: str) -> None:
    problems = validate_request(make_request(**changes), BTC_USD)
    assert [(p.code, p.field) for p in problems] == [(code, field)]
    assert problems[0].message  # a sentence for the 4xx body


def test_unknown_instrument() -> None:
    (problem,) = validate_request(make_request(), None)
    assert (problem.code, problem.field) == ("unknown_instrument", "symbol")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"type": OrderType.MARKET, "limit_price": None, "time_in_force": TimeInForce.IOC},
        {"type": OrderType.STOP_LOSS, "limit_price": None, "trigger_price": Decimal("90.0"), "side": OrderSide.SELL},
        {"type": OrderType.TAKE_PROFIT, "limit_price": None, "trigger_price": Decimal("120.0")},
        {"type": OrderType.STOP_LOSS_LIMIT, "trigger_price": Decimal("90.0")},
        {"post_only": True},
        {"time_in_force": TimeInForce.FOK, "quantity": Decimal("0.05")},  # 0.05 x 100.0 = 5.0: exactly the minimum
    ],
)
def test_valid_requests_have_no_problems(changes: dict[str, object]) -> None:
    assert validate_request(make_request(**changes), BTC_USD) == []


def test_several_problems_are_reported_together() -> None:
    request = make_request(type=OrderType.MARKET, quantity=Decimal(0), post_only=True)
    codes = {problem.code for problem in validate_request(request, BTC_USD)}
    assert codes == {"quantity_not_positive", "price_not_allowed", "post_only_requires_limit"}
