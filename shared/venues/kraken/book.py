"""A Kraken WebSocket v2 `book` (level 2) kept locally, validated by the venue's CRC32 checksum after every message.

As https://docs.kraken.com/api/docs/guides/spot-ws-book-v2 describes it: every level of a message is applied in
order (`qty` 0 removes the level), then the book is truncated to the subscribed depth (the venue sends no removal
for levels that fall out of scope), then the checksum is taken over the top 10 asks (best, lowest, first) and then
the top 10 bids (best, highest, first): for each level the price and then the quantity, each written at the pair's
precision with the '.' removed and leading zeros stripped, all concatenated; CRC32 of that string (unsigned).

Prices and quantities stay exact: they are parsed as `Decimal` from the wire's own digits, and written back at the
pair's precision (the `instrument` channel's `price_precision` / `qty_precision`: the wire sends numbers, so
"0.5660" may arrive as 0.566) or, before the precision is known, exactly as they arrived.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "CHECKSUM_LEVELS",
    "DEPTHS",
    "BookLevelError",
    "ChecksumMismatch",
    "KrakenBook",
    "PairPrecision",
    "WireLevel",
    "checksum_fragment",
]

DEPTHS = (10, 25, 100, 500, 1000)
CHECKSUM_LEVELS = 10
WireLevel = tuple[Decimal, Decimal]
_ZERO = Decimal(0)


class BookLevelError(ValueError):
    """A level the book cannot take (not a finite positive price, a negative quantity)."""


class ChecksumMismatch(Exception):
    """The local book's checksum differs from the venue's: the book is wrong and must be dropped."""

    def __init__(self, symbol: str, expected: int, computed: int) -> None:
        super().__init__(f"{symbol}: checksum {computed} != venue's {expected}")
        self.symbol = symbol
        self.expected = expected
        self.computed = computed


@dataclass(frozen=True, slots=True)
class PairPrecision:
    """The decimals of a pair's prices and quantities on the wire (`instrument`: price_precision, qty_precision)."""

    price: int
    qty: int


def _digits(value: Decimal, places: int | None) -> str:
    text = format(value, "f") if places is None else format(value, f".{places}f")
    return text.replace(".", "").lstrip("0")


def checksum_fragment(price: Decimal, qty: Decimal, precision: PairPrecision | None) -> str:
    """One level's part of the checksum string: price then qty, '.' removed, leading zeros stripped."""
    if precision is None:
        return _digits(price, None) + _digits(qty, None)
    return _digits(price, precision.price) + _digits(qty, precision.qty)


class _Side:
    """One side: sort keys best first (price for asks, -price for bids), the checksum fragments in the same order,
    and the quantity of each price."""

    __slots__ = ("fragments", "keys", "negate", "qty")

    def __init__(self, negate: bool) -> None:
        self.negate = negate
        self.keys: list[Decimal] = []
        self.fragments: list[str] = []
        self.qty: dict[Decimal, Decimal] = {}

    def set(self, price: Decimal, qty: Decimal, fragment: str) -> None:
        key = -price if self.negate else price
        index = bisect.bisect_left(self.keys, key)
        if price in self.qty:
            self.fragments[index] = fragment
        else:
            self.keys.insert(index, key)
            self.fragments.insert(index, fragment)
        self.qty[price] = qty

    def remove(self, price: Decimal) -> None:
        if self.qty.pop(price, None) is not None:
            index = bisect.bisect_left(self.keys, -price if self.negate else price)
            del self.keys[index]
            del self.fragments[index]

    def truncate(self, depth: int, changes: dict[Decimal, Decimal] | None) -> None:
        while len(self.keys) > depth:
            key = self.keys.pop()
            self.fragments.pop()
            price = -key if self.negate else key
            del self.qty[price]
            if changes is not None:
                changes[price] = _ZERO

    def top_fragments(self, count: int) -> str:
        return "".join(self.fragments[:count])

    def best(self, count: int | None) -> list[WireLevel]:
        keys = self.keys if count is None else self.keys[:count]
        prices = [-key for key in keys] if self.negate else keys
        return [(price, self.qty[price]) for price in prices]

    def clear(self) -> None:
        self.keys.clear()
        self.fragments.clear()
        self.qty.clear()


class KrakenBook:
    """The local book of one symbol at one subscribed depth."""

    def __init__(self, symbol: str, depth: int = 10, precision: PairPrecision | None = None) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, not {depth}")
        self.symbol = symbol
        self.depth = depth
        self.precision = precision
        self._bids = _Side(negate=True)
        self._asks = _Side(negate=False)
        self.synced = False  # a snapshot was applied and no checksum failed since
        self._formats = ("f", "f") if precision is None else (f".{precision.price}f", f".{precision.qty}f")

    def reset(self) -> None:
        """Forget every level (after a mismatch, before the next snapshot)."""
        self._bids.clear()
        self._asks.clear()
        self.synced = False

    def apply_snapshot(self, bids: Iterable[WireLevel], asks: Iterable[WireLevel], checksum: int | None) -> None:
        """Replace the book with a snapshot, then validate it; `ChecksumMismatch` leaves the book reset."""
        self.reset()
        self._apply(self._bids, bids, None)
        self._apply(self._asks, asks, None)
        self._finish(checksum)

    def apply_update(
        self, bids: Iterable[WireLevel], asks: Iterable[WireLevel], checksum: int | None
    ) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """Apply an update's levels in order, truncate to depth, validate; `ChecksumMismatch` leaves it reset.

        Returns the net change of each side (bids, asks): price -> new qty, 0 for a level removed, including the
        levels that fell out of the subscribed depth (the venue sends no removal for those)."""
        if not self.synced:
            raise RuntimeError(f"{self.symbol}: an update before a snapshot")
        bid_changes: dict[Decimal, Decimal] = {}
        ask_changes: dict[Decimal, Decimal] = {}
        self._apply(self._bids, bids, bid_changes)
        self._apply(self._asks, asks, ask_changes)
        self._finish(checksum)
        return bid_changes, ask_changes

    def checksum(self) -> int:
        """CRC32 of the top 10 asks then the top 10 bids, as the venue computes it."""
        text = self._asks.top_fragments(CHECKSUM_LEVELS) + self._bids.top_fragments(CHECKSUM_LEVELS)
        return zlib.crc32(text.encode("ascii"))

    def bids(self, count: int | None = None) -> list[WireLevel]:
        """(price, qty) of the bids, best (highest) first."""
        return self._bids.best(count)

    def asks(self, count: int | None = None) -> list[WireLevel]:
        """(price, qty) of the asks, best (lowest) first."""
        return self._asks.best(count)

    def _apply(self, side: _Side, levels: Iterable[WireLevel], changes: dict[Decimal, Decimal] | None) -> None:
        price_format, qty_format = self._formats
        for price, qty in levels:
            if changes is not None:
                changes[price] = qty
            if not (price.is_finite() and qty.is_finite() and price > 0 and qty >= 0):
                self.reset()
                raise BookLevelError(f"{self.symbol}: bad level price={price} qty={qty}")
            if qty:
                fragment = format(price, price_format).replace(".", "").lstrip("0") + format(qty, qty_format).replace(
                    ".", ""
                ).lstrip("0")  # checksum_fragment, inlined: this is the hot loop
                side.set(price, qty, fragment)
            else:
                side.remove(price)
        side.truncate(self.depth, changes)

    def _finish(self, checksum: int | None) -> None:
        if checksum is not None:
            computed = self.checksum()
            if computed != checksum:
                self.reset()
                raise ChecksumMismatch(self.symbol, checksum, computed)
        self.synced = True
