"""The OMS's messages: the order body (REST `OrderCreate` and `SubmitOrder.order`), the commands other services
send to `oms.commands.v1`, and the order events on `oms.order-events.v1`.

One definition of an order: the OMS's REST schema, the hedge service's and the exit engine's `SubmitOrder`
commands all carry `OrderCreate`; `to_request()` hands it to the domain's one validation
(`shared.domain.order_requests.validate_request`). Event payloads are the domain events' `to_payload()` plus the order's
identity, status and exits, exactly as the OMS writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import Field, StrictBool, model_validator

from shared.contracts.base import Contract, DecimalText, Identifier, Message, Text, Timestamp
from shared.contracts.exits import ExitInstructions
from shared.domain.money import Fraction, PositiveDecimal
from shared.domain.order_requests import OrderRequest
from shared.domain.types import (
    AccountId,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderStatus,
    OrderType,
    Symbol,
    TimeInForce,
)

SymbolText = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", examples=["BTC/USD"])]


class OrderCreate(Contract):
    """A new order. `client_order_id` is your idempotency key: the same id and body returns the same order."""

    account_id: Identifier
    client_order_id: Identifier
    symbol: SymbolText
    side: OrderSide
    type: OrderType
    quantity: PositiveDecimal
    limit_price: PositiveDecimal | None = None
    trigger_price: PositiveDecimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: StrictBool = False
    exits: ExitInstructions | None = Field(
        default=None, description="stop-loss / take-profit / trailing stop the risk service arms when an entry fills"
    )

    def to_request(self, created_at: datetime) -> OrderRequest:
        """The domain request (checked by `shared.domain.order_requests.validate_request`, the one order validation)."""
        return OrderRequest(
            account_id=AccountId(self.account_id),
            client_order_id=ClientOrderId(self.client_order_id),
            symbol=Symbol(self.symbol),
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            limit_price=self.limit_price,
            trigger_price=self.trigger_price,
            time_in_force=self.time_in_force,
            post_only=self.post_only,
            created_at=created_at,
        )


# --- commands on oms.commands.v1 ------------------------------------------------------------------------------


class SubmitOrder(Message):
    """Place `order` as if it came over REST (idempotent by client order id). Key: the account id."""

    TYPE = "SubmitOrder"

    order: OrderCreate
    model_confidence: Fraction | None = Field(
        default=None, description="a model-driven order's confidence (the approval policy's model_confidence_min)"
    )


class CancelOrder(Message):
    """Cancel an order, named by `order_id` or by `account_id` + `client_order_id`. Key: the account id."""

    TYPE = "CancelOrder"

    order_id: Identifier | None = None
    account_id: Identifier | None = None
    client_order_id: Identifier | None = None

    @model_validator(mode="after")
    def _names_an_order(self) -> Self:
        if self.order_id is None and (self.account_id is None or self.client_order_id is None):
            raise ValueError("either order_id or both account_id and client_order_id are required")
        return self


# --- events on oms.order-events.v1 ----------------------------------------------------------------------------


class CommandRejected(Message):
    """A command the OMS could not carry out (answer on the order-events topic, aggregate = the command's)."""

    TYPE = "CommandRejected"

    command_type: Annotated[str, Field(min_length=1, max_length=128)]
    code: Annotated[str, Field(min_length=1, max_length=128)]
    message: Text


class OrderEventMessage(Message):
    """What every order event carries: the domain event's base fields and the order's identity and status."""

    order_id: Identifier
    occurred_at: Timestamp
    version: Annotated[int, Field(ge=1)]
    account_id: Identifier
    client_order_id: Identifier
    symbol: SymbolText
    side: OrderSide
    status: OrderStatus
    exits: ExitInstructions | None = None


class OrderInitialized(OrderEventMessage):
    TYPE = "OrderInitialized"

    order_type: OrderType
    quantity: DecimalText
    limit_price: DecimalText | None
    trigger_price: DecimalText | None
    time_in_force: TimeInForce
    post_only: bool
    created_at: Timestamp


class OrderDenied(OrderEventMessage):
    TYPE = "OrderDenied"

    reason: Text


class OrderApprovalRequested(OrderEventMessage):
    TYPE = "OrderApprovalRequested"


class OrderSubmitted(OrderEventMessage):
    TYPE = "OrderSubmitted"

    approved: bool


class OrderAccepted(OrderEventMessage):
    TYPE = "OrderAccepted"

    venue_order_id: Annotated[str, Field(max_length=128)] | None
    implicit: bool


class OrderRejected(OrderEventMessage):
    TYPE = "OrderRejected"

    reason: Text


class OrderFilled(OrderEventMessage):
    """One execution; `filled_quantity` and `leaves_quantity` are the order's totals after it; fee in quote."""

    TYPE = "OrderFilled"

    trade_id: Annotated[str, Field(min_length=1, max_length=128)]
    quantity: DecimalText
    price: DecimalText
    fee: DecimalText
    liquidity: Liquidity
    filled_quantity: DecimalText
    leaves_quantity: DecimalText
    is_final: bool


class OrderCancelRequested(OrderEventMessage):
    TYPE = "OrderCancelRequested"


class OrderCanceled(OrderEventMessage):
    TYPE = "OrderCanceled"

    reason: Text | None


class OrderCancelRejected(OrderEventMessage):
    TYPE = "OrderCancelRejected"

    reason: Text | None


class OrderExpired(OrderEventMessage):
    TYPE = "OrderExpired"


ORDER_EVENTS: tuple[type[OrderEventMessage], ...] = (
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
