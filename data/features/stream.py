"""Streaming engine: market-data messages in, one `FeatureBar` per closed bar out (same definitions as the batch).

Trades and book changes come on two topics, so one symbol's messages may interleave a little out of time order.
Each symbol keeps its bars open until its watermark (the latest timestamp seen) passes the bar's end by
`grace_us`; then the bar closes (bars without input close empty) and is emitted, oldest first; `flush` closes
the rest. A message for a bar already closed is late: counted in `late` and left out (the batch engine over the
stored range includes it; a recompute of that range replaces the streamed rows). With messages in time order
the grace changes only when a bar is emitted, never its values.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field

from data.features.definitions import (
    BAR_US,
    HISTORY,
    BookRow,
    BookTracker,
    bar_of,
    evaluate,
    ofi_contribution,
    trade_row,
)
from shared.marketdata import BookDelta, BookSnapshot, MarketData, Trade

GRACE_US = 5_000_000  # the live worker's grace: 5 s


@dataclass(frozen=True, slots=True)
class FeatureBar:
    """The features of one closed bar."""

    venue: str
    symbol: str
    bar_us: int
    values: dict[str, float | None]


@dataclass(slots=True)
class _Bar:
    trades: int = 0
    buy_qty: int = 0
    sell_qty: int = 0
    notional: int = 0
    close: float | None = None
    close_key: tuple[int, str] | None = None
    ofi: int = 0
    book: BookRow | None = None  # the last book state within the bar


@dataclass(slots=True)
class _Symbol:
    venue: str
    symbol: str
    next_close: int  # the oldest bar not closed yet
    watermark_us: int = 0
    previous_book: BookRow | None = None  # the last book state, for order-flow imbalance
    carried_book: BookRow | None = None  # the book at the end of the last closed bar
    open_bars: dict[int, _Bar] = field(default_factory=dict)
    history: deque[dict[str, float | int | None]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def bar(self, bar_us: int) -> _Bar | None:
        """The open bar at `bar_us` (opened when new); None when it is already closed."""
        if bar_us < self.next_close:
            return None
        return self.open_bars.setdefault(bar_us, _Bar())

    def close_next(self) -> FeatureBar:
        acc = self.open_bars.pop(self.next_close, None) or _Bar()
        book = acc.book or self.carried_book
        self.carried_book = book
        inputs: dict[str, float | int | None] = {
            "trades": acc.trades,
            "buy_qty": acc.buy_qty,
            "sell_qty": acc.sell_qty,
            "notional": acc.notional,
            "close": acc.close,
            "bid": book.bid if book else None,
            "ask": book.ask if book else None,
            "bid_depth": book.bid_depth if book else None,
            "ask_depth": book.ask_depth if book else None,
            "ofi": acc.ofi,
        }
        self.history.appendleft(inputs)
        bar = FeatureBar(self.venue, self.symbol, self.next_close, evaluate(list(self.history)))
        self.next_close += BAR_US
        return bar

    def close_ready(self, grace_us: int) -> list[FeatureBar]:
        out = []
        while self.next_close + BAR_US + grace_us <= self.watermark_us:
            out.append(self.close_next())
        return out

    def close_all(self) -> list[FeatureBar]:
        out = []
        while self.open_bars:
            out.append(self.close_next())
        return out


Checkpoint = tuple[tuple[_Symbol | None, BookTracker | None], int]


class FeatureStream:
    """Incremental features of every (venue, symbol) seen."""

    def __init__(self, grace_us: int = 0) -> None:
        if grace_us < 0:
            raise ValueError("grace_us must not be negative")
        self.grace_us = grace_us
        self._symbols: dict[tuple[str, str], _Symbol] = {}
        self._books: dict[tuple[str, str], BookTracker] = {}
        self.late = 0

    def _state(self, venue: str, symbol: str, bar_us: int) -> _Symbol:
        state = self._symbols.get((venue, symbol))
        if state is None:
            state = self._symbols[(venue, symbol)] = _Symbol(venue, symbol, next_close=bar_us)
        return state

    def on_message(self, message: MarketData) -> list[FeatureBar]:
        """Fold one message in; the bars it closed, oldest first."""
        if not isinstance(message, Trade):
            return self.on_book(message)
        row = trade_row(message)
        state = self._state(row.venue, row.symbol, bar_of(row.ts_us))
        acc = state.bar(bar_of(row.ts_us))
        if acc is None:
            self.late += 1
            return []
        acc.trades += 1
        if row.buy:
            acc.buy_qty += row.qty
        else:
            acc.sell_qty += row.qty
        acc.notional += row.notional
        key = (row.ts_us, row.trade_id)
        if acc.close_key is None or key >= acc.close_key:
            acc.close, acc.close_key = row.price, key
        state.watermark_us = max(state.watermark_us, row.ts_us)
        return state.close_ready(self.grace_us)

    def on_book(self, message: BookSnapshot | BookDelta) -> list[FeatureBar]:
        """Fold one book message in; the bars it closed."""
        tracker = self._books.setdefault((message.venue, message.symbol), BookTracker())
        book = tracker.apply(message)
        if book is None:
            return []  # a one-sided book is no state (the batch input holds none either)
        state = self._state(book.venue, book.symbol, bar_of(book.ts_us))
        e = ofi_contribution(state.previous_book, book)
        state.previous_book = book
        acc = state.bar(bar_of(book.ts_us))
        if acc is None:
            self.late += 1
            return []
        acc.ofi += e
        acc.book = book
        state.watermark_us = max(state.watermark_us, book.ts_us)
        return state.close_ready(self.grace_us)

    def checkpoint(self, venue: str, symbol: str) -> Checkpoint:
        """A copy of one symbol's state (bars and book), for `restore` when what followed is undone."""
        key = (venue, symbol)
        return copy.deepcopy((self._symbols.get(key), self._books.get(key))), self.late

    def restore(self, venue: str, symbol: str, checkpoint: Checkpoint) -> None:
        """Put back one symbol's state as `checkpoint` saw it."""
        key = (venue, symbol)
        (state, book), self.late = checkpoint
        self._symbols.pop(key, None)
        self._books.pop(key, None)
        if state is not None:
            self._symbols[key] = state
        if book is not None:
            self._books[key] = book

    def flush(self) -> list[FeatureBar]:
        """Close every open bar (end of input)."""
        return [bar for state in self._symbols.values() for bar in state.close_all()]
