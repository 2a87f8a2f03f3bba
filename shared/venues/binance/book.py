"""Binance's local order book procedure: a REST depth snapshot plus the `<symbol>@depth` diff stream.

developers.binance.com/docs/binance-spot-api-docs/web-socket-streams, "How to manage a local order book correctly":
buffer the diff events; fetch GET /api/v3/depth; if the snapshot's `lastUpdateId` is below the first buffered
event's `U`, fetch it again; then apply the buffered and every later event with the update procedure:
an event with `u` < the book's update id is ignored; an event with `U` > update id + 1 is a gap (the book is
dropped and the procedure restarts: `BookGap`); otherwise each level is set to its new quantity (0 removes it)
and the update id becomes `u`. `LocalBook` is that state machine; it never hands out a book that is not synced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.venues.binance.wire import BinanceWireError

Levels = tuple[tuple[Decimal, Decimal], ...]
MAX_BUFFER = 10_000  # diff events kept while waiting for a snapshot; past it the procedure restarts


class BookGap(Exception):
    """A diff event does not follow the book's update id: the book was dropped and needs a new snapshot."""

    def __init__(self, symbol: str, expected: int, first_id: int) -> None:
        super().__init__(f"{symbol}: diff starts at {first_id}, expected at most {expected}")
        self.symbol = symbol


@dataclass(frozen=True, slots=True)
class DepthUpdate:
    """One `depthUpdate` event: the levels changed between update ids `first_id` (U) and `final_id` (u)."""

    symbol: str
    event_time: int
    first_id: int
    final_id: int
    bids: Levels
    asks: Levels


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """GET /api/v3/depth: the book as of `last_update_id`."""

    last_update_id: int
    bids: Levels
    asks: Levels


def _levels(raw: Any, where: str) -> Levels:
    if not isinstance(raw, list):
        raise BinanceWireError(f"{where}: expected a list of [price, quantity]")
    found = []
    for i, level in enumerate(raw):
        if not (isinstance(level, list) and len(level) == 2 and all(isinstance(v, str) for v in level)):
            raise BinanceWireError(f"{where}[{i}]: expected [price, quantity] as strings")
        try:
            price, qty = Decimal(level[0]), Decimal(level[1])
        except InvalidOperation:
            raise BinanceWireError(f"{where}[{i}]: not decimal strings") from None
        if not (price.is_finite() and qty.is_finite()) or price <= 0 or qty < 0:
            raise BinanceWireError(f"{where}[{i}]: price must be positive and quantity not negative")
        found.append((price, qty))
    return tuple(found)


def _id(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BinanceWireError(f"{where}.{name}: expected a non-negative integer")
    return value


def depth_update(event: Any) -> DepthUpdate:
    """A `depthUpdate` event (the `data` of a combined-stream frame)."""
    if not isinstance(event, dict) or event.get("e") != "depthUpdate":
        raise BinanceWireError("depthUpdate: expected an object with e=depthUpdate")
    symbol = event.get("s")
    if not isinstance(symbol, str) or not symbol:
        raise BinanceWireError("depthUpdate.s: expected a symbol")
    first, final = _id(event, "U", "depthUpdate"), _id(event, "u", "depthUpdate")
    if first > final:
        raise BinanceWireError("depthUpdate: U is after u")
    return DepthUpdate(
        symbol, _id(event, "E", "depthUpdate"), first, final, _levels(event.get("b"), "b"), _levels(event.get("a"), "a")
    )


def depth_snapshot(body: Any) -> DepthSnapshot:
    """GET /api/v3/depth's answer."""
    if not isinstance(body, dict):
        raise BinanceWireError("depth: expected an object")
    return DepthSnapshot(
        _id(body, "lastUpdateId", "depth"), _levels(body.get("bids"), "bids"), _levels(body.get("asks"), "asks")
    )


class LocalBook:
    """One symbol's book, kept by Binance's procedure; `synced` is False until a usable snapshot was applied."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.update_id: int | None = None
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self._buffer: list[DepthUpdate] = []
        self.gaps = 0
        self.stale_snapshots = 0

    @property
    def synced(self) -> bool:
        return self.update_id is not None

    def reset(self) -> None:
        """Drop the book and everything buffered: the procedure starts again."""
        self.update_id = None
        self.bids.clear()
        self.asks.clear()
        self._buffer.clear()

    def on_update(self, update: DepthUpdate) -> bool:
        """Buffer (not synced) or apply one diff event; True when the book changed. `BookGap` drops the book."""
        if not self.synced:
            if len(self._buffer) >= MAX_BUFFER:
                self._buffer.clear()
            self._buffer.append(update)
            return False
        return self._apply(update)

    def on_snapshot(self, snapshot: DepthSnapshot) -> bool:
        """Start from `snapshot` and apply what was buffered; False when it is older than the buffer (fetch again).

        `BookGap` when the buffered events do not continue it (the book is dropped)."""
        if self._buffer and snapshot.last_update_id < self._buffer[0].first_id:
            self.stale_snapshots += 1
            return False
        buffered, self._buffer = self._buffer, []
        self.bids = {p: q for p, q in snapshot.bids if q > 0}
        self.asks = {p: q for p, q in snapshot.asks if q > 0}
        self.update_id = snapshot.last_update_id
        for i, update in enumerate(buffered):
            try:
                self._apply(update)
            except BookGap:
                self._buffer = buffered[i:]  # the restarted procedure begins with them
                raise
        return True

    def _apply(self, update: DepthUpdate) -> bool:
        current = self.update_id
        if current is None:
            raise RuntimeError("a diff event applied to a book that is not synced")
        if update.final_id < current + 1:
            return False  # already in the book
        if update.first_id > current + 1:
            self.gaps += 1
            self.reset()
            self._buffer.append(update)  # the restarted procedure begins with it
            raise BookGap(self.symbol, current + 1, update.first_id)
        _set(self.bids, update.bids)
        _set(self.asks, update.asks)
        self.update_id = update.final_id
        return True

    def top(self, depth: int) -> tuple[Levels, Levels]:
        """The best `depth` bids (highest first) and asks (lowest first)."""
        bids = tuple(sorted(self.bids.items(), reverse=True)[:depth])
        asks = tuple(sorted(self.asks.items())[:depth])
        return bids, asks


def _set(side: dict[Decimal, Decimal], levels: Sequence[tuple[Decimal, Decimal]]) -> None:
    for price, qty in levels:
        if qty == 0:
            side.pop(price, None)
        else:
            side[price] = qty
