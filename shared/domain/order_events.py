"""Order events: one past-tense event per change of an order, and their flat JSON payloads for the outbox.

`OrderEvent.to_payload` encodes decimals as strings and timestamps in ISO 8601; `event_from_payload` decodes
an event from its envelope type and that payload (`InvalidEventPayload` on anything unexpected). Each event
but `OrderInitialized` names the `OrderCommand` whose transition it records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar, Self, TypedDict

from shared.domain.money import MoneyError, format_decimal, to_decimal
from shared.domain.order_requests import OrderRequest
from shared.domain.order_rules import InvalidEventPayload, OrderCommand
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
    VenueOrderId,
)

PayloadValue = str | int | bool | None
Payload = dict[str, PayloadValue]

_C = OrderCommand


class EventBase(TypedDict):
    """The fields every order event starts with."""

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

    def base(self) -> EventBase:
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
