"""The nautilus_trader peer of bench/backtest.py: the same EMA cross on the same files, in nautilus' BacktestEngine.

Runs under Python 3.12+ in a bench-only venv (nautilus_trader needs 3.12; the platform is 3.11), started by
bench/backtest.py as a subprocess. It imports nothing from Aether. Install (done by bench/backtest.py on first use):

    python3.12 -m venv ~/.cache/aether-bench/venv312
    ~/.cache/aether-bench/venv312/bin/pip install 'nautilus_trader==1.231.*'

    python bench/backtest_nautilus.py bars BARS.csv      # start,symbol,open,high,low,close,volume (1-minute bars)
    python bench/backtest_nautilus.py ticks REPLAY.csv   # timestamp,kind,symbol,side,price,qty,trade_id

`bars`: BarDataWrangler -> Bars of BTC/USD.KRAKEN-1-MINUTE-LAST-EXTERNAL stamped at their end (when a bar is known),
an L1 venue with bar execution. `ticks`: every trade row -> TradeTick, every group of book rows -> OrderBookDepth10
(the file's snapshots have at most 10 levels a side), one stream in file order, an L2 venue; the strategy subscribes
to the trades and the depth (as Aether's strategy receives every event) and to 1-MINUTE-LAST-INTERNAL bars that
nautilus aggregates from the trades. The strategy: nautilus' own ExponentialMovingAverage(fast) and (slow) on bar
closes, a market buy of `size` on a golden cross when flat and a market sell of the position on a death cross,
after `slow` bars of warm-up (Aether's `EmaCross` rule). Prints one JSON line: seconds (load + run), cpu_seconds,
load_seconds, events, orders, fills.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.currencies import BTC, USD
from nautilus_trader.model.data import Bar, BarType, BookOrder, OrderBookDepth10, TradeTick
from nautilus_trader.model.enums import AccountType, AggressorSide, BookType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, TraderId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.trading.strategy import Strategy

VENUE = Venue("KRAKEN")
INSTRUMENT_ID = InstrumentId(Symbol("BTC/USD"), VENUE)
PRICE_PRECISION, SIZE_PRECISION = 1, 8
MINUTE_NS = 60_000_000_000


class EmaCrossConfig(StrategyConfig, frozen=True):
    """Parameters of the peer strategy."""

    bar_type: BarType
    fast: int = 12
    slow: int = 26
    size: Decimal = Decimal("0.01")
    ticks: bool = False


class EmaCross(Strategy):
    """Aether's EmaCross rule with nautilus' EMA indicator."""

    def __init__(self, config: EmaCrossConfig) -> None:
        super().__init__(config)
        self.fast = ExponentialMovingAverage(config.fast)
        self.slow = ExponentialMovingAverage(config.slow)
        self.bars = 0
        self.was_above = False
        self.orders = 0
        self.fills = 0

    def on_start(self) -> None:
        self.register_indicator_for_bars(self.config.bar_type, self.fast)
        self.register_indicator_for_bars(self.config.bar_type, self.slow)
        self.subscribe_bars(self.config.bar_type)
        if self.config.ticks:
            self.subscribe_trade_ticks(INSTRUMENT_ID)
            self.subscribe_order_book_depth(INSTRUMENT_ID)

    def on_trade_tick(self, tick: TradeTick) -> None:
        pass

    def on_order_book_depth(self, depth: OrderBookDepth10) -> None:
        pass

    def on_order_filled(self, event: Any) -> None:
        self.fills += 1

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1
        above = self.fast.value > self.slow.value
        was_above, self.was_above = self.was_above, above
        if self.bars <= self.config.slow or above == was_above:
            return
        flat = self.portfolio.is_flat(INSTRUMENT_ID)
        if above and flat:
            self._market(OrderSide.BUY, Quantity(self.config.size, SIZE_PRECISION))
        elif not above and not flat:
            held = self.portfolio.net_position(INSTRUMENT_ID)
            self._market(OrderSide.SELL, Quantity(held, SIZE_PRECISION))

    def _market(self, side: OrderSide, quantity: Quantity) -> None:
        self.submit_order(self.order_factory.market(INSTRUMENT_ID, side, quantity))
        self.orders += 1


def instrument() -> CurrencyPair:
    """BTC/USD at Kraken's precision (tick 0.1, lot 1e-8) and its starter fees (0.25 % maker, 0.40 % taker)."""
    return CurrencyPair(
        instrument_id=INSTRUMENT_ID,
        raw_symbol=Symbol("BTC/USD"),
        base_currency=BTC,
        quote_currency=USD,
        price_precision=PRICE_PRECISION,
        size_precision=SIZE_PRECISION,
        price_increment=Price.from_str("0.1"),
        size_increment=Quantity.from_str("0.00000001"),
        lot_size=None,
        max_quantity=Quantity.from_str("10000"),
        min_quantity=Quantity.from_str("0.0001"),
        max_notional=None,
        min_notional=None,
        max_price=Price.from_str("10000000"),
        min_price=Price.from_str("0.1"),
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=Decimal("0.0025"),
        taker_fee=Decimal("0.004"),
        ts_event=0,
        ts_init=0,
    )


def _ns(text: str) -> int:
    at = datetime.fromisoformat(text)
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1_000


def load_bars(path: Path, bar_type: BarType, pair: CurrencyPair) -> list[Bar]:
    """The bar file as nautilus Bars stamped at each bar's end."""
    frame = pd.read_csv(path)
    frame.index = pd.to_datetime(frame.pop("start"), utc=True) + pd.Timedelta(minutes=1)
    frame = frame[["open", "high", "low", "close", "volume"]]
    return BarDataWrangler(bar_type, pair).process(frame)


def load_ticks(path: Path) -> list[Any]:
    """The replay file as TradeTicks and OrderBookDepth10s, in file order."""
    data: list[Any] = []
    group: tuple[str, str] | None = None
    bids: list[BookOrder] = []
    asks: list[BookOrder] = []

    def flush() -> None:
        if group is not None:
            at = _ns(group[0])
            data.append(
                OrderBookDepth10(
                    INSTRUMENT_ID, bids[:], asks[:], [1] * len(bids), [1] * len(asks), 0, len(data), at, at
                )
            )
            bids.clear()
            asks.clear()

    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for timestamp, kind, _symbol, side, price, qty, trade_id in reader:
            if kind == "trade":
                flush()
                group = None
                at = _ns(timestamp)
                aggressor = AggressorSide.BUYER if side == "buy" else AggressorSide.SELLER
                data.append(
                    TradeTick(
                        INSTRUMENT_ID,
                        Price(float(price), PRICE_PRECISION),
                        Quantity(float(qty), SIZE_PRECISION),
                        aggressor,
                        TradeId(trade_id),
                        at,
                        at,
                    )
                )
            elif kind == "book":
                if group != (timestamp, kind):
                    flush()
                    group = (timestamp, kind)
                book_side = OrderSide.BUY if side == "bid" else OrderSide.SELL
                levels = bids if side == "bid" else asks
                levels.append(
                    BookOrder(book_side, Price(float(price), PRICE_PRECISION), Quantity(float(qty), SIZE_PRECISION), 0)
                )
            else:
                raise SystemExit(f"{path}: this peer reads trades and book snapshots, not {kind!r} rows")
    flush()
    return data


def run(mode: str, path: Path) -> dict[str, Any]:
    """Load and run one scenario; the figures as a dict."""
    began, cpu = time.perf_counter(), time.process_time()
    pair = instrument()
    source = "EXTERNAL" if mode == "bars" else "INTERNAL"
    bar_type = BarType.from_str(f"{INSTRUMENT_ID}-1-MINUTE-LAST-{source}")
    data = load_bars(path, bar_type, pair) if mode == "bars" else load_ticks(path)
    loaded = time.perf_counter() - began
    engine = BacktestEngine(BacktestEngineConfig(trader_id=TraderId("BENCH-001"), logging=LoggingConfig("ERROR")))
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        starting_balances=[Money(1_000_000, USD), Money(0, BTC)],
        book_type=BookType.L1_MBP if mode == "bars" else BookType.L2_MBP,
    )
    engine.add_instrument(pair)
    engine.add_data(data)
    strategy = EmaCross(EmaCrossConfig(bar_type=bar_type, ticks=mode == "ticks"))
    engine.add_strategy(strategy)
    engine.run()
    figures = {
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu,
        "load_seconds": loaded,
        "events": len(data),
        "bars_seen": strategy.bars,
        "orders": strategy.orders,
        "fills": strategy.fills,
        "version": __import__("nautilus_trader").__version__,
    }
    engine.dispose()
    return figures


def main() -> None:
    """`bars PATH` or `ticks PATH`: one JSON line of figures."""
    if len(sys.argv) != 3 or sys.argv[1] not in ("bars", "ticks"):
        raise SystemExit("usage: backtest_nautilus.py bars|ticks PATH")
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]))))


if __name__ == "__main__":
    main()
