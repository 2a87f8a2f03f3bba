"""A hand-written in-memory venue for OMS tests that are about the OMS, not about matching.

It keeps the venue's side of the contract (idempotent submit by client id, query, cancel, fills with
a sequence, balances) with simple fills: market orders fill at once at `price`, limit orders rest
until `fill_resting` is called. The paper venue, which matches against a real book, is tested by the
contract suite in tests/contract/.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    TradeId,
    VenueOrderId,
)
from shared.venues.base import (
    UpdateListener,
    VenueBalance,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
)

FEE_RATE = Decimal("0.004")


class FakeVenue:
    name = "paper"

    def __init__(self, price: Decimal = Decimal("100")) -> None:
        self.price = price
        self.orders: dict[tuple[str, str], VenueOrder] = {}
        self.requests: dict[tuple[str, str], VenueOrderRequest] = {}
        self.fills: list[VenueFill] = []
        self.balances_by_account: dict[str, dict[str, Decimal]] = {}
        self.deposit_references: set[tuple[str, str]] = set()
        self.submit_calls = 0
        self.listeners: list[UpdateListener] = []
        self._ids = itertools.count(1)

    def subscribe(self, listener: UpdateListener) -> None:
        self.listeners.append(listener)

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> None:
        if (account_id, reference) in self.deposit_references:
            return
        self.deposit_references.add((account_id, reference))
        book = self.balances_by_account.setdefault(account_id, {})
        book[asset] = book.get(asset, Decimal(0)) + amount

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        self.submit_calls += 1
        key = (request.account_id, request.client_order_id)
        if key in self.orders:
            return self.orders[key]
        if request.post_only and request.limit_price is not None and request.limit_price >= self.price:
            raise VenueRejected("post_only_would_cross", "post-only order would take liquidity")
        order = VenueOrder(
            account_id=request.account_id,
            client_order_id=request.client_order_id,
            venue_order_id=VenueOrderId(f"V{next(self._ids)}"),
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            quantity=request.quantity,
            filled_quantity=Decimal(0),
            status=VenueOrderStatus.OPEN,
            reason=None,
            updated_at=datetime.now(UTC),
        )
        self.orders[key], self.requests[key] = order, request
        if request.type is OrderType.MARKET:
            await self._fill(key, request.quantity, self.price, Liquidity.TAKER)
        return self.orders[key]

    async def fill_resting(self, account_id: str, client_order_id: str, quantity: Decimal) -> None:
        request = self.requests[(account_id, client_order_id)]
        assert request.limit_price is not None
        await self._fill((account_id, client_order_id), quantity, request.limit_price, Liquidity.MAKER)

    async def _fill(self, key: tuple[str, str], quantity: Decimal, price: Decimal, liquidity: Liquidity) -> None:
        order = self.orders[key]
        request = self.requests[key]
        base, quote = request.symbol.split("/")
        fee = (quantity * price * FEE_RATE).quantize(Decimal("0.01"))
        sequence = len(self.fills) + 1
        fill = VenueFill(
            account_id=order.account_id,
            client_order_id=order.client_order_id,
            venue_order_id=order.venue_order_id,
            trade_id=TradeId(f"T{sequence}-{uuid.uuid4().hex[:8]}"),
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            fee=fee,
            fee_asset=Asset(quote),
            liquidity=liquidity,
            filled_at=datetime.now(UTC),
            sequence=sequence,
        )
        self.fills.append(fill)
        book = self.balances_by_account.setdefault(order.account_id, {})
        sign = 1 if order.side is OrderSide.BUY else -1
        book[base] = book.get(base, Decimal(0)) + sign * quantity
        book[quote] = book.get(quote, Decimal(0)) - sign * quantity * price - fee
        filled = order.filled_quantity + quantity
        status = VenueOrderStatus.FILLED if filled == order.quantity else VenueOrderStatus.OPEN
        self.orders[key] = replace(order, filled_quantity=filled, status=status)
        for listener in self.listeners:
            await listener(fill)
            await listener(self.orders[key])

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        key = (account_id, client_order_id)
        order = self.orders[key]
        if order.status is VenueOrderStatus.OPEN:
            order = replace(order, status=VenueOrderStatus.CANCELED, reason="canceled by request")
            self.orders[key] = order
        return order

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        return self.orders.get((account_id, client_order_id))

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        return [o for o in self.orders.values() if o.account_id == account_id and o.status is VenueOrderStatus.OPEN]

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        return [f for f in self.fills if f.account_id == account_id and f.sequence > after_sequence]

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        return [
            VenueBalance(account_id, Asset(asset), total, total)
            for asset, total in self.balances_by_account.get(account_id, {}).items()
        ]
