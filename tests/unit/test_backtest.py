"""The backtester: hand-computed PnL/fees/drawdown, no look-ahead, determinism, bad input, EMA cross end to end."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aether.backtest_cli import app
from data.replay.source import load_file
from shared.backtest.bars import BacktestInputError, Bar, parse_bar, write_bars
from shared.backtest.engine import BacktestConfig, BacktestEngine, BacktestRun, Latency
from shared.backtest.results import max_drawdown, metrics, to_json
from shared.backtest.strategies import make_strategy
from shared.backtest.strategies.ema_cross import EmaCross
from shared.backtest.strategy import Fill, Strategy, StrategyContext
from shared.domain.book import OrderBook
from shared.domain.risk_limits import RiskLimits
from shared.domain.types import OrderSide, OrderType
from shared.marketdata import BookSnapshot, Level, MarketData, Trade
from shared.venues.instruments import venue_precision

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "btc_usd_sample.csv"
SYMBOL = "BTC/USD"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPECS = venue_precision("kraken").specs()
NO_LATENCY = Latency(timedelta(0), timedelta(0))


def _book(second: float, bid: str, ask: str, qty: str = "10") -> BookSnapshot:
    return BookSnapshot(
        venue="replay",
        symbol=SYMBOL,
        bids=[Level(price=Decimal(bid), qty=Decimal(qty))],
        asks=[Level(price=Decimal(ask), qty=Decimal(qty))],
        timestamp=T0 + timedelta(seconds=second),
        sequence=int(second * 10),
    )


def _trade(second: float, price: str, qty: str = "0.5", side: str = "buy") -> Trade:
    return Trade(
        venue="replay",
        symbol=SYMBOL,
        trade_id=f"T{second}",
        price=Decimal(price),
        qty=Decimal(qty),
        side=OrderSide(side),
        timestamp=T0 + timedelta(seconds=second),
    )


def _config(**overrides: object) -> BacktestConfig:
    values: dict[str, object] = {
        "specs": SPECS,
        "initial_balances": {"USD": Decimal(10_000)},
        "latency": NO_LATENCY,
        "sample_every": timedelta(0),
    }
    values.update(overrides)
    return BacktestConfig(**values)  # type: ignore[arg-type]


class Scripted(Strategy):
    """Submits market orders of the scripted (side, quantity) on the n-th book event."""

    name = "scripted"

    def __init__(self, script: dict[int, tuple[OrderSide, str]]) -> None:
        super().__init__()
        self.script = script
        self.books = 0

    def on_book(self, ctx: StrategyContext, book: OrderBook) -> None:
        action = self.script.get(self.books)
        self.books += 1
        if action is not None:
            ctx.submit(book.symbol, action[0], Decimal(action[1]))


def test_three_trades_give_the_hand_computed_pnl_fees_and_drawdown() -> None:
    data: list[MarketData] = [
        _book(0, "1000.0", "1001.0"),
        _book(1, "1100.0", "1101.0"),
        _book(2, "1049.9", "1050.1"),
        _book(3, "999.9", "1000.1"),
    ]
    strategy = Scripted({0: (OrderSide.BUY, "1"), 1: (OrderSide.SELL, "1"), 2: (OrderSide.BUY, "2")})
    run = BacktestEngine(_config(), strategy).run([data])

    # Taker fills at the touch; Kraken's entry tier charges 0.40 % taker, rounded to USD's 0.0001.
    assert [(f.side, f.quantity, f.price, f.fee) for f in run.fills] == [
        (OrderSide.BUY, Decimal(1), Decimal("1001.0"), Decimal("4.0040")),
        (OrderSide.SELL, Decimal(1), Decimal("1100.0"), Decimal("4.4000")),
        (OrderSide.BUY, Decimal(2), Decimal("1050.1"), Decimal("8.4008")),
    ]
    figures = metrics(run)
    # USD: 10000 - 1001 - 4.004 + 1100 - 4.4 - 2100.2 - 8.4008 = 7981.9952; 2 BTC marked at mid 1000.0.
    assert Decimal(figures["final_equity"]) == Decimal("9981.9952")
    assert Decimal(figures["pnl"]) == Decimal("-18.0048")
    assert Decimal(figures["fees"]) == Decimal("16.8048")
    # Peak after the sell at mid 1100.5 with 1 BTC: 8994.996 + 1100.5 = 10095.496; trough at the end.
    assert Decimal(figures["max_drawdown"]) == Decimal("113.5008")
    assert figures["max_drawdown_fraction"] == pytest.approx(113.5008 / 10095.496)
    assert Decimal(figures["traded_notional"]) == Decimal("4201.2")


def test_max_drawdown_is_peak_to_trough() -> None:
    series = [Decimal(v) for v in ("100", "120", "90", "130", "110", "125")]
    assert max_drawdown(series).amount == Decimal(30)
    assert max_drawdown([Decimal(1), Decimal(2)]).amount == 0


class Probe(Strategy):
    """Records every price it can see and when; buys a little on every print."""

    name = "probe"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[datetime, Decimal]] = []
        self.fills: list[Fill] = []

    def _look(self, ctx: StrategyContext) -> None:
        book = ctx.book(SYMBOL)
        if book is not None and book.best_ask is not None and book.best_bid is not None:
            self.seen += [(ctx.now, book.best_ask), (ctx.now, book.best_bid)]

    def on_book(self, ctx: StrategyContext, book: OrderBook) -> None:
        self._look(ctx)

    def on_trade(self, ctx: StrategyContext, trade: Trade) -> None:
        assert trade.timestamp <= ctx.now
        self.seen.append((ctx.now, trade.price))
        self._look(ctx)
        ctx.submit(SYMBOL, OrderSide.BUY, Decimal("0.001"))

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        assert bar.end <= ctx.now
        self.seen += [(ctx.now, bar.high), (ctx.now, bar.close)]

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        self.fills.append(fill)


def test_a_planted_future_price_is_never_seen_or_traded_before_its_time() -> None:
    planted_at = T0 + timedelta(seconds=10)
    data: list[MarketData] = [_book(0, "1000.0", "1001.0")]
    data += [_trade(second + 0.5, "1000.0") for second in range(10)]
    data += [_trade(10, "5000.0"), _book(10, "4999.0", "5001.0"), _trade(10.5, "5000.0")]
    probe = Probe()
    config = _config(latency=Latency(timedelta(milliseconds=200), timedelta(0)), bar_interval=timedelta(seconds=5))
    run = BacktestEngine(config, probe).run([data])

    assert [price for at, price in probe.seen if at < planted_at] != []
    assert all(price < 2000 for at, price in probe.seen if at < planted_at)
    assert any(price == Decimal("5000.0") for at, price in probe.seen if at >= planted_at)  # the probe can see it
    before = [f for f in run.fills if f.at < planted_at]
    assert len(before) == 10
    assert {f.price for f in before} == {Decimal("1001.0")}
    # The order sent on the print at 9.5 s arrives at 9.7 s: the 5000 book of 10 s is not there yet.
    assert max(f.at for f in before) == T0 + timedelta(seconds=9.7)


def _market_maker_run(seed: int) -> BacktestRun:
    config = _config(
        seed=seed,
        latency=Latency(timedelta(milliseconds=20), timedelta(milliseconds=400)),
        initial_balances={"USD": Decimal(100_000), "BTC": Decimal(1)},
    )
    strategy = make_strategy("market_maker", {"spread_bps": "2", "requote_bps": "1", "max_position": "2"})
    return BacktestEngine(config, strategy).run([load_file(SAMPLE)])


def test_the_same_seed_gives_the_same_run_and_the_seed_drives_the_latency() -> None:
    first, again, other = _market_maker_run(7), _market_maker_run(7), _market_maker_run(8)
    assert first.fills, "the market maker must trade on the sample for this test to mean anything"
    assert json.dumps(to_json(first)) == json.dumps(to_json(again))
    assert json.dumps(to_json(first)) != json.dumps(to_json(other))


def _bars(count: int, seed: int, *, skip: int | None = None) -> list[Bar]:
    rng = random.Random(seed)
    price, bars = 60_000.0, []
    for index in range(count):
        start = price
        price *= 1 + rng.gauss(0, 0.001)
        high = max(start, price) * (1 + abs(rng.gauss(0, 0.0003)))
        low = min(start, price) * (1 - abs(rng.gauss(0, 0.0003)))
        open_, high_, low_, close = (Decimal(str(round(value, 1))) for value in (start, high, low, price))
        if index != skip:
            at = T0 + timedelta(minutes=index)
            bars.append(Bar(SYMBOL, at, at + timedelta(minutes=1), open_, high_, low_, close, Decimal(2)))
    return bars


class EmaWithIdleQuote(EmaCross):
    """EMA cross plus one far-away resting bid: the engine must then drive every synthetic bar event."""

    name = "ema_idle_quote"

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        if ctx.balance("USD") and not getattr(self, "_quoted", False):
            self._quoted = True
            ctx.submit(SYMBOL, OrderSide.BUY, Decimal("0.001"), type=OrderType.LIMIT, limit_price=Decimal(1000))
        super().on_bar(ctx, bar)


def test_skipping_idle_bar_events_changes_no_fill() -> None:
    bars = _bars(3000, seed=3)
    config = _config(initial_balances={"USD": Decimal(100_000)}, sample_every=timedelta(minutes=1))
    fast = BacktestEngine(config, EmaCross()).run([bars], bar_interval=timedelta(minutes=1))
    driven = BacktestEngine(config, EmaWithIdleQuote()).run([bars], bar_interval=timedelta(minutes=1))
    assert len(fast.fills) > 20
    assert [(f.side, f.price, f.fee, f.at) for f in fast.fills] == [
        (f.side, f.price, f.fee, f.at) for f in driven.fills if f.order_id != "ema_idle_quote-1"
    ]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown strategy 'nope'"),
        ("ema_cross", {"fast": "1"}, "parameter fast=1 is outside its range [2, 500]"),
        ("ema_cross", {"fast": "2.5"}, "parameter fast=2.5 must be an integer"),
        ("ema_cross", {"speed": "3"}, "unknown parameter 'speed'"),
        ("ema_cross", {"fast": "x"}, "parameter fast='x' is not a number"),
        ("ema_cross", {"fast": "30", "slow": "20"}, "fast=30 must be below slow=20"),
    ],
)
def test_bad_strategy_input_is_named(name: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(BacktestInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_strategy(name, params)


def test_a_gap_is_reported_not_bridged() -> None:
    bars = _bars(50, seed=1, skip=20)
    with pytest.raises(BacktestInputError, match="BTC/USD bars: gap from 2026-01-01T00:19:00"):
        BacktestEngine(_config(), EmaCross()).run([bars], bar_interval=timedelta(minutes=1))
    ticks: list[MarketData] = [_book(0, "1000.0", "1001.0"), _trade(1, "1000.0"), _trade(900, "1000.0")]
    with pytest.raises(BacktestInputError, match="BTC/USD market data: gap from 2026-01-01T00:00:01"):
        BacktestEngine(_config(max_gap=timedelta(minutes=10)), EmaCross()).run([ticks])
    with pytest.raises(BacktestInputError, match="no data in the requested range"):
        BacktestEngine(_config(), EmaCross()).run([[]])


def test_cli_errors_name_the_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["run", "--from-file", str(SAMPLE), "--out", str(tmp_path)]
    cases = [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "ema_cross", "--param", "fast=9999"], "fast=9999 is outside its range"),
        (["--strategy", "ema_cross", "--start", "2027-01-01T00:00:00Z"], "no data in the requested range"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    bars = tmp_path / "bars.csv"
    write_bars(_bars(30, seed=2, skip=10), bars)
    result = runner.invoke(app, ["run", "--strategy", "ema_cross", "--bars-file", str(bars), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "gap from 2026-01-01T00:09:00" in " ".join(result.output.split())


def test_ema_cross_on_the_sample_end_to_end(tmp_path: Path) -> None:
    args = ["run", "--strategy", "ema_cross", "--param", "fast=2", "--param", "slow=3", "--bar-seconds", "1"]
    result = CliRunner().invoke(app, [*args, "--from-file", str(SAMPLE), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    report = (tmp_path / "out" / "report.html").read_text()
    figures, trades = data["metrics"], data["trades"]
    assert figures["fills"] == len(trades) > 0
    for trade in trades:  # taker at 0.40 %, to USD's precision
        cost = Decimal(trade["quantity"]) * Decimal(trade["price"])
        assert Decimal(trade["fee"]) == (cost * Decimal("0.004")).quantize(Decimal("0.0001"))
    assert Decimal(figures["final_equity"]) - Decimal(figures["initial_equity"]) == Decimal(figures["pnl"])
    assert sum(Decimal(t["fee"]) for t in trades) == Decimal(figures["fees"])
    assert report.count("<svg") == 4
    assert "Fills on price BTC/USD" in report
    assert "ema_cross-1" in report


def test_orders_the_paper_venue_would_refuse_are_refused() -> None:
    class Sloppy(Strategy):
        name = "sloppy"

        def on_book(self, ctx: StrategyContext, book: OrderBook) -> None:
            if book.symbol != SYMBOL:
                return
            ctx.submit(SYMBOL, OrderSide.BUY, Decimal("0.000000001"))  # below Kraken's BTC/USD lot
            ctx.submit(SYMBOL, OrderSide.BUY, Decimal("0.01"), type=OrderType.LIMIT, limit_price=Decimal("999.95"))
            ctx.submit(SYMBOL, OrderSide.BUY, Decimal("100"))  # costs more than the account holds
            ctx.submit("ETH/USD", OrderSide.BUY, Decimal("1"))  # no ETH/USD book yet

    streams: list[list[MarketData]] = [[_book(0, "1000.0", "1001.0")]]
    streams.append([_book(5, "3000.00", "3001.00").model_copy(update={"symbol": "ETH/USD"})])
    run = BacktestEngine(_config(), Sloppy()).run(streams)
    assert [(o.status, o.reason) for o in run.orders] == [
        ("rejected", "invalid_quantity"),
        ("rejected", "invalid_price"),
        ("rejected", "insufficient_funds"),
        ("rejected", "no_market_data"),
    ]
    assert run.fills == ()


def test_pre_trade_limits_deny_before_the_order_leaves() -> None:
    data: list[MarketData] = [_book(0, "1000.0", "1001.0"), _book(1, "1100.0", "1101.0"), _book(2, "1049.9", "1050.1")]
    strategy = Scripted({0: (OrderSide.BUY, "1"), 1: (OrderSide.SELL, "1"), 2: (OrderSide.BUY, "2")})
    run = BacktestEngine(_config(limits=RiskLimits(max_order_notional=Decimal(1500))), strategy).run([data])
    assert [(o.status, o.reason) for o in run.orders] == [
        ("filled", None),
        ("filled", None),
        ("denied", "max_order_notional"),  # 2 x mid 1050.0 = 2100 > 1500
    ]
    assert len(run.fills) == 2


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["2026-01-01T00:00:00", SYMBOL, "10", "12", "9", "11", "1"], "start needs a UTC offset"),
        (["2026-01-01T00:00:00Z", SYMBOL, "10", "12", "9", "11", "x"], "volume is not a decimal: 'x'"),
        (["2026-01-01T00:00:00Z", SYMBOL, "10", "Infinity", "9", "11", "1"], "high must be a finite"),
        (["2026-01-01T00:00:00Z", SYMBOL, "10", "12", "9", "13", "1"], "need low <= open, close <= high"),
        (["2026-01-01T00:00:00Z", "", "10", "12", "9", "11", "1"], "symbol is empty"),
    ],
)
def test_a_bad_bar_row_is_named(row: list[str], message: str) -> None:
    with pytest.raises(BacktestInputError, match=f"bars.csv:7: {message}"):
        parse_bar("bars.csv:7", row, timedelta(minutes=1))
