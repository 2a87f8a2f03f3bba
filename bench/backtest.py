"""Benchmark: Aether's backtester against backtrader and nautilus_trader, the same EMA cross on the same files.

Two scenarios, one JSON line each (ours and every peer measured in the same run, ratios, targets met or not):

- `bars`: `--days` (default 365) of seeded 1-minute BTC/USD bars (a random walk) in a bar CSV
  (`start,symbol,open,high,low,close,volume`, `shared/backtest/bars.py`). Strategy: EMA(12) / EMA(26) cross on
  closes, long 0.01 BTC on a golden cross, flat on a death cross, after 26 bars of warm-up.
  Aether: `read_bars` -> `BacktestEngine.run` with `EmaCross` (the domain matching engine against a book made from
  each bar, Kraken fees, the ledger, seeded latency 50 ms + up to 50 ms). backtrader: `GenericCSVData` ->
  `Cerebro` with `bt.ind.EMA` / `bt.ind.CrossOver`, `preload` and `runonce` on (its fastest mode). nautilus:
  `bench/backtest_nautilus.py bars` (BarDataWrangler, 1-MINUTE-LAST-EXTERNAL bars, its ExponentialMovingAverage).
- `ticks`: `--hours` (default 24) of the SYNTHETIC market of `data/replay/source.py` (seeded random walk, a
  10-level book snapshot every second, the trades through and at the touch) in the replay CSV. Same strategy on
  1-minute bars built from the trades; orders fill against the books. Aether: `read_csv` -> `BacktestEngine` with
  `bar_interval` one minute; nautilus: TradeTick + OrderBookDepth10 in file order, bars aggregated from the trades
  (1-MINUTE-LAST-INTERNAL), an L2 book venue. backtrader has no order books: not run here.

Events/s = input events (bars; trades + snapshots) / time of load + run, best of `--repeat`; also per CPU second of
the process (every side is single threaded; on a shared, loaded machine the CPU figures are the stable ones, and the
targets are judged on them). Targets (issue 15): Aether >= 5x backtrader on bars, >= nautilus on both.

Peers are bench-only, installed outside the platform's venv on first use:
- backtrader: `pip install --target .aether/bench/backtrader backtrader==1.9.78.123` (pure Python).
- nautilus_trader needs Python >= 3.12 (the platform is 3.11): a venv at `$AETHER_BENCH_VENV312` (default
  `~/.cache/aether-bench/venv312`) made with the first `python3.12` found (PATH, then pyenv), then
  `pip install 'nautilus_trader==1.231.*'`; it runs the peer as a subprocess on the same file. `--no-nautilus`
  skips it (the line then says so); without it a missing Python 3.12 is an error, never a silent skip.
vectorbt (bars only, `--vectorbt`; `pip install 'vectorbt==1.2.*'` into the same venv): `bench/backtest_vectorbt.py`,
the same signals computed over whole arrays and `Portfolio.from_signals`; no event loop, no book, so it is listed
for scale, not as a target. Its numba kernels compile on the first run (minutes); the warm run is reported.
Run: `PYTHONPATH=. .venv/bin/python bench/backtest.py [--days 365] [--hours 24] [--scenario both] [--repeat 1]
[--vectorbt] [--no-nautilus]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.replay.source import SyntheticMarket, read_csv, write_csv  # noqa: E402
from shared.backtest.bars import Bar, read_bars, write_bars  # noqa: E402
from shared.backtest.engine import BacktestConfig, BacktestEngine  # noqa: E402
from shared.backtest.strategies.ema_cross import EmaCross  # noqa: E402
from shared.venues.instruments import venue_precision  # noqa: E402

BACKTRADER = "backtrader==1.9.78.123"
PEER_DIR = ROOT / ".aether" / "bench" / "backtrader"
NAUTILUS = "nautilus_trader==1.231.*"
NAUTILUS_VENV = Path(os.environ.get("AETHER_BENCH_VENV312", Path.home() / ".cache" / "aether-bench" / "venv312"))
NAUTILUS_PEER = ROOT / "bench" / "backtest_nautilus.py"
VECTORBT = "vectorbt==1.2.*"
VECTORBT_PEER = ROOT / "bench" / "backtest_vectorbt.py"
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


def generate_ticks(path: Path, hours: float, seed: int) -> int:
    """Write `hours` of the SYNTHETIC market (a 10-level snapshot every second, its trades) to `path`; returns rows."""
    market = SyntheticMarket(seed=seed, levels=10, snapshot_every=1)
    end = market.start_at + timedelta(hours=hours)
    return write_csv(itertools.takewhile(lambda message: message.timestamp < end, market.messages()), path)


def run_aether(path: Path, mode: str = "bars") -> tuple[float, float, int, int, float]:
    """(wall seconds, CPU seconds, events, fills, load seconds) of load + run: a bar file, or trades and books."""
    began, cpu = time.perf_counter(), time.process_time()
    strategy = EmaCross(fast=Decimal(FAST), slow=Decimal(SLOW), quantity=QUANTITY)
    specs, balances = venue_precision("kraken").specs(), {"USD": Decimal(1_000_000)}
    if mode == "bars":
        bars = read_bars(path, MINUTE)
        loaded = time.perf_counter() - began
        run = BacktestEngine(BacktestConfig(specs, balances), strategy).run([bars], bar_interval=MINUTE)
        events = len(bars)
    else:
        messages = read_csv(path)
        loaded = time.perf_counter() - began
        run = BacktestEngine(BacktestConfig(specs, balances, bar_interval=MINUTE), strategy).run([messages])
        events = len(messages)
    return time.perf_counter() - began, time.process_time() - cpu, events, len(run.fills), loaded


def _python312() -> str:
    for candidate in (shutil.which("python3.12"), *sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))):
        if candidate:
            return str(candidate)
    raise SystemExit(
        "bench/backtest.py: nautilus_trader needs Python 3.12 (none found); install it or pass --no-nautilus"
    )


def ensure_nautilus() -> Path:
    """The bench-only Python 3.12 venv with nautilus_trader, made on first use; returns its interpreter."""
    python = NAUTILUS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([_python312(), "-m", "venv", str(NAUTILUS_VENV)], check=True)  # noqa: S603  # fixed arguments
    probe = [str(python), "-c", "import nautilus_trader"]
    if subprocess.run(probe, check=False, capture_output=True).returncode != 0:  # noqa: S603  # fixed arguments, no shell
        subprocess.run([str(python), "-m", "pip", "install", "-q", NAUTILUS], check=True)  # noqa: S603  # fixed arguments, no shell
    return python


def ensure_vectorbt(python: Path) -> None:
    """vectorbt in the same bench-only venv, installed on first use."""
    probe = [str(python), "-c", "import vectorbt"]
    if subprocess.run(probe, check=False, capture_output=True).returncode != 0:  # noqa: S603  # fixed arguments, no shell
        subprocess.run([str(python), "-m", "pip", "install", "-q", VECTORBT], check=True)  # noqa: S603  # fixed arguments, no shell


def run_peer(python: Path, script: Path, *arguments: str) -> dict[str, Any]:
    """A peer's figures on the same file (a subprocess under the bench-only Python 3.12)."""
    command = [str(python), "-W", "ignore", str(script), *arguments]
    done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603  # fixed arguments
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


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


def _rates(events: int, wall: float, cpu: float) -> dict[str, float]:
    return {"events_per_s": round(events / wall), "events_per_cpu_s": round(events / cpu), "seconds": round(wall, 2)}


def scenario(mode: str, path: Path, repeat: int, python: Path | None, vectorbt: bool = False) -> dict[str, Any]:
    """Time Aether and the peers on one file; the JSON line's fields."""
    ours = min((run_aether(path, mode) for _ in range(repeat)), key=lambda r: r[1])
    line: dict[str, Any] = {"bench": f"backtest_ema_cross_{mode}", "events": ours[2], "file": path.name}
    line["aether"] = {**_rates(ours[2], ours[0], ours[1]), "load_seconds": round(ours[4], 2), "fills": ours[3]}
    cpu_rate = ours[2] / ours[1]
    if mode == "bars":
        peer = min((run_backtrader(path) for _ in range(repeat)), key=lambda r: r[1])
        line["backtrader"] = {**_rates(peer[2], peer[0], peer[1]), "orders": peer[3]}
        line["ratio_backtrader"] = round(cpu_rate / (peer[2] / peer[1]), 2)
        line["ratio_backtrader_wall"] = round((ours[2] / ours[0]) / (peer[2] / peer[0]), 2)
        line["met_5x_backtrader"] = line["ratio_backtrader"] >= 5
    if vectorbt and python is not None and mode == "bars":
        vbt = run_peer(python, VECTORBT_PEER, str(path))
        line["vectorbt"] = {
            **_rates(vbt["events"], vbt["seconds"], vbt["cpu_seconds"]),
            "cold_seconds": round(vbt["cold_seconds"], 2),
            "orders": vbt["orders"],
            "version": vbt["version"],
        }
        line["ratio_vectorbt"] = round(cpu_rate / (vbt["events"] / vbt["cpu_seconds"]), 3)
    if python is None:
        line["nautilus"] = "not run (--no-nautilus)"
        return line
    runs = [run_peer(python, NAUTILUS_PEER, mode, str(path)) for _ in range(repeat)]
    best = min(runs, key=lambda r: float(r["cpu_seconds"]))
    line["nautilus"] = {
        **_rates(best["events"], best["seconds"], best["cpu_seconds"]),
        "load_seconds": round(best["load_seconds"], 2),
        "orders": best["orders"],
        "fills": best["fills"],
        "version": best["version"],
    }
    line["ratio_nautilus"] = round(cpu_rate / (best["events"] / best["cpu_seconds"]), 2)
    line["ratio_nautilus_wall"] = round((ours[2] / ours[0]) / (best["events"] / best["seconds"]), 2)
    line["met_nautilus"] = line["ratio_nautilus"] >= 1
    # Every engine ran the same strategy on the same data: the same number of orders (Aether: each order filled).
    counts = {ours[3]} | {peer["orders"] for name, peer in line.items() if isinstance(peer, dict) and name != "aether"}
    line["same_orders"] = len(counts) == 1
    return line


def main() -> None:
    """Generate the files, time every engine on them, print one JSON line per scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="bars scenario: days of 1-minute bars")
    parser.add_argument("--hours", type=float, default=24, help="ticks scenario: hours of trades and snapshots")
    parser.add_argument("--scenario", choices=("bars", "ticks", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-nautilus", action="store_true", help="skip the Python 3.12 peers")
    parser.add_argument("--vectorbt", action="store_true", help="also vectorbt on bars (its numba compile: minutes)")
    args = parser.parse_args()
    python = None if args.no_nautilus else ensure_nautilus()
    if args.vectorbt and python is not None:
        ensure_vectorbt(python)
    ensure_backtrader()
    files = PEER_DIR.parent
    files.mkdir(parents=True, exist_ok=True)
    if args.scenario in ("bars", "both"):
        path = files / f"bars-{args.days}d-{args.seed}.csv"
        if not path.exists():
            generate(path, args.days, args.seed)
        print(json.dumps({**scenario("bars", path, args.repeat, python, args.vectorbt), "days": args.days}))
    if args.scenario in ("ticks", "both"):
        path = files / f"ticks-{args.hours:g}h-{args.seed}.csv"
        if not path.exists():
            generate_ticks(path, args.hours, args.seed)
        print(json.dumps({**scenario("ticks", path, args.repeat, python), "hours": args.hours}))


if __name__ == "__main__":
    main()
