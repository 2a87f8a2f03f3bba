"""Benchmark: the EMA-cross strategy on one year of 1-minute bars, Aether's backtester against backtrader, in one run.

Data: `--days` (default 365) of seeded 1-minute BTC/USD bars (a random walk), written once to a bar CSV
(`start,symbol,open,high,low,close,volume`, `shared/backtest/bars.py`). Both sides read that same file and run the
same strategy: EMA(12) / EMA(26) cross on closes, long 0.01 BTC on a golden cross, flat on a death cross.

- Aether: `read_bars` (Decimal fields, checked) -> `BacktestEngine.run` with `EmaCross` (fills through the domain
  matching engine against a book made from each bar, Kraken fees, the ledger, seeded latency 50 ms + up to 50 ms).
- backtrader (the peer): `GenericCSVData` of the same file -> `Cerebro` with `bt.ind.EMA` and `bt.ind.CrossOver`,
  market orders, default broker (fills at the next bar's open), `preload` and `runonce` on (its fastest mode).

Events/s = bars / wall time of load + run, best of `--repeat`; events per CPU second too (both sides are single
threaded: on a shared, loaded machine the CPU figures are the stable ones). Target: Aether >= 5x backtrader.

backtrader is a bench-only dependency, installed outside the platform's venv on first use with
`pip install --target .aether/bench/backtrader backtrader==1.9.78.123` (pure Python, no dependencies needed for a
run without plots). nautilus_trader (Python 3.12 only) is not measured yet (docs/backtest.md).
Run: `PYTHONPATH=. .venv/bin/python bench/backtest.py [--days 365] [--repeat 1]`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.backtest.bars import Bar, read_bars, write_bars  # noqa: E402
from shared.backtest.engine import BacktestConfig, BacktestEngine  # noqa: E402
from shared.backtest.strategies.ema_cross import EmaCross  # noqa: E402
from shared.venues.instruments import venue_precision  # noqa: E402

BACKTRADER = "backtrader==1.9.78.123"
PEER_DIR = ROOT / ".aether" / "bench" / "backtrader"
MINUTE = timedelta(minutes=1)
FAST, SLOW, QUANTITY = 12, 26, Decimal("0.01")


def generate(path: Path, days: int, seed: int) -> int:
    """Write `days` of seeded 1-minute bars to `path`; returns how many."""
    rng = random.Random(seed)  # seeded bench data
    start, price = datetime(2025, 1, 1, tzinfo=UTC), 60_000.0

    def bars() -> Any:
        nonlocal price
        for index in range(days * 24 * 60):
            first = price
            price *= 1 + rng.gauss(0, 0.0008)
            high = max(first, price) * (1 + abs(rng.gauss(0, 0.0003)))
            low = min(first, price) * (1 - abs(rng.gauss(0, 0.0003)))
            o, h, lo, c = (Decimal(f"{value:.1f}") for value in (first, high, low, price))
            volume = Decimal(f"{rng.uniform(0.5, 5):.4f}")
            at = start + index * MINUTE
            yield Bar("BTC/USD", at, at + MINUTE, o, h, lo, c, volume)

    return write_bars(bars(), path)


def run_aether(path: Path) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, bars, fills) of load + run."""
    began, cpu = time.perf_counter(), time.process_time()
    bars = read_bars(path, MINUTE)
    config = BacktestConfig(specs=venue_precision("kraken").specs(), initial_balances={"USD": Decimal(1_000_000)})
    strategy = EmaCross(fast=Decimal(FAST), slow=Decimal(SLOW), quantity=QUANTITY)
    run = BacktestEngine(config, strategy).run([bars], bar_interval=MINUTE)
    return time.perf_counter() - began, time.process_time() - cpu, len(bars), len(run.fills)


def ensure_backtrader() -> None:
    """Install backtrader into the bench-only directory on first use and put it on the path."""
    if not (PEER_DIR / "backtrader").is_dir():
        command = [sys.executable, "-m", "pip", "install", "-q", "--target", str(PEER_DIR), BACKTRADER]
        subprocess.run(command, check=True)  # noqa: S603  # fixed arguments
    sys.path.insert(0, str(PEER_DIR))


def run_backtrader(path: Path) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, bars, orders) of load + run in backtrader."""
    import backtrader as bt  # type: ignore[import-not-found]  # bench-only, installed by ensure_backtrader

    class EmaCrossBt(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.cross = bt.ind.CrossOver(bt.ind.EMA(period=FAST), bt.ind.EMA(period=SLOW))
            self.orders = 0

        def next(self) -> None:
            if self.cross[0] > 0 and not self.position:
                self.buy(size=float(QUANTITY))
                self.orders += 1
            elif self.cross[0] < 0 and self.position:
                self.close()
                self.orders += 1

    began, cpu = time.perf_counter(), time.process_time()
    cerebro = bt.Cerebro(stdstats=False)
    data = bt.feeds.GenericCSVData(
        dataname=str(path),
        dtformat=lambda text: datetime.fromisoformat(text).replace(tzinfo=None),
        datetime=0,
        open=2,
        high=3,
        low=4,
        close=5,
        volume=6,
        openinterest=-1,
        timeframe=bt.TimeFrame.Minutes,
    )
    cerebro.adddata(data)
    cerebro.addstrategy(EmaCrossBt)
    cerebro.broker.setcash(1_000_000.0)
    strategy = cerebro.run(preload=True, runonce=True)[0]
    return time.perf_counter() - began, time.process_time() - cpu, len(data), strategy.orders


def main() -> None:
    """Generate the bars, time both engines on them, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    ensure_backtrader()
    PEER_DIR.parent.mkdir(parents=True, exist_ok=True)
    path = PEER_DIR.parent / f"bars-{args.days}d-{args.seed}.csv"
    if not path.exists():
        generate(path, args.days, args.seed)
    ours = min((run_aether(path) for _ in range(args.repeat)), key=lambda r: r[0])
    peer = min((run_backtrader(path) for _ in range(args.repeat)), key=lambda r: r[0])
    aether_rate, peer_rate = ours[2] / ours[0], peer[2] / peer[0]
    aether_cpu_rate, peer_cpu_rate = ours[2] / ours[1], peer[2] / peer[1]
    print(
        json.dumps(
            {
                "bench": "backtest_ema_cross_1m_bars",
                "bars": ours[2],
                "aether_events_per_s": round(aether_rate),
                "aether_events_per_cpu_s": round(aether_cpu_rate),
                "aether_seconds": round(ours[0], 2),
                "aether_fills": ours[3],
                "backtrader_events_per_s": round(peer_rate),
                "backtrader_events_per_cpu_s": round(peer_cpu_rate),
                "backtrader_seconds": round(peer[0], 2),
                "backtrader_bars": peer[2],
                "backtrader_orders": peer[3],
                "ratio": round(aether_rate / peer_rate, 2),
                "cpu_ratio": round(aether_cpu_rate / peer_cpu_rate, 2),
                "target_ratio": 5,
                "met": aether_rate >= 5 * peer_rate,
            }
        )
    )


if __name__ == "__main__":
    main()
