"""Issue 15: exit brackets in the backtester (the risk service's domain code), stress scenarios, the stress report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aether.backtest_cli import app
from shared.backtest.bars import BacktestInputError, Bar, write_bars
from shared.backtest.engine import BacktestConfig, BacktestEngine, Latency
from shared.backtest.results import metrics
from shared.backtest.scenarios import SCENARIOS, VENUE_DOWN, Stream, parse_scenario
from shared.backtest.strategy import Fill, OrderUpdate, Strategy, StrategyContext
from shared.backtest.stress import stress_report
from shared.domain.book import OrderBook
from shared.domain.bracket_model import ExitPolicy
from shared.domain.risk_limits import RiskLimits
from shared.domain.types import OrderSide
from shared.marketdata import BookDelta, BookSnapshot, Level, MarketData, Trade
from shared.venues.instruments import venue_precision

SYMBOL = "BTC/USD"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPECS = venue_precision("kraken").specs()
STOP_ONLY = ExitPolicy(
    stop_loss_pct=Decimal(2), take_profit_pct=Decimal(4), trailing_distance_pct=None, trailing_activation_pct=None
)


def _book(second: float, bid: str, ask: str, qty: str = "10") -> BookSnapshot:
    return BookSnapshot(
        venue="replay",
        symbol=SYMBOL,
        bids=[Level(price=Decimal(bid), qty=Decimal(qty))],
        asks=[Level(price=Decimal(ask), qty=Decimal(qty))],
        timestamp=T0 + timedelta(seconds=second),
        sequence=int(second),
    )


def _trade(second: float, price: str = "1000.0", qty: str = "0.5") -> Trade:
    return Trade(
        venue="replay",
        symbol=SYMBOL,
        trade_id=f"T{second}",
        price=Decimal(price),
        qty=Decimal(qty),
        side=OrderSide.BUY,
        timestamp=T0 + timedelta(seconds=second),
    )


def _flat(minutes: int = 40) -> list[MarketData]:
    """A book every 30 s and a print every 10 s at 1000, for `minutes`."""
    data: list[MarketData] = []
    for second in range(0, minutes * 60, 10):
        if second % 30 == 0:
            data.append(_book(second, "999.9", "1000.1"))
        data.append(_trade(second))
    return data


def _config(**overrides: object) -> BacktestConfig:
    values: dict[str, object] = {
        "specs": SPECS,
        "initial_balances": {"USD": Decimal(10_000)},
        "latency": Latency(timedelta(0), timedelta(0)),
        "sample_every": timedelta(0),
    }
    values.update(overrides)
    return BacktestConfig(**values)  # type: ignore[arg-type]


class Scripted(Strategy):
    """Buys the scripted quantity on the n-th book event; records what it is told."""

    name = "scripted"

    def __init__(self, script: dict[int, str]) -> None:
        super().__init__()
        self.script = script
        self.books = 0
        self.told: list[OrderUpdate] = []
        self.fills: list[Fill] = []

    def on_book(self, ctx: StrategyContext, book: OrderBook) -> None:
        quantity = self.script.get(self.books)
        self.books += 1
        if quantity is not None:
            ctx.submit(book.symbol, OrderSide.BUY, Decimal(quantity))

    def on_order(self, ctx: StrategyContext, update: OrderUpdate) -> None:
        self.told.append(update)

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        self.fills.append(fill)


class EveryMinute(Strategy):
    """Buys 0.01 on the first print of every minute."""

    name = "every_minute"

    def __init__(self) -> None:
        super().__init__()
        self.minute = -1

    def on_trade(self, ctx: StrategyContext, trade: Trade) -> None:
        minute = int((trade.timestamp - T0).total_seconds() // 60)
        if minute != self.minute:
            self.minute = minute
            ctx.submit(SYMBOL, OrderSide.BUY, Decimal("0.01"))


# --- brackets -------------------------------------------------------------------------------------------------


def test_positions_hit_their_stops_on_a_planted_path_and_exits_pass_a_breached_loss_limit() -> None:
    data: list[MarketData] = [
        _book(0, "1000.0", "1001.0"),  # entry A: buys 1 at 1001.0 -> stop 980.9 (2 % below, rounded down)
        _book(1, "990.0", "991.0"),  # entry B: buys 1 at 991.0 -> stop 971.1
        _book(2, "980.0", "980.2"),  # best bid 980.0 <= 980.9: A's stop fires; the market sell takes the bid
        _book(3, "970.0", "970.2"),  # B's stop fires, though A's realized loss broke the daily loss limit
        _book(4, "960.0", "960.2"),  # a new buy: denied by the daily loss limit
        _book(5, "900.0", "900.2"),  # planted far below: never an exit price
    ]
    strategy = Scripted({0: "1", 1: "1", 4: "1"})
    limits = RiskLimits(daily_loss_limit=Decimal(5))
    run = BacktestEngine(_config(exits=STOP_ONLY, limits=limits), strategy).run([data])

    # Kraken entry tier: 0.40 % taker on every fill, rounded to USD's 0.0001.
    assert [(f.side, f.price, f.fee) for f in run.fills] == [
        (OrderSide.BUY, Decimal("1001.0"), Decimal("4.0040")),
        (OrderSide.BUY, Decimal("991.0"), Decimal("3.9640")),
        (OrderSide.SELL, Decimal("980.0"), Decimal("3.9200")),
        (OrderSide.SELL, Decimal("970.0"), Decimal("3.8800")),
    ]
    # USD: 10000 - 1001 - 4.004 - 991 - 3.964 + 980 - 3.92 + 970 - 3.88 = 9942.232; no BTC left.
    figures = metrics(run)
    assert Decimal(figures["final_equity"]) == Decimal("9942.232")
    assert Decimal(figures["pnl"]) == Decimal("-57.768")
    triggered = [(n.details["leg"], n.details["price"]) for n in run.notes if n.kind == "ExitTriggered"]
    assert triggered == [("stop_loss", "980"), ("stop_loss", "970")]
    assert [(o.order_id.startswith("x-"), o.status, o.reason) for o in run.orders] == [
        (False, "filled", None),
        (False, "filled", None),
        (True, "filled", None),
        (True, "filled", None),
        (False, "denied", "daily_loss_limit"),
    ]
    # The strategy hears of its own orders only (exits are the bracket's), as with the live risk service.
    assert {u.order_id for u in strategy.told} == {"scripted-1", "scripted-2", "scripted-3"}
    assert [f.side for f in strategy.fills] == [OrderSide.BUY, OrderSide.BUY]


class BuyFirstBar(Strategy):
    """Buys 1 at the end of the first bar."""

    name = "buy_first_bar"

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        if bar.start == T0:
            ctx.submit(bar.symbol, OrderSide.BUY, Decimal(1))


def test_a_stop_inside_a_bar_fires_at_the_print_that_crossed_it() -> None:
    def bar(minute: int, o: str, h: str, low: str, c: str) -> Bar:
        start = T0 + timedelta(minutes=minute)
        return Bar(
            SYMBOL, start, start + timedelta(minutes=1), Decimal(o), Decimal(h), Decimal(low), Decimal(c), Decimal(5)
        )

    bars = [
        bar(0, "1000", "1000", "1000", "1000"),
        bar(1, "1000", "1001", "970", "975"),
        bar(2, "975", "975", "900", "900"),
    ]
    run = BacktestEngine(_config(exits=STOP_ONLY), BuyFirstBar()).run([bars], bar_interval=timedelta(minutes=1))
    # The buy arrives at 00:01 into the book around bar 0's close (ask 1000.1): stop 980.098 -> 980.0. Bar 1 closed
    # down, so it prints its high at 00:01:15 and its low 970 at 00:01:30: the stop fires there and the market sell
    # meets the book around that print (bid 969.9), never bar 2's planted 900.
    assert [(f.side, f.price, f.fee, f.at) for f in run.fills] == [
        (OrderSide.BUY, Decimal("1000.1"), Decimal("4.0004"), T0 + timedelta(minutes=1)),
        (OrderSide.SELL, Decimal("969.9"), Decimal("3.8796"), T0 + timedelta(minutes=1, seconds=30)),
    ]
    # USD: 10000 - 1000.1 - 4.0004 + 969.9 - 3.8796 = 9961.92
    assert Decimal(metrics(run)["pnl"]) == Decimal("-38.08")


def test_without_brackets_the_same_path_keeps_the_position() -> None:
    data: list[MarketData] = [_book(0, "1000.0", "1001.0"), _book(1, "980.0", "980.2"), _book(2, "900.0", "900.2")]
    run = BacktestEngine(_config(), Scripted({0: "1"})).run([data])
    assert [f.side for f in run.fills] == [OrderSide.BUY]
    assert run.samples[-1].positions == (Decimal(1),)


# --- scenarios ------------------------------------------------------------------------------------------------


def test_flash_crash_falls_30_percent_in_5_minutes_and_comes_back() -> None:
    stressed = SCENARIOS["flash_crash"].apply([_flat()], SPECS)
    prices = {m.timestamp - T0: m.price for m in stressed.streams[0] if isinstance(m, Trade)}
    assert prices[timedelta(minutes=9, seconds=50)] == Decimal("1000.0")
    assert prices[timedelta(minutes=12, seconds=30)] == Decimal("850.0")  # half way down
    assert prices[timedelta(minutes=15)] == Decimal("700.0")  # the bottom: -30 %
    assert prices[timedelta(minutes=17, seconds=30)] == Decimal("850.0")
    assert prices[timedelta(minutes=20)] == Decimal("1000.0")
    bottom = next(
        m for m in stressed.streams[0] if isinstance(m, BookSnapshot) and m.timestamp - T0 == timedelta(minutes=15)
    )
    assert (bottom.bids[0].price, bottom.asks[0].price) == (Decimal("699.9"), Decimal("700.1"))  # bids down, asks up
    assert stressed.window.start == T0 + timedelta(minutes=10)


def test_flash_crash_on_bars_moves_open_close_at_their_instants_and_low_to_the_bottom() -> None:
    flat = Decimal(1000)
    bars = [
        Bar(SYMBOL, T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1), flat, flat, flat, flat, Decimal(1))
        for i in range(40)
    ]
    [crashed] = SCENARIOS["flash_crash"].apply([bars], SPECS).streams
    ohlc = {
        (b.start - T0) // timedelta(minutes=1): (b.open, b.high, b.low, b.close) for b in crashed if isinstance(b, Bar)
    }
    assert ohlc[9] == (flat, flat, flat, flat)
    # Factor 1 - 0.30 x elapsed / 5 min: 0.88 at 00:12, 0.82 at 00:13, 0.70 at the bottom 00:15, back to 1 at 00:20.
    assert ohlc[12] == (Decimal("880.0"), Decimal("880.0"), Decimal("820.0"), Decimal("820.0"))
    assert ohlc[15] == (Decimal("700.0"), Decimal("760.0"), Decimal("700.0"), Decimal("760.0"))
    assert ohlc[20] == (flat, flat, flat, flat)


def test_book_scenarios_rewrite_deltas_as_snapshots_and_restore_the_true_book() -> None:
    data: list[MarketData] = [
        _book(0, "999.0", "1001.0"),
        BookDelta(
            venue="replay",
            symbol=SYMBOL,
            bids=[Level(price=Decimal("999.5"), qty=Decimal(4))],
            timestamp=T0 + timedelta(minutes=11),
            sequence=11,
        ),
        _trade(12 * 60),
        BookDelta(
            venue="replay",
            symbol=SYMBOL,
            bids=[Level(price=Decimal("999.5"), qty=Decimal(0))],
            timestamp=T0 + timedelta(minutes=30),
            sequence=30,
        ),
        _book(40 * 60, "999.0", "1001.0"),
    ]
    drought = SCENARIOS["liquidity_drought"].apply([data], SPECS, {"minutes": "15"}).streams[0]
    inside = drought[1]
    assert isinstance(inside, BookSnapshot)
    assert [(lv.price, lv.qty) for lv in inside.bids] == [
        (Decimal("999.5"), Decimal("0.4")),
        (Decimal("999.0"), Decimal(1)),
    ]
    assert isinstance(drought[3], BookSnapshot)  # the first book message after the window: the true book again
    assert [(lv.price, lv.qty) for lv in drought[3].bids] == [(Decimal("999.0"), Decimal(10))]
    assert next(m for m in drought if isinstance(m, Trade)).qty == Decimal("0.05")

    blown = SCENARIOS["spread_blowout"].apply([data], SPECS, {"factor": "10"}).streams[0][1]
    assert isinstance(blown, BookSnapshot)
    # mid (999.5 + 1001.0) / 2 = 1000.25; distances x10: bid 1000.25 - 7.5 = 992.75 -> 992.7, ask 1000.25 + 7.5 -> 1007.8
    assert (blown.bids[0].price, blown.asks[0].price) == (Decimal("992.7"), Decimal("1007.8"))


def _apply(text: str, data: list[Stream]) -> None:
    scenario, given = parse_scenario(text)
    scenario.apply(data, SPECS, given)


@pytest.mark.parametrize(
    ("text", "streams", "message"),
    [
        ("liquidity_drought", "bars", "does not apply: it changes the order book \\(bars only\\)"),
        ("spread_blowout", "trades", "does not apply: it changes the order book \\(no order book inside the window\\)"),
        ("flash_crash:start_min=38", "flat", "lies outside the recorded range"),
        ("feed_outage:start_min=100000", "flat", "lies outside the recorded range"),
        ("flash_crash:depth_pct=120", "flat", "flash_crash: parameter depth_pct=120 is outside its range \\[1, 95\\]"),
        ("flash_crash:speed=2", "flat", "flash_crash: unknown parameter 'speed'"),
        ("meteor", "flat", "unknown scenario 'meteor'"),
    ],
)
def test_a_scenario_that_does_not_apply_says_why(text: str, streams: str, message: str) -> None:
    bars = [
        Bar(SYMBOL, T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1), *(Decimal(1000),) * 4, Decimal(1))
        for i in range(40)
    ]
    trades: list[MarketData] = [_trade(s) for s in range(0, 2400, 10)]
    choices: dict[str, list[Stream]] = {"bars": [bars], "trades": [trades], "flat": [_flat()]}
    data = choices[streams]
    with pytest.raises(BacktestInputError, match=message):
        _apply(text, data)


def test_feed_outage_is_the_one_declared_hole_and_another_hole_is_still_reported() -> None:
    stressed = SCENARIOS["feed_outage"].apply([_flat()], SPECS)
    assert not [m for m in stressed.streams[0] if not isinstance(m, Bar) and m.timestamp in stressed.window]
    with pytest.raises(BacktestInputError, match="gap from 2026-01-01T00:09:50"):
        BacktestEngine(_config(), Strategy()).run(stressed.streams)  # undeclared: an error, never bridged
    run = BacktestEngine(_config(), Strategy()).run(stressed.streams, declared_gaps=stressed.declared_gaps)
    assert run.events == len(stressed.streams[0])
    holed = [m for m in _flat(60) if not timedelta(minutes=30) <= m.timestamp - T0 < timedelta(minutes=41)]
    twice = SCENARIOS["feed_outage"].apply([holed], SPECS)
    with pytest.raises(BacktestInputError, match="gap from 2026-01-01T00:29:50"):
        BacktestEngine(_config(), Strategy()).run(twice.streams, declared_gaps=twice.declared_gaps)


def test_venue_rejects_and_fee_tier_change_act_at_their_times() -> None:
    stressed = SCENARIOS["venue_rejects"].apply([_flat()], SPECS, {"start_min": "5", "minutes": "10"})
    run = BacktestEngine(_config(), EveryMinute()).run(stressed.streams, controls=stressed.controls)
    refused = [o.submitted_at.minute for o in run.orders if o.reason == VENUE_DOWN]
    assert refused == list(range(5, 15))
    assert len(run.fills) == len(run.orders) - 10
    report = stress_report(run, stressed)
    assert report["venue_rejected"] == {f"{VENUE_DOWN}:inside": 10}

    fees = SCENARIOS["fee_tier_change"].apply([_flat()], SPECS, {"start_min": "20", "taker_pct": "1"})
    run = BacktestEngine(_config(), EveryMinute()).run(fees.streams, controls=fees.controls)
    # 0.01 BTC at the ask 1000.1 = 10.001 USD: 0.40 % before minute 20, 1 % from then on.
    assert {(f.at.minute >= 20, f.fee) for f in run.fills} == {(False, Decimal("0.0400")), (True, Decimal("0.1000"))}
    assert stress_report(run, fees)["fee_changes"][0]["taker_rate"] == "0.01"


def test_the_stress_report_shows_exits_hedge_target_and_kill_switch_under_a_flash_crash() -> None:
    stressed = SCENARIOS["flash_crash"].apply([_flat()], SPECS)
    plain = BacktestEngine(_config(), Scripted({0: "9.5"})).run(stressed.streams)
    guarded = BacktestEngine(_config(exits=STOP_ONLY), Scripted({0: "9.5"})).run(stressed.streams)

    unguarded_report = stress_report(plain, stressed)
    assert unguarded_report["exits"]["triggered"] == {}
    # 9.5 BTC through a -30 % crash: drawdown ~28 %, every recommendation level raised inside the window.
    raised = [
        (t["level"], t["phase"]) for t in unguarded_report["kill_switch"]["transitions"] if t["action"] == "raised"
    ]
    assert raised == [("pause", "inside"), ("reduce_only", "inside"), ("flatten", "inside")]
    hedge = unguarded_report["hedge"]
    assert Decimal(hedge["max_target_by_phase"]["inside"]) > Decimal(hedge["max_target_by_phase"]["before"])

    report = stress_report(guarded, stressed)
    assert report["exits"]["triggered"] == {"stop_loss:inside": 1}
    assert report["exits"]["filled"] == {"stop_loss:inside": 1}
    assert report["kill_switch"]["highest_level"] is None  # the stop kept the drawdown under 5 %
    assert Decimal(report["hedge"]["max_target"]) < Decimal(hedge["max_target"])
    assert guarded.samples[-1].positions == (Decimal(0),)


def test_cli_runs_a_scenario_with_brackets_and_names_one_that_does_not_apply(tmp_path: Path) -> None:
    bars = [
        Bar(SYMBOL, T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1), *(Decimal(1000),) * 4, Decimal(5))
        for i in range(60)
    ]
    path = tmp_path / "bars.csv"
    write_bars(bars, path)
    runner = CliRunner()
    common = ["run", "--strategy", "ema_cross", "--bars-file", str(path), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*common, "--scenario", "flash_crash:depth_pct=40,start_min=20", "--exits", ""])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["stress"]["scenario"]["params"]["depth_pct"] == "40"
    assert data["stress"]["scenario"]["window"]["start"] == "2026-01-01T00:20:00+00:00"
    assert "<h2>Stress</h2>" in (tmp_path / "out" / "report.html").read_text()

    refused = runner.invoke(app, [*common, "--scenario", "liquidity_drought"])
    assert refused.exit_code == 2
    assert "liquidity_drought does not apply" in refused.output
    listed = runner.invoke(app, ["scenarios"])
    assert listed.exit_code == 0
    assert "flash_crash: prices fall" in listed.output
    assert "depth_pct=30 [1, 95]" in listed.output
    bad = runner.invoke(app, [*common, "--exits", "stop_loss_pct=200"])
    assert bad.exit_code == 2
    assert "stop_loss_pct=200 must be a percentage" in bad.output
