"""The paper venue process's wire format (`services/paper`, read by `shared/venues/paper_http.py`).

JSON with decimals as strings (pydantic's JSON mode), the venue's own refusal codes in the platform's error body
(`{"error": {"code", "message"}}`), and on the update stream one `StreamMessage` per WebSocket text frame.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    VenueOrderId,
)
from shared.venues.base import VenueBalance, VenueFill, VenueOrder, VenueOrderRequest, VenueOrderStatus

API_PREFIX = "/v1"
STREAM_PATH = f"{API_PREFIX}/stream"
# The response header of a write: the update-stream position once the venue had told its listeners of the write's
# fills (the client waits for its stream to reach it, so its listeners hear them before the answer, as in-process).
STREAM_POSITION_HEADER = "Aether-Stream-Position"
# A 503 with this code means the venue did nothing (safe to retry); any other 5xx after sending is ambiguous.
TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"
OUTCOME_UNKNOWN = "outcome_unknown"  # the venue itself cannot tell whether the write took effect (504)
VENUE_OPERATIONAL = "venue_operational_error"  # the venue is unusable (500): stop and page
ORDER_NOT_FOUND = "order_not_found"  # a query by client id of an order the venue never accepted (404)
# Fills replayed on a reconnect start this many sequence numbers before the client's cursor: fills of different
# accounts may commit out of sequence order, and a replayed fill the client already had is a no-op downstream.
REPLAY_OVERLAP = 1_000

_WIRE = ConfigDict(extra="forbid", frozen=True)


class OrderRequestWire(BaseModel):
    model_config = _WIRE

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

    @classmethod
    def of(cls, request: VenueOrderRequest) -> OrderRequestWire:
        return cls(
            account_id=request.account_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            quantity=request.quantity,
            limit_price=request.limit_price,
            trigger_price=request.trigger_price,
            time_in_force=request.time_in_force,
            post_only=request.post_only,
        )

    def to_venue(self) -> VenueOrderRequest:
        return VenueOrderRequest(
            account_id=self.account_id,
            client_order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            limit_price=self.limit_price,
            trigger_price=self.trigger_price,
            time_in_force=self.time_in_force,
            post_only=self.post_only,
        )


class OrderWire(BaseModel):
    model_config = _WIRE

    kind: Literal["order"] = "order"
    account_id: AccountId
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId
    symbol: Symbol
    side: OrderSide
    type: OrderType
    quantity: Decimal
    filled_quantity: Decimal
    status: VenueOrderStatus
    reason: str | None
    updated_at: datetime

    @classmethod
    def of(cls, order: VenueOrder) -> OrderWire:
        return cls(
            account_id=order.account_id,
            client_order_id=order.client_order_id,
            venue_order_id=order.venue_order_id,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            quantity=order.quantity,
            filled_quantity=order.filled_quantity,
            status=order.status,
            reason=order.reason,
            updated_at=order.updated_at,
        )

    def to_venue(self) -> VenueOrder:
        return VenueOrder(
            account_id=self.account_id,
            client_order_id=self.client_order_id,
            venue_order_id=self.venue_order_id,
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            filled_quantity=self.filled_quantity,
            status=self.status,
            reason=self.reason,
            updated_at=self.updated_at,
        )


class FillWire(BaseModel):
    model_config = _WIRE

    kind: Literal["fill"] = "fill"
    account_id: AccountId
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId
    trade_id: TradeId
    symbol: Symbol
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: Asset
    liquidity: Liquidity
    filled_at: datetime
    sequence: int

    @classmethod
    def of(cls, fill: VenueFill) -> FillWire:
        return cls(
            account_id=fill.account_id,
            client_order_id=fill.client_order_id,
            venue_order_id=fill.venue_order_id,
            trade_id=fill.trade_id,
            symbol=fill.symbol,
            side=fill.side,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            fee_asset=fill.fee_asset,
            liquidity=fill.liquidity,
            filled_at=fill.filled_at,
            sequence=fill.sequence,
        )

    def to_venue(self) -> VenueFill:
        return VenueFill(
            account_id=self.account_id,
            client_order_id=self.client_order_id,
            venue_order_id=self.venue_order_id,
            trade_id=self.trade_id,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            price=self.price,
            fee=self.fee,
            fee_asset=self.fee_asset,
            liquidity=self.liquidity,
            filled_at=self.filled_at,
            sequence=self.sequence,
        )


class BalanceWire(BaseModel):
    model_config = _WIRE

    account_id: AccountId
    asset: Asset
    total: Decimal
    available: Decimal

    @classmethod
    def of(cls, balance: VenueBalance) -> BalanceWire:
        return cls(account_id=balance.account_id, asset=balance.asset, total=balance.total, available=balance.available)

    def to_venue(self) -> VenueBalance:
        return VenueBalance(self.account_id, self.asset, self.total, self.available)


class DepositWire(BaseModel):
    model_config = _WIRE

    asset: Asset = Field(min_length=1, max_length=16)
    amount: Decimal
    reference: str = Field(min_length=1, max_length=200)


class TransferWire(BaseModel):
    """A transfer out of the account in the path to `to_account_id`, once per reference."""

    model_config = _WIRE

    to_account_id: AccountId = Field(min_length=1, max_length=128)
    asset: Asset = Field(min_length=1, max_length=16)
    amount: Decimal
    reference: str = Field(min_length=1, max_length=200)


class TransferredWire(BaseModel):
    """The two balances after a transfer: the source's and the destination's."""

    model_config = _WIRE

    source: BalanceWire
    destination: BalanceWire


class Hello(BaseModel):
    """First message on a stream: the stream position and the venue's last fill sequence at subscription."""

    model_config = _WIRE

    kind: Literal["hello"] = "hello"
    position: int
    last_sequence: int


class Update(BaseModel):
    """A live update; `position` orders them on this venue process's stream (None for a replayed fill or order)."""

    model_config = _WIRE

    kind: Literal["update"] = "update"
    position: int | None
    update: Annotated[FillWire | OrderWire, Field(discriminator="kind")]


class StreamMessage(BaseModel):
    model_config = _WIRE

    message: Annotated[Hello | Update, Field(discriminator="kind")]


def update_wire(update: VenueFill | VenueOrder) -> FillWire | OrderWire:
    return FillWire.of(update) if isinstance(update, VenueFill) else OrderWire.of(update)
