"""The backtest engine: recorded market data and candles, replayed in time order through the paper venue's domain.

Every symbol has its own `shared.domain.matching.MatchingEngine`, driven the way the paper venue drives it
(`on_book_snapshot`, `on_book_update`, `on_trade`, `submit`, `cancel`); fills are charged by the account's fee
schedule at its rolling 30-day volume (`shared.domain.fees`) and settled in a `shared.domain.ledger.Ledger`;
pre-trade limits are `shared.domain.risk_limits.check_order`.

Time: every input is an event with a timestamp; the streams (one per file or symbol) are merged with a heap, so
events of all symbols come in time order. A strategy is called for an event at its timestamp and never sees a
later one. An order it submits reaches the book after a seeded random latency (`Latency`) and sees only the
market from its arrival on. At equal times: order arrivals first, then bar ends, then market data.

Candles: a bar [s, e) is replayed for the matching engine as a book around its open at s, prints at its two
extremes and its close inside the bar (low first when it closed up, high first when it closed down), then a book
around its close; the strategy sees the bar at e. While a symbol has no order resting, waiting or in flight and no
consumed liquidity, those synthetic events cannot change anything but the book, so they are skipped and the last
book is applied only when an order arrives (the same result, much faster).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.backtest.bars import (
    MICROSECOND,
    BacktestInputError,
    Bar,
    BarBuilder,
    check_continuity,
    from_us,
    to_us,
)
from shared.backtest.scenarios import Control, FeeChange, VenueRejects, Window
from shared.backtest.strategy import Fill, OrderUpdate, Strategy
from shared.domain.book import MarketDataError, OrderBook
from shared.domain.bracket_model import (
    Bracket,
    BracketError,
    BracketEvent,
    BracketInput,
    CancelExit,
    Decision,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitOutcome,
    ExitPolicy,
    PriceTick,
    SubmitExit,
)
from shared.domain.brackets import open_bracket, step
from shared.domain.fees import FEE_VOLUME_WINDOW, AccountFeeSchedules
from shared.domain.ledger import (
    InsufficientBalance,
    Ledger,
    LedgerError,
    required_reservation,
    walked_reservation,
)
from shared.domain.matching import ExecutionReport, MatchingEngine, ReportKind
from shared.domain.money import InstrumentSpec
from shared.domain.order_requests import LIMIT_PRICED_TYPES
from shared.domain.risk_limits import Exposure, OrderToCheck, RiskLimits, check_order
from shared.domain.sim_orders import SimOrder
from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderId,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
)
from shared.marketdata import BookDelta, BookSnapshot, MarketData, Trade
from shared.venues.base import VenueOrderRequest, VenueRejected
from shared.venues.paper_settlement import validate_request

ZERO = Decimal(0)

# Priorities at equal timestamps.
_ARRIVAL, _BAR_END, _MARKET = 0, 1, 2
# Event kinds.
(
    _SUBMIT,
    _CANCEL,
    _NOTICE,
    _TRADE,
    _SNAPSHOT,
    _DELTA,
    _BAR_BODY,
    _BAR_BOOK,
    _BAR_PRINT,
    _BAR_DELIVER,
    _BUILT_BAR,
    _CONTROL,
) = range(12)
# How an exit order's end reads to its bracket.
_EXIT_OUTCOMES = {
    "rejected": ExitOutcome.REJECTED,
    "denied": ExitOutcome.DENIED,
    "canceled": ExitOutcome.CANCELED,
    "expired": ExitOutcome.EXPIRED,
}

Event = tuple[int, int, int, int, int, Any]  # (time us, priority, stream, number, kind, payload)


@dataclass(frozen=True, slots=True)
class Latency:
    """Submit/cancel delay: `base` plus a uniform draw in [0, `jitter`], from the run's seeded generator."""

    base: timedelta = timedelta(milliseconds=50)
    jitter: timedelta = timedelta(milliseconds=50)

    def __post_init__(self) -> None:
        if self.base < timedelta(0) or self.jitter < timedelta(0):
            raise BacktestInputError("latency: base and jitter must not be negative")


@dataclass(frozen=True, slots=True)
class BarBook:
    """How a bar becomes a book for the matching engine: `half_spread_ticks` around the price, one level per side
    of the bar's volume (at least `min_depth`)."""

    half_spread_ticks: int = 1
    min_depth: Decimal = Decimal(1)


@dataclass(frozen=True)
class BacktestConfig:
    """Everything a run depends on besides its data and its strategy (same config + data + seed: same result)."""

    specs: Mapping[str, InstrumentSpec]
    initial_balances: Mapping[str, Decimal]
    seed: int = 0
    latency: Latency = field(default_factory=Latency)
    fees: AccountFeeSchedules = field(default_factory=AccountFeeSchedules)
    limits: RiskLimits | None = None
    account_id: str = "backtest"
    bar_interval: timedelta | None = None  # build bars of this length from trade prints (for on_bar)
    bar_book: BarBook = field(default_factory=BarBook)
    sample_every: timedelta = timedelta(minutes=1)  # equity curve resolution (0: after every event)
    max_gap: timedelta = timedelta(minutes=10)  # a longer hole in a stream is an error, never bridged
    exits: ExitPolicy | None = None  # mandatory exit brackets on every entry (the risk service's domain code)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order of the run as it ended."""

    order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    submitted_at: datetime
    status: str
    filled: Decimal
    reason: str | None


@dataclass(frozen=True, slots=True)
class Sample:
    """The account at one instant: equity in quote, position and mark price per symbol (in `symbols` order)."""

    at: datetime
    equity: Decimal
    positions: tuple[Decimal, ...]
    prices: tuple[Decimal | None, ...]


@dataclass(frozen=True, slots=True)
class RunNote:
    """Something a stress report looks at: a bracket decision, a fee change, the venue refusing or back."""

    at: datetime
    kind: str
    details: Mapping[str, str | None]


@dataclass(frozen=True)
class BacktestRun:
    """What a run produced; `shared.backtest.results` turns it into metrics and reports."""

    strategy: str
    params: Mapping[str, Decimal]
    seed: int
    quote: str
    symbols: tuple[str, ...]
    initial_equity: Decimal
    fills: tuple[Fill, ...]
    orders: tuple[OrderRecord, ...]
    samples: tuple[Sample, ...]
    events: int
    rejected_market_data: int
    started_at: datetime | None
    ended_at: datetime | None
    notes: tuple[RunNote, ...] = ()


class _Refused(Exception):
    """An order the venue refuses before it reaches the book; the message is the reason code."""


@dataclass(slots=True)
class _Order:
    order: SimOrder
    symbol: str
    submitted_at: datetime
    status: str = "submitted"
    filled: Decimal = ZERO
    reason: str | None = None
    bracket: str | None = None  # the bracket an exit order belongs to (the strategy is not told of it)


class _Context:
    """The backtester's `StrategyContext`."""

    def __init__(self, engine: BacktestEngine) -> None:
        self._engine = engine

    @property
    def now(self) -> datetime:
        return from_us(self._engine.now_us)

    def submit(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        *,
        type: OrderType = OrderType.MARKET,
        limit_price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
    ) -> str:
        return self._engine.submit(
            symbol, SimOrder("", side, type, quantity, limit_price, trigger_price, time_in_force, post_only)
        )

    def cancel(self, order_id: str) -> None:
        self._engine.cancel(order_id)

    def position(self, symbol: str) -> Decimal:
        spec = self._engine.spec(symbol)
        return self._engine.ledger.balance(Asset(spec.base)).total

    def balance(self, asset: str) -> Decimal:
        return self._engine.ledger.balance(Asset(asset)).total

    def book(self, symbol: str) -> OrderBook | None:
        market = self._engine.markets.get(symbol)
        return None if market is None or market.book.updated_at is None else market.book


class BacktestEngine:
    """One run of one strategy over merged event streams; `run` once per instance."""

    def __init__(self, config: BacktestConfig, strategy: Strategy) -> None:
        self.config = config
        self.strategy = strategy
        self.ctx = _Context(self)
        quotes = {spec.quote for spec in config.specs.values()}
        if len(quotes) != 1:
            raise BacktestInputError(f"specs: every instrument must share one quote asset, got {sorted(quotes)}")
        self.quote = quotes.pop()
        self.account = AccountId(config.account_id)
        self.schedule = config.fees.for_account(self.account)
        ledger = Ledger(self.account)
        for asset, amount in sorted(config.initial_balances.items()):
            if amount > 0:
                ledger = ledger.deposit(Asset(asset), amount, "initial").ledger
        self.ledger = ledger
        self.markets: dict[str, MatchingEngine] = {}
        self.now_us = 0
        self._rng = random.Random(config.seed)  # noqa: S311  # seeded latency draws, not a secret
        self._heap: list[Event] = []
        self._arrivals = 0
        self._orders: dict[str, _Order] = {}
        self._order_numbers = 0
        self._fills: list[Fill] = []
        self._volume: deque[tuple[int, Decimal]] = deque()
        self._volume_sum = ZERO
        self._lazy_books: dict[str, tuple[int, Decimal, Decimal]] = {}  # symbol -> (time, price, depth)
        self._prices: dict[str, Decimal] = {}
        self._builders: dict[str, BarBuilder] = {}
        self._symbols: tuple[str, ...] = ()
        self._bases: tuple[Asset, ...] = ()
        self._samples: list[tuple[int, Decimal, tuple[Decimal, ...], tuple[Decimal | None, ...]]] = []
        self._next_sample = 0
        self._min_depth = config.bar_book.min_depth
        self._held_of: Ledger | None = None  # the ledger `_quote_held` and `_held` were read from
        self._quote_held = ZERO
        self._held: tuple[Decimal, ...] = ()
        self._sample_us = config.sample_every // MICROSECOND
        self._day = -1
        self._realized_at_day_start = ZERO
        self._events = 0
        self._bad_market_data = 0
        self._venue_down: str | None = None
        self._notes: list[RunNote] = []
        self._brackets: dict[str, Bracket] = {}  # by entry order id
        self._watched: dict[str, list[str]] = {}  # symbol -> ids of its open brackets (empty dict: none at all)

    # --- set-up ---------------------------------------------------------------------------------------------

    def spec(self, symbol: str) -> InstrumentSpec:
        """The instrument rules of `symbol`; `BacktestInputError` for an instrument the run has no rules for."""
        spec = self.config.specs.get(symbol)
        if spec is None:
            raise BacktestInputError(f"symbol {symbol!r}: no instrument spec (known: {', '.join(self.config.specs)})")
        return spec

    def _market(self, symbol: str) -> MatchingEngine:
        market = self.markets.get(symbol)
        if market is None:
            self.spec(symbol)
            market = self.markets[symbol] = MatchingEngine(symbol)
        return market

    # --- strategy commands ----------------------------------------------------------------------------------

    def submit(self, symbol: str, order: SimOrder, *, bracket: str | None = None) -> str:
        """Give the order an id (an exit keeps its bracket's), check the limits now, and send it after the latency."""
        spec = self.spec(symbol)
        if bracket is None:
            self._order_numbers += 1
            order_id = f"{self.strategy.name}-{self._order_numbers}"
        else:
            order_id = order.order_id
        order = SimOrder(
            order_id,
            order.side,
            order.type,
            order.quantity,
            order.limit_price,
            order.trigger_price,
            order.time_in_force,
            order.post_only,
        )
        now = from_us(self.now_us)
        self._orders[order_id] = _Order(order, symbol, now, bracket=bracket)
        violation = self._limit_violation(
            symbol, spec, order, has_exits=bracket is None and self.config.exits is not None
        )
        if violation is not None:
            self._push(self.now_us, _NOTICE, (order_id, "denied", violation))
        else:
            self._push(self.now_us + self._delay(), _SUBMIT, order_id)
        return order_id

    def cancel(self, order_id: str) -> None:
        """Send a cancel that arrives after the latency."""
        self._push(self.now_us + self._delay(), _CANCEL, order_id)

    def _delay(self) -> int:
        latency = self.config.latency
        base = latency.base // MICROSECOND
        jitter = latency.jitter // MICROSECOND
        return base + (self._rng.randint(0, jitter) if jitter else 0)

    def _push(self, at_us: int, kind: int, payload: object) -> None:
        self._arrivals += 1
        heapq.heappush(self._heap, (at_us, _ARRIVAL, -1, self._arrivals, kind, payload))

    def _limit_violation(
        self, symbol: str, spec: InstrumentSpec, order: SimOrder, *, has_exits: bool = False
    ) -> str | None:
        limits = self.config.limits
        if limits is None:
            return None
        held = self.ledger.balance(Asset(spec.base)).total
        mid = self._market(symbol).book.mid
        price = mid or self._prices.get(symbol) or ZERO
        open_orders = [o for o in self._orders.values() if o.status in ("submitted", "accepted", "triggered")]
        open_buys = sum((o.order.quantity - o.filled for o in open_orders if o.order.side is OrderSide.BUY), ZERO)
        exposure = Exposure(mid, held, (held + open_buys) * price, len(open_orders) - 1, self._loss_today())
        checked = OrderToCheck(symbol, order.side, order.quantity, order.limit_price, has_exits=has_exits)
        violation = check_order(limits, checked, exposure)
        return None if violation is None else violation.code

    def _loss_today(self) -> Decimal:
        day = self.now_us // 86_400_000_000
        realized = sum((p.realized_pnl for p in self.ledger.positions.values()), ZERO)
        if day != self._day:
            self._day, self._realized_at_day_start = day, realized
        return max(self._realized_at_day_start - realized, ZERO)

    # --- the run --------------------------------------------------------------------------------------------

    def run(
        self,
        streams: Sequence[Sequence[MarketData] | Sequence[Bar]],
        *,
        bar_interval: timedelta | None = None,
        progress: Callable[[int], None] | None = None,
        controls: Sequence[Control] = (),
        declared_gaps: Sequence[Window] = (),
    ) -> BacktestRun:
        """Replay the streams (each in time order; bars need `bar_interval`) and return what happened.

        `controls` (a scenario's fee change or venue refusal) are carried out at their times; a hole covering one of
        `declared_gaps` (a scenario's feed outage) is accepted by the gap check, any other hole is still an error.
        """
        gaps = tuple((w.start, w.end) for w in declared_gaps)
        iterators: list[Iterator[Event]] = []
        symbols: set[str] = set()
        first: int | None = None
        last = 0
        for index, stream in enumerate(streams):
            if not stream:
                raise BacktestInputError(f"stream {index}: no data in the requested range")
            head = stream[0]
            if isinstance(head, Bar):
                bars = [b for b in stream if isinstance(b, Bar)]
                if bar_interval is None:
                    raise BacktestInputError("bars need their interval")
                for symbol in sorted({b.symbol for b in bars}):
                    own = [b for b in bars if b.symbol == symbol]
                    check_continuity(f"{symbol} bars", [b.start for b in own], bar_interval, gaps)
                    iterators.append(self._bar_events(len(iterators), own))
                    last = max(last, to_us(own[-1].end))
                    symbols.add(symbol)
                    start = to_us(own[0].start)
                    first = start if first is None else min(first, start)
            else:
                messages: list[MarketData] = [m for m in stream if not isinstance(m, Bar)]
                for symbol in sorted({m.symbol for m in messages}):
                    mine = [m for m in messages if m.symbol == symbol]
                    check_continuity(f"{symbol} market data", [m.timestamp for m in mine], self.config.max_gap, gaps)
                    iterators.append(self._market_events(len(iterators), mine))
                    last = max(last, to_us(mine[-1].timestamp))
                    symbols.add(symbol)
                    start = to_us(mine[0].timestamp)
                    first = start if first is None else min(first, start)
        for symbol in sorted(symbols):
            self._market(symbol)
        self._symbols = tuple(sorted(symbols))
        self._bases = tuple(Asset(self.config.specs[symbol].base) for symbol in self._symbols)
        self.now_us = first or 0
        self._next_sample = self.now_us
        self.strategy.on_start(self.ctx)
        self._sample(self.now_us)
        initial_equity = self._samples[0][1]
        self._schedule(controls)
        for number, iterator in enumerate(iterators):
            event = next(iterator, None)
            if event is not None:
                heapq.heappush(self._heap, (*event[:5], (event[5], number)))
        self._merge(iterators, progress, last)
        self._sample(self.now_us, force=True)
        return BacktestRun(
            strategy=self.strategy.name,
            params=dict(self.strategy.values),
            seed=self.config.seed,
            quote=self.quote,
            symbols=self._symbols,
            initial_equity=initial_equity,
            fills=tuple(self._fills),
            orders=tuple(
                OrderRecord(
                    o.order.order_id,
                    o.symbol,
                    o.order.side,
                    o.order.type,
                    o.order.quantity,
                    o.order.limit_price,
                    o.submitted_at,
                    o.status,
                    o.filled,
                    o.reason,
                )
                for o in self._orders.values()
            ),
            samples=tuple(Sample(from_us(at), equity, held, prices) for at, equity, held, prices in self._samples),
            events=self._events,
            rejected_market_data=self._bad_market_data,
            started_at=None if first is None else from_us(first),
            ended_at=from_us(self.now_us),
            notes=tuple(self._notes),
        )

    def _schedule(self, controls: Sequence[Control]) -> None:
        for control in controls:
            if isinstance(control, FeeChange):
                self._push(to_us(control.at), _CONTROL, control)
            else:
                self._push(to_us(control.window.start), _CONTROL, control)
                self._push(to_us(control.window.end), _CONTROL, None)

    def _merge(self, iterators: list[Iterator[Event]], progress: Callable[[int], None] | None, last: int) -> None:
        """Pop events in time order until the data ends (orders and bar ends due later are not carried out)."""
        heap = self._heap
        handle = self._handle
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= last:
            event = pop(heap)
            stream = event[2]
            if stream < 0:
                self.now_us = event[0]
                handle(event[4], event[5])
                continue
            payload, number = event[5]
            iterator = iterators[number]
            while True:
                self.now_us = event[0]
                handle(event[4], payload)
                self._events += 1
                if progress is not None and self._events % 10_000 == 0:
                    progress(self._events)
                following = next(iterator, None)
                if following is None:
                    break
                if heap and following >= heap[0]:
                    push(heap, (*following[:5], (following[5], number)))
                    break
                event, payload = following, following[5]

    # --- streams --------------------------------------------------------------------------------------------

    @staticmethod
    def _market_events(stream: int, messages: Sequence[MarketData]) -> Iterator[Event]:
        for number, message in enumerate(messages):
            kind = _TRADE if isinstance(message, Trade) else _SNAPSHOT if isinstance(message, BookSnapshot) else _DELTA
            yield (to_us(message.timestamp), _MARKET, stream, number, kind, message)

    @staticmethod
    def _bar_events(stream: int, bars: Sequence[Bar]) -> Iterator[Event]:
        for number, bar in enumerate(bars):
            start = to_us(bar.start)
            end = start + (bar.end - bar.start) // MICROSECOND
            yield (start, _MARKET, stream, 2 * number, _BAR_BODY, (bar, end))
            yield (end, _BAR_END, stream, 2 * number + 1, _BAR_DELIVER, bar)

    def _bar_body(self, payload: tuple[Bar, int]) -> None:
        """A bar's synthetic book and prints; at once (only the closing book kept) when nothing can happen inside."""
        bar, end = payload
        start = self.now_us
        step = (end - start) // 4
        min_depth = self._min_depth
        depth = bar.volume if bar.volume >= min_depth else min_depth  # max(), first of equals
        market = self.markets[bar.symbol]
        closing = start + 3 * step
        idle = not (market.has_orders or market.has_consumption or bar.symbol in self._watched)
        if idle and (not self._heap or self._heap[0][0] > closing):
            self._lazy_books[bar.symbol] = (closing, bar.close, depth)
            return
        first, second = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
        self._handle(_BAR_BOOK, (bar.symbol, bar.open, depth))
        inside: tuple[tuple[int, int, tuple[object, ...]], ...] = (
            (step, _BAR_PRINT, (bar.symbol, first, depth, bar.open)),
            (2 * step, _BAR_PRINT, (bar.symbol, second, depth, first)),
            (3 * step, _BAR_PRINT, (bar.symbol, bar.close, depth, second)),
            (3 * step, _BAR_BOOK, (bar.symbol, bar.close, depth)),
        )
        for offset, kind, event in inside:
            self._arrivals += 1
            heapq.heappush(self._heap, (start + offset, _MARKET, -1, self._arrivals, kind, event))

    # --- event handling -------------------------------------------------------------------------------------

    def _handle(self, kind: int, payload: Any) -> None:  # noqa: C901  # one flat dispatch: the hot loop
        if kind == _BAR_BODY:
            self._bar_body(payload)
        elif kind == _BAR_DELIVER:
            bar: Bar = payload
            self._prices[bar.symbol] = bar.close
            self.strategy.on_bar(self.ctx, bar)
        elif kind == _BAR_PRINT:
            symbol, price, depth, previous = payload
            market = self.markets[symbol]
            if market.has_orders:
                self._flush_book(symbol, market)
                aggressor = OrderSide.BUY if price >= previous else OrderSide.SELL
                self._settle(symbol, market.on_trade(price, depth, aggressor, from_us(self.now_us)))
            if symbol in self._watched:
                # An exit fired by this print meets a book around the print, not the bar's opening book.
                self._lazy_books[symbol] = (self.now_us, price, depth)
                self._tick(symbol, price)
        elif kind == _BAR_BOOK:
            symbol, price, depth = payload
            self._lazy_books[symbol] = (self.now_us, price, depth)
            market = self.markets[symbol]
            if market.has_orders or market.has_consumption:
                self._flush_book(symbol, market)
        elif kind == _TRADE:
            self._on_trade(payload)
        elif kind in (_SNAPSHOT, _DELTA):
            self._on_book(payload)
        elif kind == _SUBMIT:
            self._arrive(payload)
        elif kind == _CANCEL:
            self._arrive_cancel(payload)
        elif kind == _NOTICE:
            order_id, status, reason = payload
            self._close(self._orders[order_id], status, reason)
        elif kind == _BUILT_BAR:
            self._close_built_bar(payload)
        elif kind == _CONTROL:
            self._control(payload)
        if self.now_us >= self._next_sample:
            self._sample(self.now_us)

    def _flush_book(self, symbol: str, market: MatchingEngine) -> None:
        lazy = self._lazy_books.pop(symbol, None)
        if lazy is None:
            return
        at, price, depth = lazy
        half = self.spec(symbol).price_increment * self.config.bar_book.half_spread_ticks
        bids = [(price - half, depth)] if price > half else []
        self._settle(symbol, market.on_book_snapshot(bids, [(price + half, depth)], from_us(at)))

    def _on_trade(self, trade: Trade) -> None:
        market = self.markets[trade.symbol]
        self._flush_book(trade.symbol, market)
        self._prices[trade.symbol] = trade.price
        self._settle(trade.symbol, market.on_trade(trade.price, trade.qty, trade.side, trade.timestamp))
        if self._watched:
            self._tick(trade.symbol, trade.price)
        if self.config.bar_interval is not None:
            self._build_bar(trade)
        self.strategy.on_trade(self.ctx, trade)

    def _on_book(self, message: BookSnapshot | BookDelta) -> None:
        market = self.markets[message.symbol]
        self._flush_book(message.symbol, market)
        bids = [(level.price, level.qty) for level in message.bids]
        asks = [(level.price, level.qty) for level in message.asks]
        try:
            if isinstance(message, BookSnapshot):
                reports = market.on_book_snapshot(bids, asks, message.timestamp)
            elif market.book.updated_at is None:
                return  # deltas wait for a first snapshot, as in the paper venue
            else:
                reports = market.on_book_update(bids, asks, message.timestamp)
        except MarketDataError:
            self._bad_market_data += 1  # a crossed snapshot or a bad level: the book is kept, as in the paper venue
            return
        mid = market.book.mid
        if mid is not None:
            self._prices[message.symbol] = mid
        self._settle(message.symbol, reports)
        if self._watched:
            best_bid = market.book.best_bid
            if best_bid is not None:
                self._tick(message.symbol, best_bid)
        self.strategy.on_book(self.ctx, market.book)

    # --- bars built from prints -----------------------------------------------------------------------------

    def _build_bar(self, trade: Trade) -> None:
        builder = self._builders.get(trade.symbol)
        if builder is None:
            interval = self.config.bar_interval or timedelta(0)
            builder = self._builders[trade.symbol] = BarBuilder(trade.symbol, interval // MICROSECOND)
        if builder.add(self.now_us, trade.price, trade.qty):
            self._push(builder.start + builder.interval_us, _BUILT_BAR, (trade.symbol, builder.start))

    def _close_built_bar(self, payload: tuple[str, int]) -> None:
        symbol, start = payload
        builder = self._builders.get(symbol)
        bar = None if builder is None else builder.close_bar(start)
        if bar is not None:
            self.strategy.on_bar(self.ctx, bar)

    # --- orders ---------------------------------------------------------------------------------------------

    def _arrive(self, order_id: str) -> None:
        record = self._orders[order_id]
        symbol, order = record.symbol, record.order
        market = self.markets[symbol]
        self._flush_book(symbol, market)
        now = from_us(self.now_us)
        spec = self.spec(symbol)
        request = VenueOrderRequest(
            self.account,
            ClientOrderId(order_id),
            Symbol(symbol),
            order.side,
            order.type,
            order.quantity,
            order.limit_price,
            order.trigger_price,
            order.time_in_force,
            order.post_only,
        )
        if self._venue_down is not None:
            self._close(record, "rejected", self._venue_down)
            return
        try:
            validate_request(request, spec)  # the paper venue's own checks: lot, tick, minimums, price fields
        except VenueRejected as exc:
            self._close(record, "rejected", exc.code)
            return
        try:
            asset, amount = self._reservation(market, spec, order)
            self.ledger = self.ledger.reserve(OrderId(order_id), asset, amount).ledger
        except InsufficientBalance:
            self._close(record, "rejected", "insufficient_funds")
            return
        except _Refused as exc:
            self._close(record, "rejected", str(exc))
            return
        except (LedgerError, ValueError) as exc:
            self._close(record, "rejected", getattr(exc, "code", None) or "invalid_order")
            return
        self._settle(symbol, market.submit(order, now))

    def _reservation(self, market: MatchingEngine, spec: InstrumentSpec, order: SimOrder) -> tuple[Asset, Decimal]:
        if order.side is OrderSide.SELL:
            return Asset(spec.base), order.quantity
        rate = self.schedule.rate(Liquidity.TAKER, self._volume_30d())
        if order.type is OrderType.MARKET:
            if market.book.updated_at is None:
                raise _Refused("no_market_data")
            levels = market.free_levels(OrderSide.BUY)
            if not levels:
                raise _Refused("no_liquidity")
            return Asset(spec.quote), walked_reservation(levels, order.quantity, rate, spec).amount
        price = order.limit_price if order.type in LIMIT_PRICED_TYPES else order.trigger_price
        if price is None:
            raise _Refused("invalid_price")
        return Asset(spec.quote), required_reservation(OrderSide.BUY, order.quantity, price, rate, spec).amount

    def _arrive_cancel(self, order_id: str) -> None:
        record = self._orders.get(order_id)
        if record is not None and record.status == "submitted":
            # The cancel overtook its order (latency jitter): the venue does not know the order yet.
            self._tell(record, "cancel_rejected", None, "unknown_order")
            return
        if record is None or record.status not in ("accepted", "triggered"):
            return
        if self._venue_down is not None:
            self._tell(record, "cancel_rejected", None, self._venue_down)
            return
        market = self.markets[record.symbol]
        self._flush_book(record.symbol, market)
        self._settle(record.symbol, market.cancel(order_id, from_us(self.now_us)))

    def _volume_30d(self) -> Decimal:
        horizon = self.now_us - FEE_VOLUME_WINDOW // MICROSECOND
        while self._volume and self._volume[0][0] <= horizon:
            self._volume_sum -= self._volume.popleft()[1]
        return self._volume_sum

    def _settle(self, symbol: str, reports: Iterable[ExecutionReport]) -> None:
        for report in reports:
            record = self._orders.get(report.order_id)
            if record is None:
                continue
            if report.kind is ReportKind.FILL:
                self._fill(symbol, record, report)
            elif report.kind is ReportKind.ACCEPTED:
                record.status = "accepted"
                self._tell(record, "accepted", report.leaves, None)
                if record.bracket is not None:
                    self._bracket_step(record.bracket, ExitAccepted(record.order.order_id))
            elif report.kind is ReportKind.TRIGGERED:
                record.status = "triggered"
                self._tell(record, "triggered", report.leaves, None)
            elif report.kind is ReportKind.REJECTED:
                self._close(record, "rejected", report.reason)
            else:
                self._close(record, "canceled", report.reason)

    def _fill(self, symbol: str, record: _Order, report: ExecutionReport) -> None:
        quantity, price, liquidity = report.quantity, report.price, report.liquidity
        if quantity is None or price is None or liquidity is None:
            raise ValueError(f"fill report without quantity, price or liquidity: {report}")
        spec = self.spec(symbol)
        cost = spec.trade_cost(quantity, price)
        fee = self.schedule.fee(cost, liquidity, self._volume_30d(), spec.quote_step)
        order = record.order
        try:
            self.ledger = self.ledger.apply_fill(
                OrderId(order.order_id),
                order.side,
                Symbol(symbol),
                Asset(spec.base),
                Asset(spec.quote),
                quantity,
                price,
                fee,
                quote_step=spec.quote_step,
            ).ledger
        except InsufficientBalance:
            # As the paper venue: a fill the account cannot pay is refused and the order ends.
            self.markets[symbol].cancel(order.order_id, report.at)
            self._close(record, "canceled", "insufficient_funds")
            return
        self._volume.append((self.now_us, cost))
        self._volume_sum += cost
        record.filled += quantity
        fill = Fill(
            order.order_id, report.trade_id or "", symbol, order.side, quantity, price, fee, liquidity, report.at
        )
        self._fills.append(fill)
        if record.bracket is not None:
            self._bracket_step(record.bracket, ExitFilled(order.order_id, quantity, price))
        else:
            self.strategy.on_fill(self.ctx, fill)
            if self.config.exits is not None and order.side is OrderSide.BUY:
                self._entry_filled(symbol, order.order_id, quantity, price)
        if report.leaves == 0:
            self._close(record, "filled", None)

    def _close(self, record: _Order, status: str, reason: str | None) -> None:
        record.status, record.reason = status, reason
        self.ledger = self.ledger.release(OrderId(record.order.order_id)).ledger
        self._tell(record, status, None, reason)

    def _tell(self, record: _Order, status: str, leaves: Decimal | None, reason: str | None) -> None:
        if record.bracket is not None:
            outcome = _EXIT_OUTCOMES.get(status)
            if outcome is not None:
                self._bracket_step(record.bracket, ExitEnded(record.order.order_id, outcome))
            return
        update = OrderUpdate(record.order.order_id, record.symbol, status, from_us(self.now_us), leaves, reason)
        self.strategy.on_order(self.ctx, update)

    # --- scenario controls ----------------------------------------------------------------------------------

    def _control(self, control: FeeChange | VenueRejects | None) -> None:
        now = from_us(self.now_us)
        if isinstance(control, FeeChange):
            self.schedule = control.schedule
            tier = control.schedule.tiers[0]
            rates = {"maker_rate": str(tier.maker_rate), "taker_rate": str(tier.taker_rate)}
            self._notes.append(RunNote(now, "fee_change", rates))
        elif isinstance(control, VenueRejects):
            self._venue_down = control.reason
            self._notes.append(RunNote(now, "venue_down", {"reason": control.reason}))
        else:
            self._venue_down = None
            self._notes.append(RunNote(now, "venue_up", {}))

    # --- exit brackets (shared.domain.brackets, as the risk service runs them) ------------------------------

    def _entry_filled(self, symbol: str, order_id: str, quantity: Decimal, price: Decimal) -> None:
        if order_id in self._brackets:
            self._bracket_step(order_id, EntryFilled(quantity, price))
            return
        policy = self.config.exits
        if policy is None:
            return
        increment = self.spec(symbol).price_increment
        try:
            opened = open_bracket(
                bracket_id=order_id,
                account_id=self.config.account_id,
                symbol=symbol,
                entry_order_id=order_id,
                levels=policy.levels_for(price, increment),
                from_policy=True,
                swap_band_pct=policy.swap_band_pct,
                price_increment=increment,
                fill=EntryFilled(quantity, price),
                now=from_us(self.now_us),
            )
        except BracketError as exc:
            self._notes.append(
                RunNote(from_us(self.now_us), "BracketRefused", {"bracket_id": order_id, "why": str(exc)})
            )
            return
        self._brackets[order_id] = opened.bracket
        self._watched.setdefault(symbol, []).append(order_id)
        self._decide(opened.bracket, opened.decisions)

    def _tick(self, symbol: str, price: Decimal) -> None:
        for bracket_id in tuple(self._watched.get(symbol, ())):
            self._bracket_step(bracket_id, PriceTick(price))

    def _bracket_step(self, bracket_id: str, event: BracketInput) -> None:
        result = step(self._brackets[bracket_id], event, from_us(self.now_us))
        self._brackets[bracket_id] = result.bracket
        self._decide(result.bracket, result.decisions)

    def _decide(self, bracket: Bracket, decisions: Iterable[Decision]) -> None:
        now = from_us(self.now_us)
        for decision in decisions:
            if isinstance(decision, SubmitExit):
                limit = decision.limit_price
                order = SimOrder(
                    decision.client_order_id,
                    OrderSide.SELL,
                    OrderType.MARKET if limit is None else OrderType.LIMIT,
                    decision.quantity,
                    limit,
                )
                self.submit(decision.symbol, order, bracket=bracket.bracket_id)
            elif isinstance(decision, CancelExit):
                self.cancel(decision.client_order_id)
            if isinstance(decision, BracketEvent | SubmitExit):
                log = decision.to_log()
                self._notes.append(RunNote(now, log["decision"] or "", log))
        if not bracket.is_open:
            watched = self._watched.get(bracket.symbol, [])
            if bracket.bracket_id in watched:
                watched.remove(bracket.bracket_id)
                if not watched:
                    del self._watched[bracket.symbol]

    # --- equity ---------------------------------------------------------------------------------------------

    def _sample(self, at_us: int, *, force: bool = False) -> None:
        if not force and at_us < self._next_sample:
            return
        ledger = self.ledger
        if ledger is not self._held_of:  # balances change only with a new ledger: read them once per ledger
            balances = ledger.balances
            quote = balances.get(Asset(self.quote))
            self._quote_held = ZERO if quote is None else quote.total
            found = (balances.get(base) for base in self._bases)
            self._held = tuple(ZERO if balance is None else balance.total for balance in found)
            self._held_of = ledger
        equity = self._quote_held
        prices = tuple(self._prices.get(symbol) for symbol in self._symbols)
        for held, price in zip(self._held, prices, strict=True):
            if held and price is not None:
                equity += held * price
        self._samples.append((at_us, equity, self._held, prices))
        every = self._sample_us
        self._next_sample = at_us - at_us % every + every if every else at_us
