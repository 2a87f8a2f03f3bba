"""Free liquidity for the simulated matching engine: the visible book less what our own orders took from it.

What we take (or what crossing resting orders fill from) is remembered per level and subtracted from the
displayed quantity, so a second order does not take the same liquidity again. The venue does not know about
our fills, so a delta for that level does not simply reset it: a decrease of the displayed quantity (real
trades, cancels) first uses up our consumption, an increase is new liquidity behind it (free = displayed -
consumed). A removed level forgets it. A snapshot is read the same way, level by level (`rebase`): the next
snapshot of the same book state still shows what we took, and must not offer it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal

from shared.domain.book import OrderBook
from shared.domain.types import OrderSide

ZERO = Decimal(0)


def opposite(side: OrderSide) -> OrderSide:
    return OrderSide.SELL if side is OrderSide.BUY else OrderSide.BUY


def marketable(side: OrderSide, level_price: Decimal, limit: Decimal | None) -> bool:
    """Whether an order of `side` with `limit` (None: market) may trade at `level_price`."""
    if limit is None:
        return True
    return level_price <= limit if side is OrderSide.BUY else level_price >= limit


class FreeLiquidity:
    """The displayed levels of `book` less our consumption of them; methods take the side of *our* order."""

    def __init__(self, book: OrderBook) -> None:
        self.book = book
        self._consumed: dict[tuple[OrderSide, Decimal], Decimal] = {}  # (book side, price) -> quantity we took

    def forget(self) -> None:
        """Forget all consumption (the engine was rebuilt)."""
        self._consumed.clear()

    def __bool__(self) -> bool:
        """Whether our orders took anything the book still shows."""
        return bool(self._consumed)

    def consumed(self) -> list[tuple[OrderSide, Decimal, Decimal]]:
        """(book side, price, quantity we took) per level, in a stable order (for the engine's saved state)."""
        return [(side, price, quantity) for (side, price), quantity in sorted(self._consumed.items())]

    def load(self, levels: Iterable[tuple[OrderSide, Decimal, Decimal]]) -> None:
        """Replace the consumption with saved `levels` (a restored engine)."""
        self._consumed = {(side, price): quantity for side, price, quantity in levels if quantity > 0}

    def rebase(self, fresh: OrderBook) -> None:
        """Before the book is replaced by the snapshot `fresh`: each level we took from keeps our consumption, less
        what the snapshot shows has gone from it (a decrease uses up our consumption first; a level gone forgets it)."""
        for book_side, price in list(self._consumed):
            self.reconcile(book_side, price, fresh.quantity_at(book_side, price))

    def preview(self, side: OrderSide, limit: Decimal | None, quantity: Decimal) -> list[tuple[Decimal, Decimal]]:
        """What `take` would consume, without consuming it."""
        taken_levels: list[tuple[Decimal, Decimal]] = []
        for price, free in self.levels(side, limit):
            taken = min(quantity, free)
            quantity -= taken
            taken_levels.append((price, taken))
            if quantity <= 0:
                break
        return taken_levels

    def levels(self, side: OrderSide, limit: Decimal | None) -> Iterator[tuple[Decimal, Decimal]]:
        """(price, free quantity) on the side an order of `side` takes from, best first, up to `limit`."""
        book_side = opposite(side)
        for price, shown in self.book.iter_levels(book_side):
            if not marketable(side, price, limit):
                return
            free = shown - self._consumed.get((book_side, price), ZERO)
            if free > 0:
                yield price, free

    def depth(self, side: OrderSide, limit: Decimal | None, enough: Decimal) -> Decimal:
        """The free quantity up to `limit`, counted until it reaches `enough`."""
        depth = ZERO
        for _, free in self.levels(side, limit):
            depth += free
            if depth >= enough:
                break
        return depth

    def would_take(self, side: OrderSide, limit: Decimal | None) -> bool:
        """Whether an order would cross the displayed best price, consumed or not (the real venue would see it)."""
        best = self.book.best(opposite(side))
        return best is not None and marketable(side, best, limit)

    def take(self, side: OrderSide, limit: Decimal | None, quantity: Decimal) -> list[tuple[Decimal, Decimal]]:
        """Consume up to `quantity`, best level first, up to `limit`; (price, quantity taken) per level."""
        taken_levels = self.preview(side, limit, quantity)
        book_side = opposite(side)
        for price, taken in taken_levels:
            self._consumed[(book_side, price)] = self._consumed.get((book_side, price), ZERO) + taken
        return taken_levels

    def reconcile(self, book_side: OrderSide, price: Decimal, quantity: Decimal) -> None:
        """Before the book's level moves to `quantity`: a decrease uses up our consumption first."""
        consumed = self._consumed.pop((book_side, price), ZERO)
        decrease = self.book.quantity_at(book_side, price) - quantity
        left = consumed - max(decrease, ZERO)
        if left > 0 and quantity > 0:
            self._consumed[(book_side, price)] = min(left, quantity)
