"""The vectorbt peer of bench/backtest.py (bars only): the same EMA cross on the same bar file, vectorised.

Runs in the bench-only Python 3.12 venv of bench/backtest_nautilus.py (`pip install 'vectorbt==1.2.*'`), started by
bench/backtest.py as a subprocess; imports nothing from Aether. vectorbt has no event loop and no order book: it
computes both EMAs over the whole close series (`vbt.MA.run(..., ewm=True)`, pandas' adjust=False EMA, the same
recursion as Aether's and nautilus' EMA), the cross signals after `slow` bars of warm-up, and
`Portfolio.from_signals` (long only, `size` per entry, fills at the next bar's open, 0.40 % fees). Its first run
compiles numba kernels, so it runs twice and reports the warm run (the cold one too).

    python bench/backtest_vectorbt.py BARS.csv    # one JSON line: seconds, cpu_seconds, cold_seconds, events, orders
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt

FAST, SLOW, SIZE, FEES = 12, 26, 0.01, 0.004


def run(path: Path) -> dict[str, Any]:
    """Load the bars and simulate once; the figures as a dict."""
    began, cpu = time.perf_counter(), time.process_time()
    frame = pd.read_csv(path, usecols=["start", "open", "close"])
    close, opens = frame["close"].to_numpy(), frame["open"].to_numpy()
    fast = vbt.MA.run(close, FAST, ewm=True).ma.to_numpy()
    slow = vbt.MA.run(close, SLOW, ewm=True).ma.to_numpy()
    above = fast > slow
    changed = np.zeros(len(close), dtype=bool)
    changed[1:] = above[1:] != above[:-1]
    changed[:SLOW] = False
    entries, exits = changed & above, changed & ~above
    # A signal at a bar's close is acted on at the next bar's open (a market order sent at the bar's end).
    entries, exits = np.roll(entries, 1), np.roll(exits, 1)
    entries[0] = exits[0] = False
    portfolio = vbt.Portfolio.from_signals(
        close, entries, exits, price=opens, size=SIZE, fees=FEES, init_cash=1_000_000.0, freq="1min"
    )
    orders = int(portfolio.orders.count())
    return {
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu,
        "events": len(close),
        "orders": orders,
    }


def main() -> None:
    """`PATH`: one JSON line of figures (the warm run, with the cold one's time)."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: backtest_vectorbt.py BARS.csv")
    cold = run(Path(sys.argv[1]))
    warm = run(Path(sys.argv[1]))
    print(json.dumps({**warm, "cold_seconds": cold["seconds"], "version": vbt.__version__}))


if __name__ == "__main__":
    main()
