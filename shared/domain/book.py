"""Level-2 order book of one instrument: price -> visible quantity per side."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from shared.domain.types import OrderSide

Level = tuple[Decimal, Decimal]  # (price, quantity)


class CrossedBook(ValueError):
    """A snapshot whose best bid is at or above its best ask."""

    code = "crossed_book"


class OrderBook:
    """Bids and asks as price -> quantity; a quantity of zero removes the level (Kraken v2 semantics)."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.updated_at: datetime | None = None

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], at: datetime) -> None:
        """Replace both sides; a crossed snapshot is refused and the previous book kept."""
        new_bids = {price: qty for price, qty in bids if qty > 0}
        new_asks = {price: qty for price, qty in asks if qty > 0}
        if new_bids and new_asks and max(new_bids) >= min(new_asks):
            raise CrossedBook(f"{self.symbol}: best bid {max(new_bids)} >= best ask {min(new_asks)}")
        self.bids, self.asks, self.updated_at = new_bids, new_asks, at

    def apply_delta(self, side: OrderSide, price: Decimal, quantity: Decimal, at: datetime) -> None:
        """Set one level (side BUY = bids); quantity 0 removes it."""
        levels = self.bids if side is OrderSide.BUY else self.asks
        if quantity > 0:
            levels[price] = quantity
        else:
            levels.pop(price, None)
        self.updated_at = at

    @property
    def best_bid(self) -> Decimal | None:
        return max(self.bids) if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return min(self.asks) if self.asks else None

    @property
    def mid(self) -> Decimal | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return (self.best_bid + self.best_ask) / 2

    def levels(self, side: OrderSide, depth: int | None = None) -> list[Level]:
        """Levels best first: bids descending (side BUY), asks ascending (side SELL)."""
        ordered = sorted(self.bids.items(), reverse=True) if side is OrderSide.BUY else sorted(self.asks.items())
        return ordered if depth is None else ordered[:depth]

    def quantity_at(self, side: OrderSide, price: Decimal) -> Decimal:
        levels = self.bids if side is OrderSide.BUY else self.asks
        return levels.get(price, Decimal(0))
