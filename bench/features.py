"""Benchmark: the whole feature set over 1,000,000 trades, the polars batch engine against plain pandas.

Workload: a seeded SYNTHETIC market (numpy random walk, not real data) of three symbols: `--trades` trades
(default 1,000,000; AETHER_BENCH_TRADES overrides, e.g. 50000 for a quick run) and one book state per symbol
per second, already in the exact row form of `data.features.definitions` (prices on a 0.1 tick, quantities on a
0.0001 lot). Both implementations get the same frames and compute every feature of docs/features.md for every
1-minute bar; rows/s = (trades + book states) / wall seconds of the computation alone (frame building excluded),
best of `--repeat` runs. The pandas peer is a straightforward pandas implementation of the same definitions
(groupby sums, as-of book by forward fill, rolling sums); it is not required to match bit for bit (pandas' rolling
sums are running sums), so the line also reports the largest relative difference between the two and how
many values only one of them has.

pandas is not a runtime dependency: it comes with the `ml` extra (`pip install -e '.[ml]'`).
Prints one JSON line. Needs no stack.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from data.features import batch
from data.features.definitions import (
    BAR_SECONDS,
    BAR_US,
    DEPTH_LEVELS,
    FEATURES,
    KYLE_WINDOW,
    NOTIONAL_SCALE,
    QTY_SCALE,
    RV_HORIZONS,
)

SYMBOLS = ("BTC/USD", "ETH/USD", "USDT/USD")
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
TICK_PER_UNIT = 10  # prices on a 0.1 grid
LOT = 10_000  # 0.0001 in QTY_SCALE units


def synthetic(trades: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """SYNTHETIC trade and book-state frames (seeded), trades spread evenly over the symbols."""
    rng = np.random.default_rng(seed)
    per_symbol = trades // len(SYMBOLS)
    trade_frames, book_frames = [], []
    for index, symbol in enumerate(SYMBOLS):
        seconds = max(2, int(per_symbol / 1.5))  # about 1.5 trades per second
        start_ticks = (60_000, 3_000, 10)[index] * TICK_PER_UNIT
        steps = rng.normal(0, max(1.0, start_ticks * 0.0003), seconds).round().astype(np.int64)
        mid_ticks = np.maximum(start_ticks + np.cumsum(steps), 10)
        spread = rng.integers(1, 4, seconds)
        bid_ticks = mid_ticks - spread // 2 - 1
        ask_ticks = bid_ticks + spread
        book_ts = START_US + np.arange(seconds, dtype=np.int64) * 1_000_000
        book_frames.append(
            pl.DataFrame(
                {
                    "venue": "synthetic",
                    "symbol": symbol,
                    "ts_us": book_ts,
                    "bid": bid_ticks / TICK_PER_UNIT,
                    "ask": ask_ticks / TICK_PER_UNIT,
                    "bid_qty": rng.integers(1, 500, seconds) * LOT,
                    "ask_qty": rng.integers(1, 500, seconds) * LOT,
                    "bid_depth": rng.integers(500, 5_000, seconds) * LOT,
                    "ask_depth": rng.integers(500, 5_000, seconds) * LOT,
                }
            )
        )
        second = np.sort(rng.integers(0, seconds, per_symbol))
        buy = rng.random(per_symbol) < 0.5
        price_ticks = np.where(buy, ask_ticks[second], bid_ticks[second])
        qty = rng.integers(1, 2_000, per_symbol) * LOT
        trade_frames.append(
            pl.DataFrame(
                {
                    "venue": "synthetic",
                    "symbol": symbol,
                    "ts_us": START_US + second * 1_000_000 + rng.integers(0, 1_000_000, per_symbol),
                    "trade_id": [f"{symbol[:3]}-{n}" for n in range(per_symbol)],
                    "price": price_ticks / TICK_PER_UNIT,
                    "qty": qty,
                    # price * qty exactly, in NOTIONAL_SCALE units: ticks/10 * qty/1e8 * 1e6.
                    "notional": price_ticks * qty // (TICK_PER_UNIT * QTY_SCALE // NOTIONAL_SCALE),
                    "buy": buy,
                }
            )
        )
    trades_frame = pl.concat(trade_frames).sort("ts_us").cast(batch.TRADE_SCHEMA)  # type: ignore[arg-type]
    books_frame = pl.concat(book_frames).sort("ts_us").cast(batch.BOOK_SCHEMA)  # type: ignore[arg-type]
    return trades_frame, books_frame


def pandas_features(trades: pd.DataFrame, books: pd.DataFrame) -> pd.DataFrame:
    """The feature set of docs/features.md in plain pandas (the peer)."""
    keys = ["venue", "symbol"]
    trades = trades.sort_values([*keys, "ts_us", "trade_id"])
    trades["bar_us"] = trades["ts_us"] - trades["ts_us"] % BAR_US
    trades["buy_qty"] = trades["qty"].where(trades["buy"], 0)
    trades["sell_qty"] = trades["qty"].where(~trades["buy"], 0)
    trade_bars = trades.groupby([*keys, "bar_us"], sort=False).agg(
        trades=("qty", "size"),
        buy_qty=("buy_qty", "sum"),
        sell_qty=("sell_qty", "sum"),
        notional=("notional", "sum"),
        close=("price", "last"),
    )
    books = books.sort_values([*keys, "ts_us"], kind="stable")
    previous = books.groupby(keys, sort=False)[["bid", "ask", "bid_qty", "ask_qty"]].shift(1)
    e = (
        books["bid_qty"].where(books["bid"] >= previous["bid"], 0)
        - previous["bid_qty"].where(books["bid"] <= previous["bid"], 0)
        - books["ask_qty"].where(books["ask"] <= previous["ask"], 0)
        + previous["ask_qty"].where(books["ask"] >= previous["ask"], 0)
    )
    books = books.assign(e=e.fillna(0).astype("int64"), bar_us=books["ts_us"] - books["ts_us"] % BAR_US)
    book_bars = books.groupby([*keys, "bar_us"], sort=False).agg(
        ofi=("e", "sum"), bid=("bid", "last"), ask=("ask", "last"), bid_depth=("bid_depth", "last"),
        ask_depth=("ask_depth", "last"),
    )  # fmt: skip
    bars = trade_bars.join(book_bars, how="outer")
    frames = []
    for key, group in bars.groupby(level=[0, 1], sort=True):
        group = group.droplevel([0, 1])
        grid = np.arange(group.index.min(), group.index.max() + BAR_US, BAR_US)
        group = group.reindex(grid)
        group[["trades", "buy_qty", "sell_qty", "notional", "ofi"]] = group[
            ["trades", "buy_qty", "sell_qty", "notional", "ofi"]
        ].fillna(0)
        group[["bid", "ask", "bid_depth", "ask_depth"]] = group[["bid", "ask", "bid_depth", "ask_depth"]].ffill()
        frames.append(_pandas_bar_features(group).assign(venue=key[0], symbol=key[1]))
    return pd.concat(frames)


def _pandas_bar_features(bars: pd.DataFrame) -> pd.DataFrame:
    mid = (bars["bid"] + bars["ask"]) / 2
    volume_units = bars["buy_qty"] + bars["sell_qty"]
    notional = bars["notional"].astype(float)
    vwap = (notional * (QTY_SCALE / NOTIONAL_SCALE) / volume_units).where(volume_units != 0)
    signed = (bars["buy_qty"] - bars["sell_qty"]) / QTY_SCALE
    ret = mid / mid.shift(1) - 1
    depth_total = bars["bid_depth"] + bars["ask_depth"]
    out = pd.DataFrame(
        {
            "mid": mid,
            "spread": bars["ask"] - bars["bid"],
            "spread_bps": (bars["ask"] - bars["bid"]) / mid * 10_000,
            "depth_imbalance": ((bars["bid_depth"] - bars["ask_depth"]) / depth_total).where(depth_total != 0),
            "ofi": bars["ofi"] / QTY_SCALE,
            "signed_volume": signed,
            "volume": volume_units / QTY_SCALE,
            "trade_intensity": bars["trades"] / BAR_SECONDS,
            "vwap": vwap,
            "vwap_deviation": (bars["close"] - vwap) / vwap,
        },
        index=bars.index,
    )
    squared = ret * ret
    for horizon in RV_HORIZONS:
        out[f"rv_{horizon}"] = np.sqrt(squared.rolling(horizon).sum())
    dmid = mid - mid.shift(1)
    window = signed.rolling(KYLE_WINDOW)
    n = float(KYLE_WINDOW)
    sx, sy = window.sum(), dmid.rolling(KYLE_WINDOW).sum()
    sxx, sxy = (signed * signed).rolling(KYLE_WINDOW).sum(), (signed * dmid).rolling(KYLE_WINDOW).sum()
    denominator = n * sxx - sx * sx
    out["kyle_lambda"] = ((n * sxy - sx * sy) / denominator).where(denominator != 0)
    dollar = notional / NOTIONAL_SCALE
    out["amihud"] = (ret.abs() / dollar).where(dollar != 0)
    out.index.name = "bar_us"
    return out.reset_index()


def _best_of(repeat: int, work: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    """Run both implementations on the same frames and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=int(os.environ.get("AETHER_BENCH_TRADES", "1000000")))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()

    trades, books = synthetic(args.trades, args.seed)
    # Column by column (polars' to_pandas needs pyarrow, which nothing else here does).
    trades_pd = pd.DataFrame({name: trades[name].to_numpy() for name in trades.columns})
    books_pd = pd.DataFrame({name: books[name].to_numpy() for name in books.columns})
    rows = trades.height + books.height
    polars_s, from_polars = _best_of(args.repeat, lambda: batch.compute(trades, books))
    pandas_s, from_pandas = _best_of(args.repeat, lambda: pandas_features(trades_pd.copy(), books_pd.copy()))

    joined = from_polars.join(
        pl.DataFrame({name: from_pandas[name].to_numpy() for name in ["venue", "symbol", "bar_us", *FEATURES]}),
        on=["venue", "symbol", "bar_us"],
        suffix="_pd",
    )
    worst, null_mismatches = 0.0, 0
    for name in FEATURES:
        a, b = joined[name].to_numpy(), joined[f"{name}_pd"].to_numpy()
        both = ~(np.isnan(a) | np.isnan(b))
        null_mismatches += int((np.isnan(a) != np.isnan(b)).sum())
        scale = np.maximum(np.abs(a[both]), 1e-12)
        worst = max(worst, float(np.max(np.abs(a[both] - b[both]) / scale, initial=0.0)))
    print(
        json.dumps(
            {
                "bench": "features",
                "workload": "synthetic",
                "trades": trades.height,
                "book_states": books.height,
                "bars": from_polars.height,
                "features": len(FEATURES),
                "depth_levels": DEPTH_LEVELS,
                "polars_s": round(polars_s, 4),
                "pandas_s": round(pandas_s, 4),
                "polars_rows_per_s": round(rows / polars_s),
                "pandas_rows_per_s": round(rows / pandas_s),
                "speedup": round(pandas_s / polars_s, 2),
                "target_speedup": 3.0,
                "bars_compared": joined.height,
                "max_relative_difference": worst,
                # Values one side has and the other not (pandas' running rolling sums can dip below 0: sqrt NaN).
                "null_mismatches": null_mismatches,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
