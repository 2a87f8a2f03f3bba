"""Level-2 order book of one instrument: price -> visible quantity per side, kept sorted.

Both sides are `sortedcontainers.SortedDict`s (ascending prices), so a level update costs O(log n) and the
best price, a walk from the top and `levels(side, depth)` never sort. Side `BUY` means the bids, `SELL` the asks.

Validation: a snapshot is checked as a whole and a crossed or locked one (best bid >= best ask) is refused with
`CrossedBook`, keeping the previous book: a snapshot is a complete, consistent picture, so a crossed one is bad
data. Deltas are *not* checked for crossing: a venue message updates several levels and, applied one level at a
time, may pass through a crossed state for an instant (a new bid arrives before the ask it replaces is removed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from itertools import islice

from sortedcontainers import SortedDict

from shared.domain.types import OrderSide

Level = tuple[Decimal, Decimal]  # (price, quantity)
ZERO = Decimal(0)


class MarketDataError(ValueError):
    """Market data the book cannot take; `code` says why."""

    code = "invalid_market_data"


class CrossedBook(MarketDataError):
    """A snapshot whose best bid is at or above its best ask."""

    code = "crossed_book"


class InvalidLevel(MarketDataError):
    """A level with a non-positive price or a negative quantity."""

    code = "invalid_level"


def check_level(price: Decimal, quantity: Decimal) -> Level:
    """The level itself when its price is positive and its quantity not negative, else `InvalidLevel`."""
    if not price.is_finite() or not quantity.is_finite() or price <= 0 or quantity < 0:
        raise InvalidLevel(f"invalid level {price} x {quantity}")
    return price, quantity


class OrderBook:
    """Bids and asks as price -> quantity; a quantity of zero removes the level (Kraken v2 semantics)."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bids: SortedDict[Decimal, Decimal] = SortedDict()
        self._asks: SortedDict[Decimal, Decimal] = SortedDict()
        self.updated_at: datetime | None = None

    @property
    def bids(self) -> Mapping[Decimal, Decimal]:
        """Bid levels, price -> quantity (read-only view, ascending prices)."""
        return self._bids

    @property
    def asks(self) -> Mapping[Decimal, Decimal]:
        """Ask levels, price -> quantity (read-only view, ascending prices)."""
        return self._asks

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], at: datetime) -> None:
        """Replace both sides; zero-quantity levels are dropped, a crossed snapshot is refused and the book kept."""
        sides: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] = ({}, {})
        for levels, target in zip((bids, asks), sides, strict=True):
            for price, quantity in levels:
                check_level(price, quantity)
                if quantity > 0:
                    target[price] = quantity
                else:
                    target.pop(price, None)
        # Sorted once per side, not level by level (a snapshot is most of a replay's book work).
        new_bids: SortedDict[Decimal, Decimal] = SortedDict(sides[0])
        new_asks: SortedDict[Decimal, Decimal] = SortedDict(sides[1])
        if new_bids and new_asks and new_bids.peekitem(-1)[0] >= new_asks.peekitem(0)[0]:
            raise CrossedBook(
                f"{self.symbol}: best bid {new_bids.peekitem(-1)[0]} >= best ask {new_asks.peekitem(0)[0]}"
            )
        self._bids, self._asks, self.updated_at = new_bids, new_asks, at

    def apply_delta(self, side: OrderSide, price: Decimal, quantity: Decimal, at: datetime) -> None:
        """Set one level to its new total quantity (side BUY = bids); quantity 0 removes it."""
        check_level(price, quantity)
        levels = self._side(side)
        if quantity > 0:
            levels[price] = quantity
        else:
            levels.pop(price, None)
        self.updated_at = at

    def load(self, other: OrderBook) -> None:
        """Take over the levels and time of `other` (a book built and validated aside); `other` is spent."""
        self._bids, self._asks, self.updated_at = other._bids, other._asks, other.updated_at
        other._bids, other._asks = SortedDict(), SortedDict()

    def best(self, side: OrderSide) -> Decimal | None:
        """Best price of one side (highest bid for BUY, lowest ask for SELL), None when the side is empty."""
        levels = self._side(side)
        if not levels:
            return None
        return levels.peekitem(-1 if side is OrderSide.BUY else 0)[0]

    @property
    def best_bid(self) -> Decimal | None:
        return self.best(OrderSide.BUY)

    @property
    def best_ask(self) -> Decimal | None:
        return self.best(OrderSide.SELL)

    @property
    def mid(self) -> Decimal | None:
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else (bid + ask) / 2

    @property
    def spread(self) -> Decimal | None:
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else ask - bid

    def iter_levels(self, side: OrderSide) -> Iterator[Level]:
        """Levels best first without copying: bids descending (BUY), asks ascending (SELL)."""
        items = self._side(side).items()
        return reversed(items) if side is OrderSide.BUY else iter(items)

    def levels(self, side: OrderSide, depth: int | None = None) -> list[Level]:
        """The best `depth` levels (all when None), best first."""
        return list(islice(self.iter_levels(side), depth))

    def quantity_at(self, side: OrderSide, price: Decimal) -> Decimal:
        """Visible quantity at one price (0 when there is no level)."""
        return self._side(side).get(price, ZERO)

    def _side(self, side: OrderSide) -> SortedDict[Decimal, Decimal]:
        return self._bids if side is OrderSide.BUY else self._asks
