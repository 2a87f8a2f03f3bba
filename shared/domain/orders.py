"""Orders: the order aggregate, the only code that changes an order's state.

The state machine is the issue's table, kept strict (`ORDER_TRANSITIONS`, `shared.domain.order_rules`); every
change is one past-tense event (`shared.domain.order_events`) and `Order.apply` is the only place that changes
state, so `Order.from_events` rebuilds exactly what the commands built. Decisions on the races a venue produces:

- A venue report that proves the venue holds the order (a fill, a cancel, an expiry) can arrive while the order
  is still SUBMITTED: the first fill may overtake the ack, and an ambiguous submit is resolved by a query. The
  aggregate then applies an *implicit accept* first (`OrderAccepted(implicit=True)`) and the report's own event
  after it, so SUBMITTED only ever moves to ACCEPTED or REJECTED.
- A fill whose trade id was already applied is a no-op in every status: no error, no change, no event.
- A cancel rejection returns PENDING_CANCEL to the status before the request (PARTIALLY_FILLED when something is
  filled, else ACCEPTED). A partial fill racing a cancel moves PENDING_CANCEL to PARTIALLY_FILLED; the cancel
  confirmation that follows still cancels it, a late cancel rejection is stale and raises `IllegalTransition`.
- `version` counts the events: 1 after `create`, +1 per transition, unchanged by a replayed fill.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import singledispatch
from typing import TypeAlias

from shared.domain.money import MONEY_CONTEXT, MoneyError, format_decimal, to_decimal
from shared.domain.order_events import (
    EventBase,
    OrderAccepted,
    OrderApprovalRequested,
    OrderCanceled,
    OrderCancelRejected,
    OrderCancelRequested,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderRejected,
    OrderSubmitted,
)
from shared.domain.order_requests import OrderRequest
from shared.domain.order_rules import (
    COMMAND_SOURCES,
    IN_FLIGHT_STATUSES,
    OPEN_STATUSES,
    ORDER_TRANSITIONS,
    IllegalTransition,
    InvalidEventSequence,
    InvalidFill,
    OrderCommand,
    Overfill,
)
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

_S = OrderStatus
_C = OrderCommand
# 18 decimal places: what NUMERIC(38,18) and the wire's decimal strings hold.
_PRICE_QUANTUM = Decimal("1E-18")

Outcome: TypeAlias = tuple["Order", list[OrderEvent]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """The order aggregate: immutable; commands return the next order and the events that lead to it."""

    id: OrderId
    request: OrderRequest
    status: OrderStatus
    filled_quantity: Decimal = Decimal(0)
    filled_notional: Decimal = Decimal(0)  # sum of quantity x price over the fills, exact, in quote
    fees_paid: Decimal = Decimal(0)  # in quote
    venue_order_id: VenueOrderId | None = None
    applied_trade_ids: frozenset[TradeId] = field(default_factory=frozenset)
    version: int
    updated_at: datetime
    reason: str | None = None  # why it was denied, rejected or canceled

    # -- reading --

    @property
    def account_id(self) -> AccountId:
        return self.request.account_id

    @property
    def client_order_id(self) -> ClientOrderId:
        return self.request.client_order_id

    @property
    def symbol(self) -> Symbol:
        return self.request.symbol

    @property
    def side(self) -> OrderSide:
        return self.request.side

    @property
    def type(self) -> OrderType:
        return self.request.type

    @property
    def quantity(self) -> Decimal:
        return self.request.quantity

    @property
    def limit_price(self) -> Decimal | None:
        return self.request.limit_price

    @property
    def trigger_price(self) -> Decimal | None:
        return self.request.trigger_price

    @property
    def time_in_force(self) -> TimeInForce:
        return self.request.time_in_force

    @property
    def post_only(self) -> bool:
        return self.request.post_only

    @property
    def average_fill_price(self) -> Decimal | None:
        """Volume-weighted fill price, sum(q x p) / sum(q), to 18 decimal places; None before the first fill."""
        if self.filled_quantity == 0:
            return None
        average = MONEY_CONTEXT.divide(self.filled_notional, self.filled_quantity)
        return average.quantize(_PRICE_QUANTUM, context=MONEY_CONTEXT)

    @property
    def leaves_quantity(self) -> Decimal:
        """Quantity still working (FIX LeavesQty): 0 once the order is terminal."""
        return Decimal(0) if self.is_terminal else self.quantity - self.filled_quantity

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        """Working at the venue: ACCEPTED, PARTIALLY_FILLED or PENDING_CANCEL."""
        return self.status in OPEN_STATUSES

    @property
    def is_in_flight(self) -> bool:
        """Waiting for the venue's answer to a submit or a cancel (a reconciliation must ask)."""
        return self.status in IN_FLIGHT_STATUSES

    @property
    def can_cancel(self) -> bool:
        """A user may cancel now: withdraw it while PENDING_APPROVAL, or request a cancel while it works."""
        return self.status is _S.PENDING_APPROVAL or self.status in COMMAND_SOURCES[_C.REQUEST_CANCEL]

    # -- building and replaying --

    @classmethod
    def create(cls, order_id: OrderId, request: OrderRequest, now: datetime) -> Outcome:
        """A new INITIALIZED order for `request` (validate it first with `validate_request`)."""
        event = OrderInitialized(
            order_id=order_id,
            occurred_at=now,
            version=1,
            account_id=request.account_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            order_type=request.type,
            quantity=request.quantity,
            limit_price=request.limit_price,
            trigger_price=request.trigger_price,
            time_in_force=request.time_in_force,
            post_only=request.post_only,
            created_at=request.created_at,
        )
        return cls._initialized(event), [event]

    @classmethod
    def _initialized(cls, event: OrderInitialized) -> Order:
        return cls(
            id=event.order_id,
            request=event.to_request(),
            status=_S.INITIALIZED,
            version=event.version,
            updated_at=event.occurred_at,
        )

    @classmethod
    def from_events(cls, events: Iterable[OrderEvent]) -> Order:
        """Rebuild an order from its full history, OrderInitialized first."""
        history = iter(events)
        first = next(history, None)
        if not isinstance(first, OrderInitialized) or first.version != 1:
            raise InvalidEventSequence("an order's history starts with OrderInitialized at version 1")
        order = cls._initialized(first)
        for event in history:
            order = order.apply(event)
        return order

    def apply(self, event: OrderEvent) -> Order:
        """The order after `event`; refuses events that do not continue this order's history."""
        if event.order_id != self.id:
            raise InvalidEventSequence(f"event for order {event.order_id} applied to order {self.id}")
        if event.version != self.version + 1:
            raise InvalidEventSequence(f"event version {event.version} does not follow version {self.version}")
        return replace(_evolve(event, self), version=event.version, updated_at=event.occurred_at)

    def _moved(self, target: OrderStatus, command: OrderCommand) -> Order:
        if self.status not in COMMAND_SOURCES[command] or target not in ORDER_TRANSITIONS[self.status]:
            raise IllegalTransition(self.status, command)
        return replace(self, status=target)

    # -- commands --

    def _require(self, command: OrderCommand) -> None:
        if self.status not in COMMAND_SOURCES[command]:
            raise IllegalTransition(self.status, command)

    def _base(self, now: datetime) -> EventBase:
        return {"order_id": self.id, "occurred_at": now, "version": self.version + 1}

    def _record(self, event: OrderEvent, earlier: Iterable[OrderEvent] = ()) -> Outcome:
        return self.apply(event), [*earlier, event]

    def _accept_implicitly(self, now: datetime) -> Outcome:
        # A fill, cancel or expiry reported while SUBMITTED proves the venue accepted the order.
        if self.status is not _S.SUBMITTED:
            return self, []
        return self._record(OrderAccepted(**self._base(now), venue_order_id=None, implicit=True))

    def deny(self, reason: str, now: datetime) -> Outcome:
        """Refuse the order before it reaches the venue (a pre-trade check failed or approval was refused)."""
        self._require(_C.DENY)
        return self._record(OrderDenied(**self._base(now), reason=reason))

    def request_approval(self, now: datetime) -> Outcome:
        """Hold the order until a human approves it."""
        self._require(_C.REQUEST_APPROVAL)
        return self._record(OrderApprovalRequested(**self._base(now)))

    def approve(self, now: datetime) -> Outcome:
        """Approval granted: the order is submitted."""
        self._require(_C.APPROVE)
        return self._record(OrderSubmitted(**self._base(now), approved=True))

    def submit(self, now: datetime) -> Outcome:
        """The order passed its checks and goes to the venue."""
        self._require(_C.SUBMIT)
        return self._record(OrderSubmitted(**self._base(now), approved=False))

    def accept(self, venue_order_id: VenueOrderId, now: datetime) -> Outcome:
        """The venue acknowledged the order under `venue_order_id`."""
        self._require(_C.ACCEPT)
        return self._record(OrderAccepted(**self._base(now), venue_order_id=venue_order_id, implicit=False))

    def reject(self, reason: str, now: datetime) -> Outcome:
        """The venue refused the order."""
        self._require(_C.REJECT)
        return self._record(OrderRejected(**self._base(now), reason=reason))

    def fill(
        self,
        trade_id: TradeId,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal,
        liquidity: Liquidity,
        now: datetime,
    ) -> Outcome:
        """Apply one execution (fee in quote); a trade id already applied changes nothing."""
        if trade_id in self.applied_trade_ids:
            return self, []
        self._require(_C.FILL)
        _check_fill_values(quantity, price, fee)
        filled = self.filled_quantity + quantity
        if filled > self.quantity:
            raise Overfill(
                f"a fill of {format_decimal(quantity)} would fill {format_decimal(filled)}"
                f" of an order for {format_decimal(self.quantity)}"
            )
        accepted, earlier = self._accept_implicitly(now)
        event = OrderFilled(
            **accepted._base(now),
            account_id=self.account_id,
            symbol=self.symbol,
            side=self.side,
            trade_id=trade_id,
            quantity=quantity,
            price=price,
            fee=fee,
            liquidity=liquidity,
            filled_quantity=filled,
            leaves_quantity=self.quantity - filled,
            is_final=filled == self.quantity,
        )
        return accepted._record(event, earlier)

    def request_cancel(self, now: datetime) -> Outcome:
        """A cancel was sent to the venue; the order works until the venue confirms."""
        self._require(_C.REQUEST_CANCEL)
        return self._record(OrderCancelRequested(**self._base(now)))

    def cancel(self, reason: str | None, now: datetime) -> Outcome:
        """The order is canceled: by the venue, after a cancel request, or withdrawn while awaiting approval."""
        self._require(_C.CANCEL)
        accepted, earlier = self._accept_implicitly(now)
        return accepted._record(OrderCanceled(**accepted._base(now), reason=reason), earlier)

    def cancel_rejected(self, now: datetime, reason: str | None = None) -> Outcome:
        """The venue refused the cancel: back to the status before the request."""
        self._require(_C.CANCEL_REJECTED)
        return self._record(OrderCancelRejected(**self._base(now), reason=reason))

    def expire(self, now: datetime) -> Outcome:
        """The order's time ran out (time in force, or an approval that came too late)."""
        self._require(_C.EXPIRE)
        accepted, earlier = self._accept_implicitly(now)
        return accepted._record(OrderExpired(**accepted._base(now)), earlier)


def _check_fill_values(quantity: Decimal, price: Decimal, fee: Decimal) -> None:
    for name, value in (("quantity", quantity), ("price", price), ("fee", fee)):
        try:
            to_decimal(value)
        except MoneyError as error:
            raise InvalidFill(f"fill {name}: {error}") from None
    if quantity <= 0 or price <= 0:
        raise InvalidFill("a fill needs a positive quantity and price")
    if fee < 0:
        raise InvalidFill("a fill's fee must not be negative")


# --- how each event changes the order (the only code that does) ----------------------------------------------


@singledispatch
def _evolve(event: OrderEvent, order: Order) -> Order:
    raise InvalidEventSequence(f"{event.event_type} cannot be applied to an existing order")


@_evolve.register
def _(event: OrderDenied, order: Order) -> Order:
    return replace(order._moved(_S.DENIED, event.command), reason=event.reason)


@_evolve.register
def _(event: OrderApprovalRequested, order: Order) -> Order:
    return order._moved(_S.PENDING_APPROVAL, event.command)


@_evolve.register
def _(event: OrderSubmitted, order: Order) -> Order:
    if event.approved != (order.status is _S.PENDING_APPROVAL):
        raise InvalidEventSequence(f"OrderSubmitted(approved={event.approved}) from {order.status.value}")
    return order._moved(_S.SUBMITTED, _C.APPROVE if event.approved else _C.SUBMIT)


@_evolve.register
def _(event: OrderAccepted, order: Order) -> Order:
    return replace(order._moved(_S.ACCEPTED, event.command), venue_order_id=event.venue_order_id)


@_evolve.register
def _(event: OrderRejected, order: Order) -> Order:
    return replace(order._moved(_S.REJECTED, event.command), reason=event.reason)


@_evolve.register
def _(event: OrderFilled, order: Order) -> Order:
    filled = order.filled_quantity + event.quantity
    consistent = (
        event.trade_id not in order.applied_trade_ids
        and (event.account_id, event.symbol, event.side) == (order.account_id, order.symbol, order.side)
        and event.filled_quantity == filled
        and event.leaves_quantity == order.quantity - filled
        and event.is_final == (filled == order.quantity)
    )
    if not consistent:
        raise InvalidEventSequence(f"fill {event.trade_id} does not continue order {order.id}")
    if filled > order.quantity:
        raise Overfill(f"fill {event.trade_id} would overfill order {order.id}")
    target = _S.FILLED if event.is_final else _S.PARTIALLY_FILLED
    return replace(
        order._moved(target, event.command),
        filled_quantity=filled,
        filled_notional=MONEY_CONTEXT.add(order.filled_notional, MONEY_CONTEXT.multiply(event.quantity, event.price)),
        fees_paid=order.fees_paid + event.fee,
        applied_trade_ids=order.applied_trade_ids | {event.trade_id},
    )


@_evolve.register
def _(event: OrderCancelRequested, order: Order) -> Order:
    return order._moved(_S.PENDING_CANCEL, event.command)


@_evolve.register
def _(event: OrderCanceled, order: Order) -> Order:
    return replace(order._moved(_S.CANCELED, event.command), reason=event.reason)


@_evolve.register
def _(event: OrderCancelRejected, order: Order) -> Order:
    restored = _S.PARTIALLY_FILLED if order.filled_quantity > 0 else _S.ACCEPTED
    return order._moved(restored, event.command)


@_evolve.register
def _(event: OrderExpired, order: Order) -> Order:
    return order._moved(_S.EXPIRED, event.command)
