"""A Coinbase `level2` order book: a snapshot then absolute level updates, kept in step with `sequence_num`.

`new_quantity` is the level's new size, not a delta ("0" removes it). The book is valid only while every message
of the connection arrived: `Level2Book.expect(sequence)` is told each frame's number, and a skipped one
(`SequenceGap`) means the book must be dropped and rebuilt from a fresh snapshot (the feed reconnects).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from shared.venues.coinbase.ws_wire import L2Update

WireLevel = tuple[Decimal, Decimal]


class SequenceGap(Exception):
    """A message of the connection was lost: `expected` was due, `got` arrived."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"sequence gap: expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class CrossedBook(Exception):
    """After an update the best bid is at or above the best ask: the book is wrong."""


class SequenceTracker:
    """The connection's `sequence_num`: each frame's must be the previous one's plus one (a repeat is ignored)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def expect(self, sequence: int) -> bool:
        """True for the next message, False for a duplicate/old one; `SequenceGap` when one was skipped."""
        if self.last is not None:
            if sequence <= self.last:
                return False
            if sequence != self.last + 1:
                raise SequenceGap(self.last + 1, sequence)
        self.last = sequence
        return True

    def reset(self) -> None:
        self.last = None


class Level2Book:
    """One product's full book; `top(n)` for what is published."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bids: dict[Decimal, Decimal] = {}
        self._asks: dict[Decimal, Decimal] = {}
        self.synced = False

    def reset(self) -> None:
        """Forget every level (until the next snapshot)."""
        self._bids.clear()
        self._asks.clear()
        self.synced = False

    def apply_snapshot(self, updates: Iterable[L2Update]) -> None:
        """Replace the book by a snapshot's levels."""
        self.reset()
        self._apply(updates)
        self.synced = True

    def apply_update(self, updates: Iterable[L2Update]) -> None:
        """Apply an update's levels (absolute sizes)."""
        self._apply(updates)

    def top(self, depth: int) -> tuple[list[WireLevel], list[WireLevel]]:
        """The best `depth` bids (highest first) and asks (lowest first)."""
        bids = sorted(self._bids.items(), key=lambda level: -level[0])[:depth]
        asks = sorted(self._asks.items())[:depth]
        return bids, asks

    def _apply(self, updates: Iterable[L2Update]) -> None:
        for update in updates:
            side = self._bids if update.side == "bid" else self._asks
            if update.quantity == 0:
                side.pop(update.price, None)
            else:
                side[update.price] = update.quantity
        if self._bids and self._asks and max(self._bids) >= min(self._asks):
            raise CrossedBook(f"{self.symbol}: best bid {max(self._bids)} >= best ask {min(self._asks)}")
