"""Streaming engine: market-data messages in, one `FeatureBar` per closed bar out (same definitions as the batch).

A bar closes when a message of a later bar arrives for its symbol (bars in between close empty) or on `flush`.
A message older than the open bar is late: counted in `late` and left out (the batch engine over the stored
range includes it; a recompute of that range replaces the streamed rows).
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


@dataclass(frozen=True, slots=True)
class FeatureBar:
    """The features of one closed bar."""

    venue: str
    symbol: str
    bar_us: int
    values: dict[str, float | None]


@dataclass(slots=True)
class _Symbol:
    venue: str
    symbol: str
    bar_us: int
    tracker: BookTracker = field(default_factory=BookTracker)
    history: deque[dict[str, float | int | None]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    book: BookRow | None = None
    trades: int = 0
    buy_qty: int = 0
    sell_qty: int = 0
    notional: int = 0
    close: float | None = None
    close_key: tuple[int, str] | None = None
    ofi: int = 0

    def close_bar(self) -> FeatureBar:
        book = self.book
        inputs: dict[str, float | int | None] = {
            "trades": self.trades,
            "buy_qty": self.buy_qty,
            "sell_qty": self.sell_qty,
            "notional": self.notional,
            "close": self.close,
            "bid": book.bid if book else None,
            "ask": book.ask if book else None,
            "bid_depth": book.bid_depth if book else None,
            "ask_depth": book.ask_depth if book else None,
            "ofi": self.ofi,
        }
        self.history.appendleft(inputs)
        bar = FeatureBar(self.venue, self.symbol, self.bar_us, evaluate(list(self.history)))
        self.bar_us += BAR_US
        self.trades = self.buy_qty = self.sell_qty = self.notional = self.ofi = 0
        self.close = self.close_key = None
        return bar


class FeatureStream:
    """Incremental features of every (venue, symbol) seen."""

    def __init__(self) -> None:
        self._symbols: dict[tuple[str, str], _Symbol] = {}
        self.late = 0

    def _advance(self, venue: str, symbol: str, bar_us: int, out: list[FeatureBar]) -> _Symbol | None:
        state = self._symbols.get((venue, symbol))
        if state is None:
            state = self._symbols[(venue, symbol)] = _Symbol(venue, symbol, bar_us)
        if bar_us < state.bar_us:
            self.late += 1
            return None
        while state.bar_us < bar_us:
            out.append(state.close_bar())
        return state

    def on_message(self, message: MarketData) -> list[FeatureBar]:
        """Fold one message in; the bars it closed, oldest first."""
        out: list[FeatureBar] = []
        if isinstance(message, Trade):
            row = trade_row(message)
            state = self._advance(row.venue, row.symbol, bar_of(row.ts_us), out)
            if state is not None:
                state.trades += 1
                if row.buy:
                    state.buy_qty += row.qty
                else:
                    state.sell_qty += row.qty
                state.notional += row.notional
                key = (row.ts_us, row.trade_id)
                if state.close_key is None or key >= state.close_key:
                    state.close, state.close_key = row.price, key
            return out
        return self.on_book(message)

    def on_book(self, message: BookSnapshot | BookDelta) -> list[FeatureBar]:
        """Fold one book message in; the bars it closed."""
        out: list[FeatureBar] = []
        key = (message.venue, message.symbol)
        tracker = self._symbols[key].tracker if key in self._symbols else BookTracker()
        book = tracker.apply(message)
        if book is None:
            return out  # a one-sided book is no state (the batch input holds none either)
        state = self._advance(book.venue, book.symbol, bar_of(book.ts_us), out)
        if state is None:
            return out
        state.tracker = tracker
        state.ofi += ofi_contribution(state.book, book)
        state.book = book
        return out

    def checkpoint(self, venue: str, symbol: str) -> tuple[_Symbol | None, int]:
        """A copy of one symbol's state, for `restore` when what followed is undone."""
        return copy.deepcopy(self._symbols.get((venue, symbol))), self.late

    def restore(self, venue: str, symbol: str, checkpoint: tuple[_Symbol | None, int]) -> None:
        """Put back one symbol's state as `checkpoint` saw it."""
        state, self.late = checkpoint
        if state is None:
            self._symbols.pop((venue, symbol), None)
        else:
            self._symbols[(venue, symbol)] = state

    def flush(self) -> list[FeatureBar]:
        """Close every open bar (end of input)."""
        return [state.close_bar() for state in self._symbols.values()]
