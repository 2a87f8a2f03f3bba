"""Orders: the request and its validation, the order aggregate, its state machine and its events.

The state machine is the issue's table, kept strict (`ORDER_TRANSITIONS`); every change is one past-tense event
and `Order.apply` is the only place that changes state, so `Order.from_events` rebuilds exactly what the
commands built. Decisions on the races a venue produces:

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import singledispatch
from types import MappingProxyType
from typing import ClassVar, Self, TypeAlias, TypedDict

from shared.domain.money import MONEY_CONTEXT, InstrumentSpec, MoneyError, format_decimal, to_decimal
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

PayloadValue = str | int | bool | None
Payload = dict[str, PayloadValue]

_S = OrderStatus
_FILLABLE = frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELED, _S.EXPIRED})
ORDER_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType(
    {
        _S.INITIALIZED: frozenset({_S.DENIED, _S.PENDING_APPROVAL, _S.SUBMITTED}),
        _S.PENDING_APPROVAL: frozenset({_S.SUBMITTED, _S.DENIED, _S.CANCELED, _S.EXPIRED}),
        _S.SUBMITTED: frozenset({_S.ACCEPTED, _S.REJECTED}),
        _S.ACCEPTED: _FILLABLE,
        _S.PARTIALLY_FILLED: _FILLABLE,
        _S.PENDING_CANCEL: frozenset({_S.CANCELED, _S.PARTIALLY_FILLED, _S.FILLED, _S.ACCEPTED}),
        **{status: frozenset[OrderStatus]() for status in TERMINAL_STATUSES},
    }
)
OPEN_STATUSES = frozenset({_S.ACCEPTED, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL})
IN_FLIGHT_STATUSES = frozenset({_S.SUBMITTED, _S.PENDING_CANCEL})
# 18 decimal places: what NUMERIC(38,18) and the wire's decimal strings hold.
_PRICE_QUANTUM = Decimal("1E-18")


class OrderCommand(StrEnum):
    DENY = "deny"
    REQUEST_APPROVAL = "request_approval"
    APPROVE = "approve"
    SUBMIT = "submit"
    ACCEPT = "accept"
    REJECT = "reject"
    FILL = "fill"
    REQUEST_CANCEL = "request_cancel"
    CANCEL = "cancel"
    CANCEL_REJECTED = "cancel_rejected"
    EXPIRE = "expire"


_C = OrderCommand
# Where each command may start; the edges it then takes are checked against ORDER_TRANSITIONS in `apply`.
_COMMAND_SOURCES: Mapping[OrderCommand, frozenset[OrderStatus]] = MappingProxyType(
    {
        _C.DENY: frozenset({_S.INITIALIZED, _S.PENDING_APPROVAL}),
        _C.REQUEST_APPROVAL: frozenset({_S.INITIALIZED}),
        _C.APPROVE: frozenset({_S.PENDING_APPROVAL}),
        _C.SUBMIT: frozenset({_S.INITIALIZED}),
        _C.ACCEPT: frozenset({_S.SUBMITTED}),
        _C.REJECT: frozenset({_S.SUBMITTED}),
        _C.FILL: frozenset({_S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL}),
        _C.REQUEST_CANCEL: frozenset({_S.ACCEPTED, _S.PARTIALLY_FILLED}),
        _C.CANCEL: frozenset({_S.PENDING_APPROVAL, _S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL}),
        _C.CANCEL_REJECTED: frozenset({_S.PENDING_CANCEL}),
        _C.EXPIRE: frozenset({_S.PENDING_APPROVAL, _S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED}),
    }
)


class OrderRuleError(ValueError):
    """An order rule was broken; `code` is machine-readable."""

    code = "order_rule"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IllegalTransition(OrderRuleError):
    """The command is not allowed in the order's current status."""

    code = "illegal_transition"

    def __init__(self, status: OrderStatus, command: OrderCommand) -> None:
        super().__init__(f"cannot {command.value.replace('_', ' ')} an order that is {status.value}")
        self.status = status
        self.command = command


class Overfill(OrderRuleError):
    """A fill would take the filled quantity beyond the order quantity."""

    code = "overfill"


class InvalidFill(OrderRuleError):
    """A fill with a non-positive quantity or price, a negative fee, or a value too precise to store."""

    code = "invalid_fill"


class InvalidEventSequence(OrderRuleError):
    """Events that do not continue this order's history (wrong order, version gap, inconsistent figures)."""

    code = "invalid_event_sequence"


class InvalidEventPayload(OrderRuleError):
    """An event payload that cannot be decoded."""

    code = "invalid_event_payload"


# --- the request ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """What a client asked for: quantities in base units, prices in quote per base."""

    account_id: AccountId
    client_order_id: ClientOrderId
    symbol: Symbol
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RequestProblem:
    """One reason a request cannot become an order: a machine-readable code, the field and a sentence."""

    code: str
    field: str
    message: str


LIMIT_PRICED_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT})
TRIGGERED_TYPES = frozenset({OrderType.STOP_LOSS, OrderType.TAKE_PROFIT, OrderType.STOP_LOSS_LIMIT})


def validate_request(request: OrderRequest, spec: InstrumentSpec | None) -> list[RequestProblem]:
    """Every problem of `request` against the instrument's rules (`spec` None: unknown instrument); [] when valid."""
    problems = [*_identity_problems(request), *_instrument_problems(request, spec)]
    checked_spec = spec if spec is not None and spec.symbol == request.symbol else None
    problems += _quantity_problems(request.quantity, checked_spec)
    problems += _price_problems(request, checked_spec)
    problems += _flag_problems(request)
    if not problems and checked_spec is not None and request.limit_price is not None:
        notional = request.quantity * request.limit_price
        if notional < checked_spec.min_notional:
            minimum = format_decimal(checked_spec.min_notional)
            problems.append(
                RequestProblem("below_min_notional", "quantity", f"the order value is below the minimum {minimum}")
            )
    return problems


def _identity_problems(request: OrderRequest) -> list[RequestProblem]:
    problems: list[RequestProblem] = []
    if not request.account_id.strip():
        problems.append(RequestProblem("account_id_required", "account_id", "an account id is required"))
    if not request.client_order_id.strip():
        problems.append(RequestProblem("client_order_id_required", "client_order_id", "a client order id is required"))
    if request.created_at.utcoffset() is None:
        problems.append(RequestProblem("naive_timestamp", "created_at", "created_at must carry a time zone"))
    return problems


def _instrument_problems(request: OrderRequest, spec: InstrumentSpec | None) -> list[RequestProblem]:
    if spec is None:
        return [RequestProblem("unknown_instrument", "symbol", f"{request.symbol} is not a known instrument")]
    if spec.symbol != request.symbol:
        message = f"{request.symbol} does not match the instrument rules given ({spec.symbol})"
        return [RequestProblem("instrument_mismatch", "symbol", message)]
    return []


def _quantity_problems(quantity: Decimal, spec: InstrumentSpec | None) -> list[RequestProblem]:
    if not quantity.is_finite():
        return [RequestProblem("not_a_number", "quantity", "quantity must be a finite number")]
    if quantity <= 0:
        return [RequestProblem("quantity_not_positive", "quantity", "quantity must be positive")]
    if spec is None:
        return []
    if quantity % spec.quantity_increment != 0:
        step = format_decimal(spec.quantity_increment)
        return [RequestProblem("quantity_too_precise", "quantity", f"quantity must be a multiple of {step}")]
    if quantity < spec.min_quantity:
        minimum = format_decimal(spec.min_quantity)
        return [RequestProblem("quantity_below_minimum", "quantity", f"quantity is below the minimum {minimum}")]
    return []


def _price_problems(request: OrderRequest, spec: InstrumentSpec | None) -> list[RequestProblem]:
    problems: list[RequestProblem] = []
    kind = request.type.value
    if request.limit_price is None and request.type in LIMIT_PRICED_TYPES:
        problems.append(RequestProblem("limit_price_required", "limit_price", f"a {kind} order needs a limit price"))
    elif request.limit_price is not None and request.type not in LIMIT_PRICED_TYPES:
        problems.append(RequestProblem("price_not_allowed", "limit_price", f"a {kind} order takes no limit price"))
    elif request.limit_price is not None:
        problems += _price_value_problems("limit_price", request.limit_price, spec)
    if request.trigger_price is None and request.type in TRIGGERED_TYPES:
        problems.append(
            RequestProblem("trigger_price_required", "trigger_price", f"a {kind} order needs a trigger price")
        )
    elif request.trigger_price is not None and request.type not in TRIGGERED_TYPES:
        problems.append(
            RequestProblem("trigger_price_not_allowed", "trigger_price", f"a {kind} order takes no trigger price")
        )
    elif request.trigger_price is not None:
        problems += _price_value_problems("trigger_price", request.trigger_price, spec)
    return problems


def _price_value_problems(name: str, price: Decimal, spec: InstrumentSpec | None) -> list[RequestProblem]:
    if not price.is_finite():
        return [RequestProblem("not_a_number", name, f"{name} must be a finite number")]
    if price <= 0:
        return [RequestProblem("price_not_positive", name, f"{name} must be positive")]
    if spec is not None and price % spec.price_increment != 0:
        step = format_decimal(spec.price_increment)
        return [RequestProblem("price_too_precise", name, f"{name} must be a multiple of {step}")]
    return []


def _flag_problems(request: OrderRequest) -> list[RequestProblem]:
    if not request.post_only:
        return []
    if request.type is not OrderType.LIMIT:
        return [RequestProblem("post_only_requires_limit", "post_only", "post-only applies to limit orders only")]
    if request.time_in_force in {TimeInForce.IOC, TimeInForce.FOK}:
        message = f"a post-only order cannot be {request.time_in_force.value.upper()}: it must be able to rest"
        return [RequestProblem("post_only_with_ioc_or_fok", "time_in_force", message)]
    return []


# --- events --------------------------------------------------------------------------------------------------


class _EventBase(TypedDict):
    order_id: OrderId
    occurred_at: datetime
    version: int


class _Reader:
    """Typed access to one payload's values, raising InvalidEventPayload on anything unexpected."""

    def __init__(self, payload: Mapping[str, PayloadValue]) -> None:
        self._payload = payload

    def _get(self, name: str) -> PayloadValue:
        if name not in self._payload:
            raise InvalidEventPayload(f"missing field {name!r}")
        return self._payload[name]

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise InvalidEventPayload(f"{name} must be a string")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._get(name) is None else self.text(name)

    def integer(self, name: str) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEventPayload(f"{name} must be an integer")
        return value

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise InvalidEventPayload(f"{name} must be a boolean")
        return value

    def decimal(self, name: str) -> Decimal:
        try:
            return to_decimal(self.text(name))
        except MoneyError as error:
            raise InvalidEventPayload(f"{name}: {error}") from None

    def optional_decimal(self, name: str) -> Decimal | None:
        return None if self._get(name) is None else self.decimal(name)

    def timestamp(self, name: str) -> datetime:
        try:
            return datetime.fromisoformat(self.text(name))
        except ValueError:
            raise InvalidEventPayload(f"{name} must be an ISO 8601 timestamp") from None

    def base(self) -> _EventBase:
        return {
            "order_id": OrderId(self.text("order_id")),
            "occurred_at": self.timestamp("occurred_at"),
            "version": self.integer("version"),
        }


def _encode(value: object) -> PayloadValue:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)  # a StrEnum becomes its plain value
    raise TypeError(f"cannot encode {type(value).__name__} in an event payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent:
    """Something that happened to an order; `version` is the order's version once the event is applied."""

    order_id: OrderId
    occurred_at: datetime
    version: int

    def __post_init__(self) -> None:
        if self.occurred_at.utcoffset() is None:
            raise ValueError(f"{self.event_type}.occurred_at must be timezone-aware")
        if self.version < 1:
            raise ValueError(f"{self.event_type}.version must be at least 1")

    @property
    def event_type(self) -> str:
        """The event's name, as it travels in the envelope's `type`."""
        return type(self).__name__

    def to_payload(self) -> Payload:
        """The event as flat JSON values for the outbox: decimals as strings, timestamps in ISO 8601."""
        return {item.name: _encode(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        return cls(**_Reader(payload).base())


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderInitialized(OrderEvent):
    account_id: AccountId
    client_order_id: ClientOrderId
    symbol: Symbol
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    time_in_force: TimeInForce
    post_only: bool
    created_at: datetime

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        try:
            side = OrderSide(read.text("side"))
            order_type = OrderType(read.text("order_type"))
            time_in_force = TimeInForce(read.text("time_in_force"))
        except ValueError as error:
            raise InvalidEventPayload(str(error)) from None
        return cls(
            **read.base(),
            account_id=AccountId(read.text("account_id")),
            client_order_id=ClientOrderId(read.text("client_order_id")),
            symbol=Symbol(read.text("symbol")),
            side=side,
            order_type=order_type,
            quantity=read.decimal("quantity"),
            limit_price=read.optional_decimal("limit_price"),
            trigger_price=read.optional_decimal("trigger_price"),
            time_in_force=time_in_force,
            post_only=read.flag("post_only"),
            created_at=read.timestamp("created_at"),
        )

    def to_request(self) -> OrderRequest:
        """The request this order was created from."""
        return OrderRequest(
            account_id=self.account_id,
            client_order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            type=self.order_type,
            quantity=self.quantity,
            limit_price=self.limit_price,
            trigger_price=self.trigger_price,
            time_in_force=self.time_in_force,
            post_only=self.post_only,
            created_at=self.created_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDenied(OrderEvent):
    reason: str
    command: ClassVar[OrderCommand] = _C.DENY

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        return cls(**read.base(), reason=read.text("reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderApprovalRequested(OrderEvent):
    command: ClassVar[OrderCommand] = _C.REQUEST_APPROVAL


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSubmitted(OrderEvent):
    approved: bool  # True when it went through PENDING_APPROVAL
    command: ClassVar[OrderCommand] = _C.SUBMIT

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        return cls(**read.base(), approved=read.flag("approved"))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAccepted(OrderEvent):
    venue_order_id: VenueOrderId | None
    implicit: bool  # inferred from a fill, cancel or expiry that overtook the ack
    command: ClassVar[OrderCommand] = _C.ACCEPT

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        venue_order_id = read.optional_text("venue_order_id")
        return cls(
            **read.base(),
            venue_order_id=None if venue_order_id is None else VenueOrderId(venue_order_id),
            implicit=read.flag("implicit"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(OrderEvent):
    reason: str
    command: ClassVar[OrderCommand] = _C.REJECT

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        return cls(**read.base(), reason=read.text("reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(OrderEvent):
    """One execution; `filled_quantity` and `leaves_quantity` are the order's totals after it."""

    account_id: AccountId
    symbol: Symbol
    side: OrderSide
    trade_id: TradeId
    quantity: Decimal
    price: Decimal
    fee: Decimal  # in the quote asset
    liquidity: Liquidity
    filled_quantity: Decimal
    leaves_quantity: Decimal
    is_final: bool
    command: ClassVar[OrderCommand] = _C.FILL

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        try:
            side = OrderSide(read.text("side"))
            liquidity = Liquidity(read.text("liquidity"))
        except ValueError as error:
            raise InvalidEventPayload(str(error)) from None
        return cls(
            **read.base(),
            account_id=AccountId(read.text("account_id")),
            symbol=Symbol(read.text("symbol")),
            side=side,
            trade_id=TradeId(read.text("trade_id")),
            quantity=read.decimal("quantity"),
            price=read.decimal("price"),
            fee=read.decimal("fee"),
            liquidity=liquidity,
            filled_quantity=read.decimal("filled_quantity"),
            leaves_quantity=read.decimal("leaves_quantity"),
            is_final=read.flag("is_final"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelRequested(OrderEvent):
    command: ClassVar[OrderCommand] = _C.REQUEST_CANCEL


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCanceled(OrderEvent):
    reason: str | None
    command: ClassVar[OrderCommand] = _C.CANCEL

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        return cls(**read.base(), reason=read.optional_text("reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelRejected(OrderEvent):
    reason: str | None
    command: ClassVar[OrderCommand] = _C.CANCEL_REJECTED

    @classmethod
    def from_payload(cls, payload: Mapping[str, PayloadValue]) -> Self:
        """Decode what `to_payload` produced."""
        read = _Reader(payload)
        return cls(**read.base(), reason=read.optional_text("reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    command: ClassVar[OrderCommand] = _C.EXPIRE


EVENT_TYPES: Mapping[str, type[OrderEvent]] = MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            OrderInitialized,
            OrderDenied,
            OrderApprovalRequested,
            OrderSubmitted,
            OrderAccepted,
            OrderRejected,
            OrderFilled,
            OrderCancelRequested,
            OrderCanceled,
            OrderCancelRejected,
            OrderExpired,
        )
    }
)


def event_from_payload(event_type: str, payload: Mapping[str, PayloadValue]) -> OrderEvent:
    """Decode an order event from its envelope type and `to_payload()` dict."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidEventPayload(f"unknown order event type {event_type!r}")
    return cls.from_payload(payload)


# --- the aggregate -------------------------------------------------------------------------------------------

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
        return self.status is _S.PENDING_APPROVAL or self.status in _COMMAND_SOURCES[_C.REQUEST_CANCEL]

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
        if self.status not in _COMMAND_SOURCES[command] or target not in ORDER_TRANSITIONS[self.status]:
            raise IllegalTransition(self.status, command)
        return replace(self, status=target)

    # -- commands --

    def _require(self, command: OrderCommand) -> None:
        if self.status not in _COMMAND_SOURCES[command]:
            raise IllegalTransition(self.status, command)

    def _base(self, now: datetime) -> _EventBase:
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
